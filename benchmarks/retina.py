"""Retina speed: batched gather (foveal.retina.extract_glimpses) vs a per-sample Python loop.

    .venv/bin/python benchmarks/retina.py            # writes benchmarks/results/retina.{json,png}

Setting of the issue: 60x60 images, 12 px glimpses, 3 scales; batch 128 (and 32, 512 for shape).
Both implementations give exactly equal patches (checked here and in tests/test_retina.py).
"""

from __future__ import annotations

import argparse
import json
import platform
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
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
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
            "threads": args.threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    (args.out / "retina.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    from foveal.evaluation.plots import plot_speedup

    at128 = [r for r in rows if r["batch_size"] == 128]
    print("figure:", plot_speedup(at128, args.out / "retina.png"))


if __name__ == "__main__":
    main()
