"""What Ray costs ``foveal compare``: a 4-run comparison (RAM and PS-NOGS, seeds 0 and 1, no inputs to
make but the stand-in NOGS file, no sampled evaluation) in one process and as tasks of a 2-worker local
Ray instance (``--workers 2``), each a fresh ``foveal compare`` process, interleaved (A B B A ...) so that
both see the same load; then Ray's own cost per task: the round trip of a no-op task, bare and through
:func:`foveal.cluster.run_on_ray`, and a local instance's start.

    .venv/bin/python benchmarks/ray/compare_overhead.py                     # runs of ~60-90 s here
    .venv/bin/python benchmarks/ray/compare_overhead.py --iterations 200 --rounds 1   # a smoke test

Writes benchmarks/ray/results.json and benchmarks/ray/report.md (the command at the top). The runs are a
tiny RAM on 16x16 images (one torch thread each, as a Ray task has): their length is set by
``--iterations``, not by the model, so the fixed costs (process start, imports, data, Ray) are what shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def make_images(root: Path) -> None:
    """4 classes x 20 grey 16x16 images: a bright 4x4 square in the quadrant of the class."""
    rng = np.random.default_rng(0)
    for label in range(4):
        (root / f"q{label}").mkdir(parents=True, exist_ok=True)
        for i in range(20):
            image = rng.integers(0, 25, (16, 16), dtype=np.uint8)
            r, c = divmod(label, 2)
            dr, dc = rng.integers(0, 4, 2)
            image[8 * r + dr:8 * r + dr + 4, 8 * c + dc:8 * c + dc + 4] = 255
            Image.fromarray(image, mode="L").save(root / f"q{label}" / f"{i:02d}.png")


def write_config(path: Path, images: Path, iterations: int) -> Path:
    run = {"data": {"name": "imagefolder", "root": str(images), "grayscale": True},
           "model": {"name": "ram-grid", "glimpse_size": 4, "grid_stride": 4, "hidden_size": 16, "glimpse_hidden": 8,
                     "location_hidden": 8, "feature_size": 16},
           "algorithm": {"name": "reinforce", "num_glimpses": 2},
           "train": {"iterations": iterations, "batch_size": 8, "lr": 0.01, "val_every": max(1, iterations // 10),
                     "tensorboard": False},
           "evaluate": {"examples": 4, "figures": False, "batch_size": 16}}
    config = {"run": run, "seeds": [0, 1], "evaluate_repeats": 0,
              "methods": [{"name": "RAM", "kind": "ram"}, {"name": "PS-NOGS", "kind": "ps", "sequences": "nogs"}],
              "inputs": {"stand_ins": True, "num_sequences": 8}}
    path.write_text(yaml.safe_dump(config))
    return path


RUNS = [f"{m}/seed-{s}" for m in ("ram", "ps-nogs") for s in (0, 1)]


def compare(config: Path, out: Path, extra: list[str]) -> dict:
    """One ``foveal compare`` process (training only, no report): its wall time and the runs' own times."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys; from foveal.cli.compare import _log; from foveal.recipes.compare.config import load_compare_config; "
            "from foveal.recipes.compare.run import run_comparison; "
            f"run_comparison(load_compare_config({str(config)!r}), {str(out)!r}, log=_log, **{extra!r})")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    runs = {}
    for run in RUNS:
        results = json.loads((out / "runs" / run / "results.json").read_text())
        runs[run] = {"training_s": round(results["training"]["wall_time_s"], 2),
                     "test_accuracy": results["test_accuracy"],
                     "metrics_csv": (out / "runs" / run / "metrics.csv").read_text()}
    return {"wall_s": round(wall, 2), "load_1min_before": round(load, 2), "load_1min_after": round(os.getloadavg()[0], 2),
            "runs": runs, "log": done.stderr.strip().splitlines()}


def noop() -> None:
    return None


