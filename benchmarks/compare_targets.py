"""Iterations to several fixed validation accuracies, from the run folders of a comparison
(``foveal compare``), and the speed-up at equal accuracy: how soon each method first reaches the best
validation accuracy the reference method reached on the same seed.

    .venv/bin/python benchmarks/compare_targets.py runs/compare-10k --methods RAM PS-NOGS-25 \\
        --targets 0.4 0.5 0.6 0.65 --reference RAM

Prints a Markdown table (mean ± sd over seeds; "k/n" when only k of n finished seeds reached a target).
Reads ``runs/<method>/seed-<s>/metrics.csv`` and ``results.json`` only; trains nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from foveal.evaluation.convergence import mean_and_spread, run_convergence
from foveal.evaluation.records import read_metrics
from foveal.recipes.compare.config import slug


def _cell(values: list) -> str:
    reached = [v for v in values if v is not None]
    if not reached:
        return "-"
    mean, sd, n = mean_and_spread(reached)
    text = f"{mean:,.0f}" + (f" ± {sd:,.0f}" if n > 1 else "")
    return text + (f" ({n}/{len(values)})" if n < len(values) else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a comparison folder (foveal compare --out)")
    p.add_argument("--methods", nargs="+", required=True, help="method names, as in the comparison config")
    p.add_argument("--targets", nargs="+", type=float, default=[0.4, 0.5, 0.6], help="validation accuracies (fractions)")
    p.add_argument("--reference", help="method whose per-seed best validation accuracy is the equal-accuracy target")
    args = p.parse_args(argv)
    if args.reference and args.reference not in args.methods:
        p.error(f"--reference: expected one of --methods {args.methods}, found {args.reference!r}")
    runs: dict[str, dict[int, Path]] = {}
    metrics: dict[Path, dict] = {}  # each run's metrics.csv, read once
    for method in args.methods:
        folder = args.folder / "runs" / slug(method)
        found = {int(d.name.split("-")[1]): d for d in sorted(folder.glob("seed-*")) if (d / "results.json").exists()}
        if not found:
            print(f"{folder}: no finished run (seed-*/results.json) of {method!r}", file=sys.stderr)
            return 2
        runs[method] = found
        metrics.update({run: read_metrics(run / "metrics.csv") for run in found.values()})
    best_of_reference = {}
    if args.reference:
        for seed, run in runs[args.reference].items():
            best_of_reference[seed] = run_convergence(metrics[run]).best_accuracy
    header = ["method", "seeds"] + [f"to {100 * t:g} %" for t in args.targets]
    if args.reference:
        header.append(f"to {args.reference}'s best (same seed)")
    header += ["best val. accuracy (%)", "test accuracy (%)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, seeds in runs.items():
        cells = [method, str(len(seeds))]
        for t in args.targets:
            cells.append(_cell([run_convergence(metrics[r], target_accuracy=t).target_iterations
                                for r in seeds.values()]))
        if args.reference:
            common = [s for s in seeds if s in best_of_reference]
            cells.append(_cell([run_convergence(metrics[seeds[s]], target_accuracy=best_of_reference[s]).target_iterations
                                for s in common]))
        best = [100 * run_convergence(metrics[r]).best_accuracy for r in seeds.values()]
        test = [100 * json.loads((r / "results.json").read_text())["test_accuracy"] for r in seeds.values()]
        for values in (best, test):
            mean, sd, n = mean_and_spread(values)
            cells.append(f"{mean:.1f}" + (f" ± {sd:.1f}" if n > 1 else ""))
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
