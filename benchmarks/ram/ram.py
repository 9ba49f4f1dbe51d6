"""RAM vs the same network with random glimpse locations, on Fashion-MNIST (28x28) and on 60x60
cluttered Fashion-MNIST: test error, iterations/s, wall time, for each seed.

    .venv/bin/python benchmarks/ram/ram.py                          # both settings, seeds 0 1 2
    .venv/bin/python benchmarks/ram/ram.py --settings fashion --seeds 0 --iterations 2000

Each run is an ordinary `foveal train` run folder under --runs (killed runs resume where they
stopped); the table goes to benchmarks/ram/ram.{md,json}. Settings:

- fashion:   config ram-fashion-mnist (6 glimpses, 8x8, 1 scale)
- cluttered: config ram-cluttered-fashion-mnist (6 glimpses, 12x12, 3 scales, 4 clutter pieces)
- location std: 0.05 on 28x28, 0.2 on cluttered 60x60 (0.05 there did not beat random locations
  after 4,000 iterations; 0.2 and 0.3 did, by 3.5 points)
- policy "learned" = REINFORCE (test: greedy = mean of the Gaussian policy);
  "random" = uniform random locations in training and test (the control).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from foveal.config import apply_overrides, load_config
from foveal.recipes.run import train_run
from foveal.runtime import speed_up_allocator

SETTINGS = {"fashion": "ram-fashion-mnist", "cluttered": "ram-cluttered-fashion-mnist"}
POLICIES = {"learned": [], "random": ["algorithm.train_policy=random", "algorithm.eval_policy=random"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, help="override train.iterations")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-ram"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--threads", type=int, help="torch threads (1 when running two benchmarks side by side)")
    ap.add_argument("--tag", default="ram", help="name of the result files: benchmarks/ram/<tag>.{md,json}")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: tabulate the finished runs' results.json (e.g. after running the "
                         "policies as two processes side by side)")
    ap.add_argument("--from-json", action="store_true",
                    help="train and read nothing: remake <tag>.md from <tag>.json (the run folders may be gone)")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = ap.parse_args()
    if args.from_json:
        report = json.loads((args.out / f"{args.tag}.json").read_text())
        (args.out / f"{args.tag}.md").write_text(markdown(report, args.tag))
        figure(report["runs"], args.out / f"{args.tag}.png")
        return
    speed_up_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for setting in args.settings:
        for policy in args.policies:
            for seed in args.seeds:
                extra = [f"train.seed={seed}", f"data.seed={seed}", *POLICIES[policy], *args.overrides]
                if args.iterations:
                    extra.append(f"train.iterations={args.iterations}")
                cfg = apply_overrides(load_config(SETTINGS[setting]), extra)
                run_dir = args.runs / f"{setting}-{policy}-seed{seed}"
                if args.report_only:
                    if not (run_dir / "results.json").exists():
                        print(f"-- {run_dir}: not finished, left out", file=sys.stderr)
                        continue
                    res = json.loads((run_dir / "results.json").read_text())
                else:
                    print(f"== {setting} / {policy} / seed {seed} -> {run_dir}", file=sys.stderr, flush=True)
                    res = train_run(cfg, run_dir)
                tr = dict(res["training"])
                if "this_call" not in tr and not _one_call(tr):
                    # written before training time added up over resumed calls, by a resumed call
                    tr["iterations_per_s"] = tr["wall_time_s"] = None
                rows.append({"setting": setting, "policy": policy, "seed": seed, "test_error": res["test_error"],
                             "iterations": tr["iterations"], "it_per_s": tr["iterations_per_s"],
                             "wall_time_s": tr["wall_time_s"], "run_dir": str(run_dir)})
                print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join([".venv/bin/python", *sys.argv]), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "runs": rows}
    (args.out / f"{args.tag}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"{args.tag}.md").write_text(markdown(report, args.tag))
    figure(rows, args.out / f"{args.tag}.png")
    print(table(rows))


def _one_call(training: dict) -> bool:
    """Did one call train the whole run (so its own it/s and wall time are the run's)?"""
    speed, wall = training.get("iterations_per_s"), training.get("wall_time_s")
    return bool(speed and wall) and abs(speed * wall - training["iterations"]) < 1


def markdown(report: dict, tag: str) -> str:
    """The table, the command that made the runs (as recorded in the json) and the one that remakes this file."""
    command = report.get("command", "not recorded")
    return (table(report["runs"]) + "\n" + "it/s and wall time: n/a where the json holds null (a run resumed from a "
            "checkpoint written before training time was summed over resumed calls: its rate was not recorded).\n\n"
            f"Command: `{command}`" + (f"; {report['note']}" if report.get("note") else "") + ".\n\n"
            f"This file is remade from `{tag}.json` by "
            f"`.venv/bin/python benchmarks/ram/ram.py --tag {tag} --from-json`.\n")


def figure(rows: list[dict], path: Path) -> None:
    """Test error per setting, learned policy beside random locations: a bar for the mean, a dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["setting"] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(settings), 3.2))
    width = 0.8 / len(policies)
    for j, policy in enumerate(policies):
        for i, setting in enumerate(settings):
            errs = [100 * r["test_error"] for r in rows if (r["setting"], r["policy"]) == (setting, policy)]
            if not errs:
                continue
            x = i + (j - (len(policies) - 1) / 2) * width
            ax.bar(x, statistics.mean(errs), width * 0.9, color=f"C{j}", label=policy if i == 0 else None)
            ax.plot([x] * len(errs), errs, "k.", markersize=4)
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylabel("test error (%)")
    ax.legend(title="glimpse locations", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    lines = ["| setting | policy | seeds | test error % (mean ± sd) | per seed | it/s | wall time / run |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["setting"], r["policy"]), []).append(r)
    for (setting, policy), rs in groups.items():
        errs = [100 * r["test_error"] for r in rs]
        sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
        timed = [r for r in rs if r["it_per_s"] is not None]  # runs resumed from old checkpoints have no total
        speed = f"{statistics.mean(r['it_per_s'] for r in timed):.1f}" if timed else "n/a"
        wall = f"{statistics.mean(r['wall_time_s'] for r in timed) / 60:.1f} min" if timed else "n/a"
        lines.append(f"| {setting} | {policy} | {len(rs)} | {statistics.mean(errs):.2f} ± {sd:.2f} | "
                     f"{', '.join(f'{e:.2f}' for e in errs)} | {speed} | {wall} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