def ray_costs(n: int) -> dict:
    """A local instance's start, and the round trip of a no-op task, bare and as a foveal.cluster task."""
    import ray

    from foveal.cluster import Task, run_on_ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(HERE), str(SRC)])}})
    up = time.perf_counter() - start
    try:
        remote = ray.remote(num_cpus=1)(noop)
        ray.get([remote.remote() for _ in range(4)])  # workers started and warm
        times = []
        for _ in range(n):
            t = time.perf_counter()
            ray.get(remote.remote())
            times.append(time.perf_counter() - t)
        # a chain of n dependent foveal.cluster tasks: what a comparison's graph pays per step
        chain = [Task(f"t{k}", noop, after=(f"t{k - 1}",) if k else ()) for k in range(n)]
        t = time.perf_counter()
        results = run_on_ray(chain)
        chain_s = time.perf_counter() - t
        assert all(r.ok for r in results.values())
    finally:
        start = time.perf_counter()
        ray.shutdown()
        down = time.perf_counter() - start
    return {"local_instance_start_s": round(up, 2), "shutdown_s": round(down, 2), "tasks": n,
            "noop_round_trip_ms": {"median": round(1000 * statistics.median(times), 2),
                                   "p90": round(1000 * float(np.percentile(times, 90)), 2)},
            "cluster_chain_ms_per_task": round(1000 * chain_s / n, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000, help="per run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="A B B A ... pairs (default: %(default)s)")
    parser.add_argument("--noop-tasks", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("/tmp/foveal-ray-compare-bench"))
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *sys.argv[1:]])
    make_images(args.work / "images")
    config = write_config(args.work / "compare.yaml", args.work / "images", args.iterations)
    variants = {"one process": {}, "ray, 2 workers": {"workers": 2}}
    order = []
    for r in range(args.rounds):
        names = list(variants) if r % 2 == 0 else list(variants)[::-1]
        order += names
    measured: dict[str, list[dict]] = {name: [] for name in variants}
    for k, name in enumerate(order):
        out = args.work / f"out-{k}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        result = compare(config, out, dict(variants[name]))
        measured[name].append(result)
        print(f"{name}: {result['wall_s']:.1f} s (load {result['load_1min_before']} -> {result['load_1min_after']})",
              file=sys.stderr, flush=True)
    reference = measured["one process"][0]["runs"]
    identical = all(m["runs"][run]["metrics_csv"] == reference[run]["metrics_csv"] for ms in measured.values()
                    for m in ms for run in RUNS)
    costs = ray_costs(args.noop_tasks)
    summary = {name: {"wall_s": [m["wall_s"] for m in ms], "wall_s_mean": round(statistics.mean(m["wall_s"] for m in ms), 2),
                      "sum_of_run_training_s_mean": round(statistics.mean(sum(r["training_s"] for r in m["runs"].values())
                                                                          for m in ms), 2),
                      "loads": [(m["load_1min_before"], m["load_1min_after"]) for m in ms]}
               for name, ms in measured.items()}
    results = {"command": command, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                               "platform": platform.platform()},
               "setting": {"runs": RUNS, "iterations": args.iterations, "rounds": args.rounds, "order": order},
               "variants": summary, "identical_metrics_csv": identical, "ray": costs,
               "runs": {name: [{run: {k: v for k, v in r.items() if k != "metrics_csv"} for run, r in m["runs"].items()}
                               for m in ms] for name, ms in measured.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "report.md").write_text(report(results))
    print(report(results))


def report(r: dict) -> str:
    one, two = r["variants"]["one process"], r["variants"]["ray, 2 workers"]
    ray = r["ray"]
    lines = [f"# foveal compare: one process vs a 2-worker local Ray instance", "", "```", r["command"], "```", "",
             f"{r['machine']['cpus']} CPUs; {len(r['setting']['runs'])} runs of {r['setting']['iterations']} iterations "
             f"(tiny RAM / PS-NOGS, one torch thread each); order {', '.join(r['setting']['order'])}.", "",
             "| variant | wall time (s), each | mean | sum of the runs' training (s) | 1-min load before -> after |",
             "|---|---|---|---|---|"]
    for name, v in (("one process", one), ("ray, 2 workers", two)):
        loads = "; ".join(f"{a} -> {b}" for a, b in v["loads"])
        lines.append(f"| {name} | {', '.join(f'{w:.1f}' for w in v['wall_s'])} | {v['wall_s_mean']:.1f} | "
                     f"{v['sum_of_run_training_s_mean']:.1f} | {loads} |")
    lines += ["", f"Speed-up of the wall time: {one['wall_s_mean'] / two['wall_s_mean']:.2f}x. "
              f"metrics.csv of every run identical across all variants and rounds: {r['identical_metrics_csv']}.", "",
              "Ray's own cost (local instance, 2 CPUs):", "",
              f"- start of a local instance: {ray['local_instance_start_s']} s, shutdown {ray['shutdown_s']} s",
              f"- round trip of a no-op task (warm workers, {ray['tasks']} one after the other): median "
              f"{ray['noop_round_trip_ms']['median']} ms, p90 {ray['noop_round_trip_ms']['p90']} ms",
              f"- a chain of {ray['tasks']} dependent no-op foveal.cluster tasks: {ray['cluster_chain_ms_per_task']} ms per task",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
