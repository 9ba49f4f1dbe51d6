"""Iterations to several fixed validation accuracies, from the run folders of a comparison
(``foveal compare``), and the speed-up at equal accuracy: how soon each method first reaches the best
validation accuracy the reference method reached on the same seed.

    .venv/bin/python benchmarks/compare/compare_targets.py runs/compare-10k --methods RAM PS-NOGS-25 \\
        --targets 0.4 0.5 0.6 0.65 --reference RAM

Prints a Markdown table (mean ± sd over seeds; "k/n" when only k of n finished seeds reached a target).
With ``--pairs A:B ...`` it prints a second table (:mod:`foveal.recipes.compare.pairs`): test accuracy of A
minus B, greedy and sampled, seed by seed on the seeds both finished, with the mean ± sd and its 95 %
Student-t interval over those seeds.
Reads ``compare.yaml``, ``runs/<method>/seed-<s>/metrics.csv`` and ``results.json`` only; trains nothing.
Counts only runs trained for the comparison's length (``run.train.iterations`` of ``compare.yaml``, or
``--iterations``), as ``foveal compare --report-only`` does: a folder being continued to more iterations
holds runs of both lengths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from foveal.evaluation.records import read_metrics
from foveal.recipes.compare.config import finished_iterations, slug
from foveal.recipes.compare.convergence import mean_and_spread, run_convergence
from foveal.recipes.compare.pairs import pairs_table, parse_pairs


def _cell(values: list) -> str:
    reached = [v for v in values if v is not None]
    if not reached:
        return "-"
    mean, sd, n = mean_and_spread(reached)
    text = f"{mean:,.0f}" + (f" ± {sd:,.0f}" if n > 1 else "")
    return text + (f" ({n}/{len(values)})" if n < len(values) else "")


def _up_to(metrics: dict, length: int) -> dict:
    """A run's curves up to ``length`` iterations (a run being continued already logs beyond it)."""
    return {split: {name: (its[its <= length], vals[its <= length]) for name, (its, vals) in names.items()}
            for split, names in metrics.items()}


def _compare_length(folder: Path) -> int:
    """``run.train.iterations`` of a comparison folder's ``compare.yaml``."""
    path = folder / "compare.yaml"
    if not path.exists():
        raise SystemExit(f"{path}: not found; give --iterations to say which run length to count")
    try:
        return int(yaml.safe_load(path.read_text())["run"]["train"]["iterations"])
    except (KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"{path}: run.train.iterations: expected an integer, could not read it ({e!r})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a comparison folder (foveal compare --out)")
    p.add_argument("--methods", nargs="+", required=True, help="method names, as in the comparison config")
    p.add_argument("--targets", nargs="+", type=float, default=[0.4, 0.5, 0.6], help="validation accuracies (fractions)")
    p.add_argument("--reference", help="method whose per-seed best validation accuracy is the equal-accuracy target")
    p.add_argument("--seeds", nargs="+", type=int, help="count only these seeds (default: every finished seed)")
    p.add_argument("--pairs", nargs="+", default=[], metavar="A:B",
                   help="also print A's test accuracy minus B's per seed (method names from --methods)")
    p.add_argument("--iterations", type=int,
                   help="count runs trained this long (default: run.train.iterations of the folder's compare.yaml)")
    args = p.parse_args(argv)
    if args.reference and args.reference not in args.methods:
        p.error(f"--reference: expected one of --methods {args.methods}, found {args.reference!r}")
    try:
        pairs = parse_pairs(args.pairs, args.methods)
    except ValueError as e:
        p.error(str(e))
    length = args.iterations if args.iterations is not None else _compare_length(args.folder)
    runs: dict[str, dict[int, Path]] = {}
    metrics: dict[Path, dict] = {}  # each run's metrics.csv, read once
    for method in args.methods:
        folder = args.folder / "runs" / slug(method)
        found, other = {}, []
        for d in sorted(folder.glob("seed-*")):
            seed = int(d.name.split("-")[1])
            if args.seeds is not None and seed not in args.seeds:
                continue
            trained = finished_iterations(d)
            if trained == length:
                found[seed] = d
            elif trained is not None:
                other.append(f"{d.name} ({trained:,})")
        if other:
            print(f"{method}: left out, not trained for {length:,} iterations: {', '.join(other)}", file=sys.stderr)
        if not found:
            print(f"{folder}: no run of {method!r} finished at {length:,} iterations (seed-*/results.json)",
                  file=sys.stderr)
            return 2
        runs[method] = found
        metrics.update({run: _up_to(read_metrics(run / "metrics.csv"), length) for run in found.values()})
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
    if pairs:
        print("\nTest accuracy differences, points, greedy / sampled, on the seeds both finished (n):\n")
        try:
            print(pairs_table(runs, pairs))
        except ValueError as e:  # a results.json without a test accuracy
            raise SystemExit(str(e)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
