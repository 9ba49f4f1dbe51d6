"""The PS-NOGS study's data and report, re-derived from the comparison's run folders.

    .venv/bin/python benchmarks/ps-nogs/report.py [--folder benchmarks/ps-nogs/comparison]

reads every run folder of ``benchmarks/ps-nogs/compare.yaml`` (``<folder>/runs/<method>/seed-<s>/``:
``metrics.csv``, ``results.json``, ``sampled/results.json``) and writes beside this script:

* ``results.json`` / ``results.csv``: one row per (method, seed): share of supervised images, status
  (``settled``: stopped by its patience; ``capped``: reached the iteration cap; ``running``: partial;
  ``pending``), iterations run, the paper's convergence iterations (validation cross-entropy within 0.01 nats
  of the run's own best; validation accuracy within 1 point of its own best), best validation accuracy,
  test accuracy greedy and sampled (M = 5), and iterations to reach RAM's converged accuracy;
* ``report.md``: per-method means with 95 % Student-t intervals over seeds, the ratios to RAM, speed-ups and
  test accuracy differences paired by seed with RAM, PS-RAM (the matched control) and PS-NOGS, the per-run
  rows and the posterior-quality curves (``posterior-quality.json``, from ``posterior_quality.py``);
* ``ps-nogs-val-accuracy.png``: validation accuracy against iterations per method, mean over seeds with the
  band between the lowest and highest seed.

RAM's converged accuracy, seed by seed: RAM's best validation accuracy on that seed less the accuracy
tolerance (one point), i.e. the accuracy at which RAM itself counts as converged by the paper's CUB
criterion. "To RAM's accuracy" is the first validation at which a method's run of the same seed reaches it;
its ratio to RAM's own (RAM's accuracy-convergence iteration) is the speed-up at equal accuracy, which the
paper's criteria (each run against its own best) miss when a method settles higher or lower than RAM.
Only finished runs (settled or capped) enter the table; running ones are listed with their progress.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from foveal.recipes.compare.convergence import iterations_to_reach, mean_interval, run_convergence
from foveal.evaluation.records import read_metrics
from foveal.recipes.compare.config import SAMPLED, load_compare_config, method_config, run_finished, slug

HERE = Path(__file__).resolve().parent
COMMAND = ".venv/bin/python benchmarks/ps-nogs/report.py"
FIELDS = ("method", "share", "seed", "status", "iterations", "ce_converged_at", "accuracy_converged_at",
          "best_val_accuracy", "best_val_ce", "test_accuracy", "test_accuracy_sampled", "ram_target_accuracy",
          "to_ram_accuracy")


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def share_of(method_cfg: dict) -> str:
    fraction = method_cfg["algorithm"].get("supervised_fraction")
    if method_cfg["algorithm"]["name"] != "partial-supervision":
        return "-"
    return "natural" if fraction is None else f"{fraction:.0%}"


def collect(folder: Path, config: Path) -> tuple[list[dict[str, Any]], dict[tuple[str, int], dict]]:
    """One row per (method, seed) of the config, and the validation curves of every run that has begun."""
    cfg = load_compare_config(config, ("inputs.nogs=null",))  # the runs' settings; inputs are not read here
    rows, curves = [], {}
    for method in cfg.methods:
        for seed in cfg.seeds:
            run = folder / "runs" / slug(method.name) / f"seed-{seed}"
            mcfg = method_config(cfg, method, seed)
            row: dict[str, Any] = dict.fromkeys(FIELDS)
            row.update(method=method.name, share=share_of(mcfg), seed=seed, status="pending")
            if (run / "metrics.csv").exists():
                metrics = curves[(method.name, seed)] = read_metrics(run / "metrics.csv")
                conv = run_convergence(metrics, ce_tolerance=cfg.ce_tolerance, accuracy_tolerance=cfg.accuracy_tolerance)
                row.update(status="running", iterations=conv.last_iteration, best_val_accuracy=conv.best_accuracy,
                           best_val_ce=conv.best_ce)
                results = _read_json(run / "results.json")
                if results and run_finished(results, mcfg["train"]):
                    training = results["training"]
                    row.update(status="settled" if training.get("settled") else "capped",
                               iterations=training["iterations"], ce_converged_at=conv.ce_iterations,
                               accuracy_converged_at=conv.accuracy_iterations, test_accuracy=results["test_accuracy"])
                    sampled = _read_json(run / SAMPLED / "results.json")
                    if sampled and sampled.get("repeats") == cfg.evaluate_repeats:
                        row["test_accuracy_sampled"] = sampled["test_accuracy"]
            rows.append(row)
    ram = {r["seed"]: r for r in rows if r["method"] == "RAM" and r["status"] in ("settled", "capped")}
    for row in rows:
        target = ram.get(row["seed"])
        if target is None or row["status"] not in ("settled", "capped"):
            continue
        row["ram_target_accuracy"] = target["best_val_accuracy"] - cfg.accuracy_tolerance
        its, values = curves[(row["method"], row["seed"])]["val"]["accuracy"]
        row["to_ram_accuracy"] = iterations_to_reach(its, values, target=row["ram_target_accuracy"])
    return rows, curves


def _cell(values: list, scale: float = 1.0, digits: int = 1, thousands: bool = False) -> str:
    """``mean [lo, hi] (n)`` over the non-None values; ``-`` if none."""
    got = [v * scale for v in values if v is not None]
    if not got:
        return "-"
    mean, lo, hi, n = mean_interval(got)
    fmt = (lambda v: f"{v:,.0f}") if thousands else (lambda v: f"{v:.{digits}f}")
    if n < 2:
        return f"{fmt(mean)} (1)"
    return f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}] ({n})"


def _ratio(ram: list, other: list) -> str:
    """Mean over seeds of RAM's iterations over the method's, paired by seed."""
    pairs = [r / o for r, o in zip(ram, other) if r is not None and o is not None and o > 0]
    if not pairs:
        return "-"
    mean, lo, hi, n = mean_interval(pairs)
    return f"{mean:.2f}x" + (f" [{lo:.2f}, {hi:.2f}]" if n > 1 else "") + f" ({n})"


def summary_table(rows: list[dict[str, Any]]) -> list[str]:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    done = [r for r in rows if r["status"] in ("settled", "capped")]
    ram = {r["seed"]: r for r in done if r["method"] == "RAM"}
    lines = ["| method | share | finished (capped) | converged, CE (own best) | converged, accuracy (own best) | "
             "speed-up, CE | to RAM's accuracy | speed-up there | best val. accuracy (%) | test, greedy (%) | "
             "test, sampled M = 5 (%) |", "|---" * 11 + "|"]
    for name in methods:
        mine = [r for r in done if r["method"] == name]
        share = next(r["share"] for r in rows if r["method"] == name)
        capped = sum(r["status"] == "capped" for r in mine)
        seeds = [r["seed"] for r in mine]
        ram_ce = [ram[s]["ce_converged_at"] if s in ram else None for s in seeds]
        ram_acc = [ram[s]["accuracy_converged_at"] if s in ram else None for s in seeds]
        lines.append(
            f"| {name} | {share} | {len(mine)} ({capped}) | "
            f"{_cell([r['ce_converged_at'] for r in mine], thousands=True)} | "
            f"{_cell([r['accuracy_converged_at'] for r in mine], thousands=True)} | "
            f"{_ratio(ram_ce, [r['ce_converged_at'] for r in mine])} | "
            f"{_cell([r['to_ram_accuracy'] for r in mine], thousands=True)} "
            f"({sum(r['to_ram_accuracy'] is not None for r in mine)}/{len(mine)} reach it) | "
            f"{_ratio(ram_acc, [r['to_ram_accuracy'] for r in mine])} | "
            f"{_cell([r['best_val_accuracy'] for r in mine], 100)} | {_cell([r['test_accuracy'] for r in mine], 100)} | "
            f"{_cell([r['test_accuracy_sampled'] for r in mine], 100)} |")
    return lines


def _difference(pairs: list[tuple[float, float]]) -> str:
    """Mean of ``method - reference`` over seeds (points), with its 95 % Student-t interval."""
    if not pairs:
        return "-"
    mean, lo, hi, n = mean_interval([100 * (m - r) for m, r in pairs])
    return f"{mean:+.1f}" + (f" [{lo:+.1f}, {hi:+.1f}]" if n > 1 else "") + f" ({n})"


def paired_table(rows: list[dict[str, Any]], reference: str = "RAM") -> list[str]:
    """Each method's speed-up over ``reference`` (its iterations to converge by CE over the method's) and test
    accuracy minus the reference's, greedy and sampled, paired by seed on the seeds both finished. Against a
    reference other than RAM, only the methods at the reference's share of annotated images."""
    done = [r for r in rows if r["status"] in ("settled", "capped")]
    ref = {r["seed"]: r for r in done if r["method"] == reference}
    ref_share = next((r["share"] for r in rows if r["method"] == reference), None)
    lines = [f"| method | share | speed-up over {reference}, CE | test greedy minus {reference}'s (points) | "
             f"test sampled minus {reference}'s (points) |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["method"] for r in rows if r["method"] not in (reference, "RAM")):
        share = next(r["share"] for r in rows if r["method"] == name)
        if reference != "RAM" and share != ref_share:
            continue
        mine = [r for r in done if r["method"] == name and r["seed"] in ref]
        speed = _ratio([ref[r["seed"]]["ce_converged_at"] for r in mine], [r["ce_converged_at"] for r in mine])
        cells = [_difference([(r[key], ref[r["seed"]][key]) for r in mine
                              if r[key] is not None and ref[r["seed"]][key] is not None])
                 for key in ("test_accuracy", "test_accuracy_sampled")]
        lines.append(f"| {name} | {share} | {speed} | {cells[0]} | {cells[1]} |")
    return lines


def run_table(rows: list[dict[str, Any]]) -> list[str]:
    def show(v: Any, pct: bool = False) -> str:
        if v is None:
            return "-"
        if pct:
            return f"{100 * v:.1f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| method | share | seed | status | iterations | converged, CE | converged, accuracy | best val. (%) | "
             "test greedy (%) | test sampled (%) | to RAM's accuracy |", "|---" * 11 + "|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['share']} | {r['seed']} | {r['status']} | {show(r['iterations'])} | "
                     f"{show(r['ce_converged_at'])} | {show(r['accuracy_converged_at'])} | "
                     f"{show(r['best_val_accuracy'], True)} | {show(r['test_accuracy'], True)} | "
                     f"{show(r['test_accuracy_sampled'], True)} | {show(r['to_ram_accuracy'])} |")
    return lines


