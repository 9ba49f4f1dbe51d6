"""Retina speed: batched gather (foveal.retina.extract_glimpses) vs a per-sample Python loop.

    .venv/bin/python benchmarks/retina/retina.py            # writes benchmarks/retina/retina.{json,png}

Setting of the issue: 60x60 images, 12 px glimpses, 3 scales; batch 128 (and 32, 512 for shape).
Both implementations give exactly equal patches (checked here and in tests/test_retina.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from foveal.retina import extract_glimpses, extract_glimpses_loop


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--report-only", action="store_true", help="time nothing: remake retina.{md,png} from retina.json")
    args = ap.parse_args()
    if args.report_only:
        report(json.loads((args.out / "retina.json").read_text()), args.out)
        return
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in (32, 128, 512):
        images = torch.rand(batch, 1, 60, 60, generator=gen)
        locations = torch.rand(batch, 2, generator=gen) * 2 - 1
        assert torch.equal(extract_glimpses(images, locations, 12, 3), extract_glimpses_loop(images, locations, 12, 3))
        fast = best_ms(lambda: extract_glimpses(images, locations, 12, 3), 30)
        slow = best_ms(lambda: extract_glimpses_loop(images, locations, 12, 3), 5)
        rows += [{"label": f"per-sample loop, batch {batch}", "batch_size": batch, "ms_per_batch": slow},
                 {"label": f"batched gather, batch {batch}", "batch_size": batch, "ms_per_batch": fast}]
        print(f"batch {batch:4d}: loop {slow:8.2f} ms  batched {fast:7.2f} ms  speed-up {slow / fast:5.1f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"setting": "60x60x1 images, 12 px glimpses, 3 scales (factor 2), best of repeats",
            "threads": args.threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "command": " ".join([".venv/bin/python", *sys.argv])}
    data = {"meta": meta, "results": rows}
    (args.out / "retina.json").write_text(json.dumps(data, indent=2))
    report(data, args.out)


def report(data: dict, out: Path) -> None:
    """retina.md (the table) and retina.png (batch 128) from what retina.json holds."""
    from foveal.evaluation.plots import plot_speedup

    meta, rows = data["meta"], data["results"]
    lines = ["# Retina: batched gather vs a per-sample loop", "",
             f"{meta['setting']}; {meta['threads']} thread(s), torch {meta['torch']}, {meta['machine']}. "
             "Both give exactly equal patches.", "",
             "| batch | per-sample loop, ms | batched gather, ms | speed-up |", "|---|---|---|---|"]
    for batch in sorted({r["batch_size"] for r in rows}):
        loop = next(r["ms_per_batch"] for r in rows if r["batch_size"] == batch and r["label"].startswith("per-sample"))
        fast = next(r["ms_per_batch"] for r in rows if r["batch_size"] == batch and r["label"].startswith("batched"))
        lines.append(f"| {batch} | {loop:.2f} | {fast:.2f} | {loop / fast:.1f}x |")
    lines += ["", f"Command: `{meta.get('command', 'not recorded')}` (`make bench` runs it).", "",
              "This file and `retina.png` are remade from `retina.json` by "
              "`.venv/bin/python benchmarks/retina/retina.py --report-only`."]
    (out / "retina.md").write_text("\n".join(lines) + "\n")
    at128 = [r for r in rows if r["batch_size"] == 128]
    print("figure:", plot_speedup(at128, out / "retina.png"))


if __name__ == "__main__":
    main()
