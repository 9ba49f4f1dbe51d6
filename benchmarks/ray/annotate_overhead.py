"""Wall time of one annotation: one process against a local Ray instance with 2 workers (foveal annotate --ray).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ray/annotate_overhead.py                 # the reported run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ray/annotate_overhead.py --images 8 --repeats 1   # a try

Setting (made here, so that the run needs no trained files): the first ``--images`` images of mnist5k's test
split (28x28), a posterior CNN ``posterior-cnn`` (widths 32, 64, strides 2, 2; random weights of seed 0: a
trained one costs the same per forward), an image bank of mnist5k's train split (+ mirror images), 8 px
glimpses on the stride-2 grid (11 x 11 = 121 cells), T = 6 glimpses, 64 completions per step from 1000
proposals, 8 PCA components, chunks of 4 images (16 chunks), one torch thread per process / per Ray task:
about 2 s per image on one free core of this machine.

Both variants are the CLI as a user runs it, each in a fresh output folder, in turns (one, ray, one, ray,
...), so that a change of load on the machine hits both alike; each run's result must be byte-identical to
the first one-process result. Ray's time includes starting the local instance and its worker processes.
The load average (1 min) is recorded before and after each run.

Writes benchmarks/ray/annotate.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SETTINGS = ["--dataset", "mnist5k", "--split", "test", "--glimpse-size", "8", "--grid-stride", "2",
            "--num-glimpses", "6", "--completions", "64", "--proposals", "1000", "--pca-components", "8",
            "--chunk-size", "4", "--seed", "0", "--threads", "1", "--quiet"]


def make_inputs(work: Path) -> tuple[Path, Path]:
    """The posterior checkpoint prefix and the bank (made once, kept in ``work``)."""
    from foveal.boed.bank import ImageBank
    from foveal.checkpoint import save_checkpoint
    from foveal.data import build_dataset
    from foveal.models import create_model, model_spec

    work.mkdir(parents=True, exist_ok=True)
    posterior, bank = work / "posterior", work / "bank.npy"
    if not bank.with_suffix(".json").exists():
        ImageBank.build(build_dataset("mnist5k", "train"), bank, flips=True, source="mnist5k/train")
    if not (work / "posterior.json").exists() and not list(work.glob("posterior*.safetensors")):
        torch.manual_seed(0)
        net = create_model("posterior-cnn", in_channels=1, num_classes=10, image_size=(28, 28), widths=(32, 64),
                           strides=(2, 2))
        save_checkpoint(posterior, model=net, info={"model": model_spec(net)}, rng=False)
    return posterior, bank


def run(variant: str, out: Path, posterior: Path, bank: Path, images: int) -> dict:
    command = [sys.executable, "-m", "foveal", "annotate", *SETTINGS, "--count", str(images),
               "--posterior", str(posterior), "--bank", str(bank), "--out", str(out)]
    if variant == "ray-2-workers":
        command += ["--ray", "--workers", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src"), "RAY_AUTH_MODE": "disabled"}
    load_before = os.getloadavg()[0]
    tic = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - tic
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    timing = json.loads((out / "sequences.json").read_text())["provenance"]["timing"]
    return {"variant": variant, "wall_s": round(seconds, 2), "compute_s": round(timing["seconds"], 2),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "tensors": (out / "sequences.safetensors").read_bytes()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, in turns")
    parser.add_argument("--work", type=Path, default=Path("/tmp/foveal-ray-annotate-bench"))
    parser.add_argument("--out", type=Path, default=HERE / "annotate")
    parser.add_argument("--note", default="", help="what else ran on the machine (kept in the record and report)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json (and --note)")
    args = parser.parse_args()
    if args.report_only:
        record = json.loads(args.out.with_suffix(".json").read_text())
        record["note"] = args.note or record.get("note", "")
        args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(report(record))
        return

    posterior, bank = make_inputs(args.work)
    rows, reference = [], None
    for r in range(args.repeats):
        for variant in ("one-process", "ray-2-workers"):
            out = args.work / f"{variant}-{r}"
            shutil.rmtree(out, ignore_errors=True)
            row = run(variant, out, posterior, bank, args.images)
            tensors = row.pop("tensors")
            reference = reference or tensors
            row["identical_to_one_process"] = tensors == reference
            rows.append({"repeat": r, **row})
            print(json.dumps(rows[-1]), flush=True)

    def mean(variant: str, key: str) -> float:
        values = [row[key] for row in rows if row["variant"] == variant]
        return round(sum(values) / len(values), 2)

    summary = {v: {"wall_s": mean(v, "wall_s"), "compute_s": mean(v, "compute_s")}
               for v in ("one-process", "ray-2-workers")}
    speed_up = summary["one-process"]["wall_s"] / summary["ray-2-workers"]["wall_s"]
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ray/annotate_overhead.py" + (
        f" --images {args.images}" if args.images != 64 else "") + (
        f" --repeats {args.repeats}" if args.repeats != 2 else "") + (
        f" --out {os.path.relpath(args.out)}" if args.out.resolve() != (HERE / "annotate").resolve() else "")
    record = {"command": command, "images": args.images, "repeats": args.repeats, "settings": SETTINGS,
              "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "ray": _ray_version(), "runs": rows, "mean": summary,
              "wall_speed_up": round(speed_up, 2), "note": args.note}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(report(record))
    print(f"wrote {args.out.with_suffix('.md')} and .json")


def _ray_version() -> str:
    try:
        import ray

        return ray.__version__
    except ImportError:
        return "not installed"


def report(record: dict) -> str:
    rows = "\n".join(f"| {r['repeat']} | {r['variant']} | {r['wall_s']:.1f} | {r['compute_s']:.1f} | "
                     f"{r['load_before']:.1f} -> {r['load_after']:.1f} | {'yes' if r['identical_to_one_process'] else 'NO'} |"
                     for r in record["runs"])
    one, ray = record["mean"]["one-process"], record["mean"]["ray-2-workers"]
    return f"""# foveal annotate: one process vs a local Ray instance with 2 workers

```
{record['command']}
```

{record['images']} images of mnist5k/test, {' '.join(record['settings'])} (benchmarks/ray/annotate_overhead.py
says what each means), on {record['cpus']} CPUs, torch {record['torch']}, ray {record['ray']}; the variants ran in
turns, {record['repeats']} times each. Wall time is the whole command (Ray's includes starting the local instance
and its workers); compute time is the sum of the chunks' own seconds plus the first glimpse (what the result's
provenance records).

| repeat | variant | wall (s) | compute (s) | load (1 min) | result identical |
| --- | --- | --- | --- | --- | --- |
{rows}

Means: one process {one['wall_s']:.1f} s wall ({one['compute_s']:.1f} s compute); Ray, 2 workers
{ray['wall_s']:.1f} s wall ({ray['compute_s']:.1f} s compute): {record['wall_speed_up']:.2f}x the one-process speed.
""" + (f"\n{record['note']}\n" if record.get("note") else "")


if __name__ == "__main__":
    main()