def posterior_section(path: Path) -> list[str]:
    data = _read_json(path)
    if data is None:
        return ["(No posterior-quality curves yet: `benchmarks/ps-nogs/posterior_quality.py` writes them.)"]
    lines = [f"Command: `{data['command']}`", "",
             "Test accuracy (%) after t glimpses; each posterior scored on the glimpse locations of the row "
             "(95 % bootstrap interval over the test images at t = T):", "",
             "| scorer | glimpses | " + " | ".join(f"t = {t}" for t in data["steps"]) + " | at T, interval |",
             "|---|---|" + "---|" * len(data["steps"]) + "---|"]
    for row in data["rows"]:
        lo, hi = row["interval_at_T"]
        lines.append(f"| {row['scorer']} | {row['glimpses']} | "
                     + " | ".join(f"{100 * a:.1f}" for a in row["accuracy"]) + f" | [{100 * lo:.1f}, {100 * hi:.1f}] |")
    return lines + ["", "![posterior quality](posterior-quality.png)"]


def figure(rows: list[dict[str, Any]], curves: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    for k, name in enumerate(methods):
        runs = [curves[(name, r["seed"])]["val"]["accuracy"] for r in rows  # a run just begun has no validation yet
                if r["method"] == name and "accuracy" in curves.get((name, r["seed"]), {}).get("val", {})]
        if not runs:
            continue
        length = min(len(its) for its, _ in runs)  # the iterations every seed has reached
        its = runs[0][0][:length]
        values = np.stack([v[:length] for _, v in runs]) * 100
        color = f"C{k}"
        ax.plot(its, values.mean(0), color=color, lw=1.4, label=f"{name} ({len(runs)} seed{'s' * (len(runs) > 1)})")
        if len(runs) > 1:
            ax.fill_between(its, values.min(0), values.max(0), color=color, alpha=0.15, lw=0)
    ax.set_xlabel("training iteration")
    ax.set_ylabel("validation accuracy (%), 6 greedy glimpses")
    ax.set_title("PS-NOGS study, cluttered 60x60 Fashion-MNIST: mean over seeds, band = lowest to highest seed\n"
                 "(each curve ends where its shortest seed stopped)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, default=HERE / "comparison", help="the comparison's --out folder")
    p.add_argument("--config", type=Path, default=HERE / "compare.yaml")
    p.add_argument("--out", type=Path, default=HERE, help="where results.*, report.md and the figure go")
    args = p.parse_args(argv)
    if not (args.folder / "runs").is_dir():
        print(f"{args.folder / 'runs'}: no run folders (foveal compare --out {args.folder} makes them)", file=sys.stderr)
        return 2
    rows, curves = collect(args.folder, args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"command": COMMAND, "runs": rows}, indent=1) + "\n")
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    figure(rows, curves, args.out / "ps-nogs-val-accuracy.png")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("settled", "capped", "running", "pending")}
    text = ["# PS-NOGS study: does supervision by better glimpse sequences speed up training?", "",
            f"Generated by `{COMMAND}` from the run folders of `benchmarks/ps-nogs/comparison/` "
            "(made by `foveal compare --config benchmarks/ps-nogs/compare.yaml --out benchmarks/ps-nogs/comparison`; "
            "see `benchmarks/ps-nogs/README.md`). Do not edit by hand.", "",
            # the results page (docs/results/ps-nogs.md) includes what lies between the markers
            "## Per method (finished runs; mean, 95 % Student-t interval over seeds, number of seeds)", "",
            "<!-- summary: start -->",
            f"Runs: {counts['settled']} settled, {counts['capped']} capped at the iteration limit, "
            f"{counts['running']} partial, {counts['pending']} not begun, of {len(rows)}.", "",
            *summary_table(rows), "",
            "Speed-ups are RAM's iterations over the method's, paired by seed. \"To RAM's accuracy\": iterations until "
            "validation accuracy first reaches RAM's converged accuracy on the same seed (RAM's best less one point).",
            "", "Paired with RAM on the same seed (mean, 95 % Student-t interval, seeds):", "",
            *paired_table(rows), "",
            "Paired with PS-RAM, the matched control: the same share of annotated images supervised the same way, "
            "along sequences RAM's own policy makes, so what differs is only the sequences:", "",
            *paired_table(rows, reference="PS-RAM"), "",
            "Paired with PS-NOGS, today's annotator: what the others' sequences give over its sequences at the "
            "same share:", "", *paired_table(rows, reference="PS-NOGS"),
            "<!-- summary: end -->", "", "![validation accuracy](ps-nogs-val-accuracy.png)", "",
            "## Posterior quality: is the annotator's posterior as accurate as the RAM it teaches?", "",
            *posterior_section(args.out / "posterior-quality.json"), "",
            "## Every run", "", "<!-- runs: start -->", *run_table(rows), "<!-- runs: end -->", ""]
    (args.out / "report.md").write_text("\n".join(text))
    print(f"{args.out / 'report.md'}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
