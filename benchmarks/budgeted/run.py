"""Budgeted inference on 60x60 cluttered Fashion-MNIST: accuracy against mean glimpses and multiply-adds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/budgeted/run.py --scale small --seeds 0      # ~15 min, one core
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/budgeted/run.py --scale full --seeds 0 1 2   # configs as shipped

Per seed, every model is an ordinary run folder under --runs (a killed benchmark resumes where it stopped):

1. ``RAM``: config ram-cluttered-fashion-mnist (12 px glimpses, 3 scales, GRU, 6 glimpses) with
   ``algorithm.ce_steps=all``, so that the prediction after every glimpse is trained (an early exit reads them);
2. ``RAM + learned stop``: the same with ``model.stop_head=true`` and ``algorithm.stop_cost`` (DT-RAM style);
3. ``DRAM``: config saccader-dram-cluttered-fashion-mnist with ``algorithm.ce_steps=all``;
4. ``Saccader``: its three stages (configs saccader-{representation,location,reinforce}-cluttered-fashion-mnist);
   its prediction after t glimpses averages the cell logits read, trained at every t by stage 1.

5. from the PS-NOGS study (``--study``, benchmarks/ps-nogs/comparison), where its best checkpoints exist for the
   seed: its RAM and its PS-NOGS-trained RAM (ram-grid, one 12 px scale, trained to convergence with the loss on
   the last glimpse's prediction only, so their earlier predictions were never trained; a reference for
   PS-NOGS against RAM at equal budget, not against the models above).

A seed's numbers are saved in ``--out/seed-<seed>.json``; a later call skips it (and evaluates only the study's
models it lacks). With --runs inside the repository, ``--snapshot`` git-stages what a fresh clone needs to
continue (the unfinished seeds' checkpoints).

Each model is evaluated on the first --limit test images (:func:`foveal.evaluation.budget.budget_evaluation`,
greedy policies, up to 6 glimpses): the fixed-T curve, the confidence rule over --thresholds, and for the
learned stop its own rule over the same thresholds. The learned stop at 0.5 (its more likely action) is compared
with the confidence rule on the same network at the same mean glimpses (a confidence threshold found by
bisection). Multiply-adds per image are counted from each network's layers (:mod:`foveal.evaluation.cost`).

Writes to --out: ``budget.json`` (every seed's records and their mean), ``budget.csv``, ``report.md`` and
``figures/budget_accuracy_vs_{glimpses,macs}.png`` (mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from foveal.config import apply_overrides, load_config
from foveal.runtime import speed_up_allocator

RAM, DRAM = "ram-cluttered-fashion-mnist", "saccader-dram-cluttered-fashion-mnist"
STAGES = {"representation": "saccader-representation-cluttered-fashion-mnist",
          "location": "saccader-location-cluttered-fashion-mnist",
          "reinforce": "saccader-reinforce-cluttered-fashion-mnist"}
STOP_COST = 0.01
SCALES = {
    # ~15 minutes of one shared CPU core for one seed: far too little training to measure the methods
    "small": {"ram": ["train.iterations=500", "train.batch_size=64"],
              "dram": ["train.iterations=400", "train.batch_size=32"],
              "representation": ["train.iterations=300", "train.batch_size=32"],
              "location": ["train.iterations=60", "train.batch_size=32"],
              "reinforce": ["train.iterations=60", "train.batch_size=16"],
              "common": ["train.val_every=250", "train.val_batches=2", "train.eval_batch_size=250",
                         "train.tensorboard=false"], "limit": 1000},
    "full": {"ram": [], "dram": [], "representation": [], "location": [], "reinforce": [],
             "common": ["train.tensorboard=false"], "limit": None},
    # seconds: checks that the script runs end to end, measures nothing
    "smoke": {**{k: ["train.iterations=3", "train.batch_size=8"] for k in
                 ("ram", "dram", "representation", "location", "reinforce")},
              "common": ["train.val_every=3", "train.val_batches=1", "train.eval_batch_size=50",
                         "train.tensorboard=false"], "limit": 40},
}
THRESHOLDS = [0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 0.999, 0.9999]
LEARNED_RULE = "RAM + learned stop (its stop rule)"
STUDY = {"RAM-grid, PS-NOGS study": "ram", "PS-NOGS-trained RAM-grid, PS-NOGS study": "ps-nogs"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=list(SCALES), default="small")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--limit", type=int, help="test images evaluated (default: the scale's)")
    ap.add_argument("--thresholds", nargs="+", type=float, default=THRESHOLDS)
    ap.add_argument("--stop-cost", type=float, default=STOP_COST, help="reward lost per glimpse (learned stop)")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-budgeted"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results-small")
    ap.add_argument("--study", type=Path, default=Path(__file__).parents[1] / "ps-nogs" / "comparison",
                    help="the PS-NOGS study's comparison folder: its RAM and PS-NOGS best checkpoints are evaluated too")
    ap.add_argument("--report-only", action="store_true",
                    help="remake report.md, budget.csv and the figures from --out/budget.json, training nothing")
    ap.add_argument("--snapshot", action="store_true",
                    help="git-stage what continues an unfinished run in a fresh clone (--runs inside the repository)")
    args = ap.parse_args()
    if args.report_only:
        write(json.loads((args.out / "budget.json").read_text()), args.out)
        return
    if args.snapshot:
        snapshot(args.runs, args.out, args.seeds)
        return
    speed_up_allocator()
    torch.set_num_threads(1)
    scale = SCALES[args.scale]
    limit = args.limit if args.limit is not None else scale["limit"]
    per_seed = []
    for seed in args.seeds:  # a seed already in --out is not trained or evaluated again, only completed
        per_seed.append(run_seed(seed, scale, limit, args))
        report = {"command": " ".join(["OMP_NUM_THREADS=1", ".venv/bin/python", *sys.argv]), "scale": args.scale,
                  "overrides": {k: v for k, v in scale.items() if k != "limit"}, "limit": limit,
                  "seeds": [s["seed"] for s in per_seed], "stop_cost": args.stop_cost, "thresholds": args.thresholds,
                  "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "seconds": sum(sum(s["seconds"].values()) for s in per_seed),
                  "per_seed": per_seed, "mean": {"methods": mean_methods(per_seed)}}
        write(report, args.out)  # after every seed: a report of the seeds done so far


def run_seed(seed: int, scale: dict, limit, args) -> dict:
    """One seed's numbers, from ``--out/seed-<seed>.json`` where an earlier call saved them (then only the PS-NOGS
    study's models it lacks are evaluated), else trained (resuming the run folders) and evaluated, then saved."""
    cache = args.out / f"seed-{seed}.json"
    if cache.exists():
        done = json.loads(cache.read_text())
        for key, value in (("scale", args.scale), ("limit", limit), ("thresholds", args.thresholds)):
            if done.get(key) != value:
                raise ValueError(f"{cache}: field {key!r} is {done.get(key)!r} but this call asks for {value!r}; "
                                 "use another --out (or delete the file to evaluate that seed again)")
    else:
        done = {"seed": seed, "scale": args.scale, "limit": limit, "thresholds": args.thresholds,
                **train_and_evaluate(seed, scale, limit, args)}
        args.out.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(done, indent=2))
    have = {m["label"] for m in done["methods"]}
    missing = {label: path for label, path in study_checkpoints(args.study, seed).items() if label not in have}
    if missing:
        log(f"seed {seed}: evaluating {', '.join(missing)} on {limit or 'all'} test images")
        t0 = time.perf_counter()
        done["methods"] += evaluate(missing, limit, args.thresholds, seed)[0]
        done["seconds"]["evaluation (PS-NOGS study)"] = done["seconds"].get("evaluation (PS-NOGS study)", 0.0) + \
            time.perf_counter() - t0
        cache.write_text(json.dumps(done, indent=2))
    return done


def study_checkpoints(study: Path, seed: int) -> dict[str, Path]:
    """The PS-NOGS study's RAM and PS-NOGS-trained RAM of this seed (benchmarks/ps-nogs/comparison), where their
    best checkpoints exist: ram-grid, one 12 px scale, trained on the last glimpse's prediction only."""
    found = {}
    for label, method in STUDY.items():
        best = study / "runs" / method / f"seed-{seed}" / "checkpoints" / "best"
        if best.with_suffix(".json").exists() and best.with_suffix(".safetensors").exists():
            found[label] = best
    return found


def train_and_evaluate(seed: int, scale: dict, limit, args) -> dict:
    from foveal.recipes.run import train_run
    from foveal.recipes.saccader import run_stages

    root = args.runs / f"seed{seed}"
    seeded = [f"train.seed={seed}", f"data.seed={seed}", *scale["common"]]
    every_step = ["algorithm.ce_steps=all"]
    runs = {"RAM": (RAM, root / "ram", every_step),
            "RAM + learned stop": (RAM, root / "ram-stop", every_step + ["model.stop_head=true",
                                                                         f"algorithm.stop_cost={args.stop_cost}"]),
            "DRAM": (DRAM, root / "dram", every_step)}
    seconds = {}
    for label, (config, folder, extra) in runs.items():
        log(f"seed {seed}: training {label}")
        key = "dram" if config == DRAM else "ram"
        t0 = time.perf_counter()
        train_run(apply_overrides(load_config(config), seeded + scale[key] + extra), folder, test=False)
        seconds[label] = time.perf_counter() - t0
    configs = {s: apply_overrides(load_config(name), seeded + scale[s]) for s, name in STAGES.items()}
    log(f"seed {seed}: training the Saccader's three stages")
    t0 = time.perf_counter()
    run_stages(configs, root / "saccader", test=False)
    seconds["Saccader"] = time.perf_counter() - t0
    checkpoints = {label: folder / "checkpoints" / "best" for label, (_, folder, _) in runs.items()}
    checkpoints["Saccader"] = root / "saccader" / "reinforce" / "checkpoints" / "best"
    t0 = time.perf_counter()
    log(f"seed {seed}: evaluating on {limit or 'all'} test images")
    methods, matched = evaluate(checkpoints, limit, args.thresholds, seed)
    seconds["evaluation"] = time.perf_counter() - t0
    return {"run_dir": str(root), "seconds": seconds, "methods": methods, "learned_vs_confidence": matched}


def snapshot(runs: Path, out: Path, seeds: list[int]) -> None:
    """Stage for a commit what a fresh clone needs to continue: every run folder's config, metrics and
    checkpoints (``last`` resumes a run, ``best`` is evaluated) for the seeds whose numbers are not yet in --out;
    for the others, only their numbers (the checkpoints leave the index)."""
    import subprocess

    for seed in seeds:
        root = runs / f"seed{seed}"
        if not root.exists():
            continue
        if (out / f"seed-{seed}.json").exists():
            subprocess.run(["git", "rm", "-rq", "--cached", "--ignore-unmatch", str(root)], check=True)
            continue
        keep = [p for p in root.rglob("*") if p.is_file() and (
            p.name in ("config.yaml", "metrics.csv") or
            (p.parent.name == "checkpoints" and p.stem in ("last", "best") and p.suffix in (".json", ".safetensors")))]
        if keep:
            subprocess.run(["git", "add", "-f", *map(str, keep)], check=True)
    subprocess.run(["git", "add", str(out)], check=True)
    subprocess.run(["git", "status", "--short", "--", str(runs), str(out)], check=True)


def evaluate(checkpoints: dict, limit, thresholds: list[float], seed: int) -> tuple[list[dict], dict]:
    from foveal.evaluation.budget import budget_evaluation
    from foveal.models import load_model
    from foveal.recipes.experiment import build_data

    methods, matched, data = [], {}, None
    for label, checkpoint in checkpoints.items():
        model, info = load_model(checkpoint)
        data = data or build_data(info["config"], ("test",))["test"]
        run = lambda rule, ts, fixed=True: budget_evaluation(  # noqa: E731
            model, data, rule=rule, thresholds=ts, max_glimpses=6, limit=limit, seed=seed, label=label,
            fixed_curve=fixed)
        methods.append(run("confidence", thresholds))
        if label == "RAM + learned stop":
            learned = run("learned", thresholds, False)  # its fixed-T curve is the entry above's
            methods.append({**learned, "label": LEARNED_RULE})
            at_half = run("learned", [0.5], False)["exit"][0]
            matched = {"learned_stop_at_0.5": at_half,
                       "confidence_rule_at_equal_glimpses": match_glimpses(run, at_half["mean_glimpses"])}
    return methods, matched


def match_glimpses(run, target: float, steps: int = 12) -> dict:
    """The confidence-rule pass whose mean glimpses is nearest ``target``, by bisection on the threshold."""
    low, high, best = 0.0, 1.0, None
    for _ in range(steps):
        middle = (low + high) / 2
        entry = run("confidence", [middle], False)["exit"][0]
        if best is None or abs(entry["mean_glimpses"] - target) < abs(best["mean_glimpses"] - target):
            best = entry
        if abs(entry["mean_glimpses"] - target) < 0.02:
            break
        low, high = (middle, high) if entry["mean_glimpses"] < target else (low, middle)
    return best


def mean_methods(per_seed: list[dict]) -> list[dict]:
    """Every method's fixed and exit numbers averaged over the seeds that have it (sd beside each accuracy)."""
    out = []
    labels = list(dict.fromkeys(m["label"] for s in per_seed for m in s["methods"]))
    for label in labels:
        runs = [m for s in per_seed for m in s["methods"] if m["label"] == label]
        seeds = [s["seed"] for s in per_seed if any(m["label"] == label for m in s["methods"])]

        def average(rows: list[list[dict]]) -> list[dict]:
            merged = []
            for entries in zip(*rows):
                row = dict(entries[0])
                for key in ("accuracy", "area", "mean_glimpses", "macs_per_image"):
                    if key in row:
                        row[key] = statistics.mean(e[key] for e in entries)
                row["accuracy_sd"] = statistics.stdev(e["accuracy"] for e in entries) if len(entries) > 1 else 0.0
                if "glimpse_histogram" in row:
                    row["glimpse_histogram"] = [sum(c) for c in zip(*(e["glimpse_histogram"] for e in entries))]
                merged.append(row)
            return merged

        out.append({**runs[0], "seeds": seeds, "fixed": average([r["fixed"] for r in runs]),
                    "exit": average([r["exit"] for r in runs])})
    return out


def target_check(method: dict, goal: float) -> str:
    """The issue's target: ``goal``, the accuracy of fixed T = 6, with at most 4 glimpses on average."""
    ok = [e for e in method["exit"] if e["mean_glimpses"] <= 4 and e["accuracy"] >= goal]
    if ok:
        best = min(ok, key=lambda e: e["mean_glimpses"])
        return f"met: {100 * best['accuracy']:.1f} % with {best['mean_glimpses']:.2f} glimpses (threshold {best['threshold']:g})"
    at4 = [e for e in method["exit"] if e["mean_glimpses"] <= 4]
    best = max(at4, key=lambda e: e["accuracy"]) if at4 else None
    return "not met" + (" (no threshold stopped within 4 glimpses on average)" if best is None else f": best at <= 4 glimpses {100 * best['accuracy']:.1f} % "
                        f"({best['mean_glimpses']:.2f} glimpses, threshold {best['threshold']:g})")


def target_gaps(per_seed: list[dict]) -> dict[str, dict[int, float]]:
    """Per method and seed, the points of accuracy between the best early exit with at most 4 glimpses on average
    and the same seed's fixed T = 6 (the learned stop rule against its network's fixed curve); seeds where no
    threshold stopped within 4 glimpses are absent."""
    gaps: dict[str, dict[int, float]] = {}
    for s in per_seed:
        by_label = {m["label"]: m for m in s["methods"]}
        for m in s["methods"]:
            fixed = (by_label.get("RAM + learned stop") if m["label"] == LEARNED_RULE else m) or {}
            within = [e for e in m["exit"] if e["mean_glimpses"] <= 4]
            if len(fixed.get("fixed", [])) >= 6 and within:
                best = max(e["accuracy"] for e in within)
                gaps.setdefault(m["label"], {})[s["seed"]] = 100 * (best - fixed["fixed"][5]["accuracy"])
    return gaps


def write(report: dict, out: Path) -> None:
    from foveal.evaluation.budget import budget_table, write_budget
    from foveal.recipes.compare.convergence import mean_interval

    out.mkdir(parents=True, exist_ok=True)
    mean = report["mean"]
    for m in mean["methods"]:
        if m["label"] == LEARNED_RULE:
            m["fixed"] = []  # the same network as "RAM + learned stop": its fixed-T curve is drawn once
    goals = {m["label"]: m["fixed"][5]["accuracy"] for m in mean["methods"] if m["fixed"]}
    goals[LEARNED_RULE] = goals.get("RAM + learned stop")
    files = write_budget(mean, out)  # budget.json / csv / md and the figures, of the mean over seeds
    (out / "budget.json").write_text(json.dumps(report, indent=2))  # then the whole report in its place
    files[2].unlink()  # the table is in report.md
    n = len(report["seeds"])
    lines = [f"# Budgeted inference, 60x60 cluttered Fashion-MNIST (scale `{report['scale']}`)", "",
             f"Command: `{report['command']}` (then `--report-only` remakes this file and the figures from "
             "`budget.json`)", ""]
    if report["scale"] != "full":
        lines += [f"**Small-scale run** ({report['seconds'] / 60:.0f} min on one shared CPU core): every model is "
                  "trained for a few hundred iterations only, far from converged; the numbers show that the pipeline "
                  "runs end to end and how the curves are made, not how the methods compare. The full-size run is "
                  "`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/budgeted/run.py --scale full --seeds 0 1 2 "
                  "--out benchmarks/budgeted/results-full` (the configs as shipped, 3 seeds, all 10,000 test images; "
                  "hours of CPU).", ""]
    lines += [f"Seeds {report['seeds']}" + (" (accuracy: mean over seeds)" if n > 1 else "") +
              f"; first {report['limit'] or 'all'} test images; greedy policies; up to 6 glimpses (trained with 6).",
              study_note(mean["methods"]), "",
              "## Cost per image (multiply-adds, counted from the layers)", "",
              "| model | fixed (once per image) | per glimpse | 6 glimpses |", "|---|---|---|---|"]
    for m in mean["methods"]:
        if m["label"] == LEARNED_RULE:
            continue
        c = m["cost"]
        lines.append(f"| {m['label']} | {c['fixed_macs'] / 1e6:.3f} M | {c['macs_per_glimpse'] / 1e6:.3f} M | "
                     f"{(c['fixed_macs'] + 6 * c['macs_per_glimpse']) / 1e6:.3f} M |")
    shares = [f"{m['label']} {100 * m['cost']['fixed_macs'] / (m['cost']['fixed_macs'] + 6 * m['cost']['macs_per_glimpse']):.0f} %"
              for m in mean["methods"] if m["label"] != LEARNED_RULE]
    lines += ["", "Share of the 6-glimpse cost spent before the first glimpse (what stopping early cannot save): "
              + ", ".join(shares) + ". Where it is large (the Saccader's representation network reads the whole "
              "image), early exit saves pixels looked at, not multiply-adds."]
    lines += ["", "## Target: the accuracy of fixed T = 6 with at most 4 glimpses on average", ""]
    if report["scale"] != "full":
        lines += ["At this scale RAM gains little from glimpse 1 to 6 (its first glimpse, 3 scales up to 48 px, "
                  "already sees most of the 60 px image), so a RAM 'met' here says little about the full-size "
                  "question.", ""]
    lines += [f"- {m['label']} (fixed T = 6: {100 * goals[m['label']]:.1f} %): {target_check(m, goals[m['label']])}"
              for m in mean["methods"] if goals.get(m["label"]) is not None]
    gaps = target_gaps(report["per_seed"])
    if gaps:
        lines += ["", "Per seed, the best early exit at <= 4 glimpses on average minus that seed's fixed T = 6 "
                  "(points of accuracy; mean and 95 % Student-t interval over seeds; a seed with no threshold "
                  "within 4 glimpses is left out):", ""]
        for label, per in gaps.items():
            mean_gap, low, high, k = mean_interval(list(per.values()))
            interval = f" [{low:+.1f}, {high:+.1f}]" if k > 1 else ""
            lines.append(f"- {label}: {mean_gap:+.1f}{interval} over {k} seed(s) ("
                         + ", ".join(f"seed {seed} {gap:+.1f}" for seed, gap in per.items()) + ")")
    lines += ["", "## Learned stop vs the confidence rule at equal mean glimpses (same network)", ""]
    for s in report["per_seed"]:
        lv = s["learned_vs_confidence"]
        if lv:
            a, b = lv["learned_stop_at_0.5"], lv["confidence_rule_at_equal_glimpses"]
            lines.append(f"- seed {s['seed']}: learned stop {100 * a['accuracy']:.1f} % at {a['mean_glimpses']:.2f} "
                         f"glimpses; confidence rule {100 * b['accuracy']:.1f} % at {b['mean_glimpses']:.2f} glimpses "
                         f"(threshold {b['threshold']:.3f}); stop cost {report['stop_cost']} per glimpse")
    diffs = [100 * (s["learned_vs_confidence"]["learned_stop_at_0.5"]["accuracy"]
                    - s["learned_vs_confidence"]["confidence_rule_at_equal_glimpses"]["accuracy"])
             for s in report["per_seed"] if s["learned_vs_confidence"]]
    if diffs:
        mean_diff, low, high, k = mean_interval(diffs)
        interval = f", 95 % interval over seeds [{low:+.1f}, {high:+.1f}]" if k > 1 else ""
        lines += ["", f"Learned stop minus confidence rule, points of accuracy: mean {mean_diff:+.1f}{interval} over "
                  f"{k} seed(s) ({', '.join(f'{d:+.1f}' for d in diffs)})."]
    lines += ["", "## Every setting", "", budget_table(mean),
              "Rows `fixed T = t`: every image takes t glimpses. Other rows: early exit, an image stops once its top "
              "class probability reaches the threshold (`confidence`) or its stop head says so (`learned`), up to 6; "
              "`glimpses 1..T`: images that took 1, 2, ... 6 glimpses (summed over seeds). Area: fraction of the "
              "image inside the union of the finest patches seen. MMACs: fixed + mean glimpses x per glimpse.", "",
              "Figures: `figures/budget_accuracy_vs_glimpses.png`, `figures/budget_accuracy_vs_macs.png` "
              "(dashed: fixed T; solid: early exit).", "",
              "Wall time (s, one shared core): " + "; ".join(
                  f"seed {s['seed']}: " + ", ".join(f"{k} {v:.0f}" for k, v in s["seconds"].items())
                  for s in report["per_seed"])]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for path in [out / "report.md", *files[:2], *files[3:]]:
        print(f"file: {path}")


def study_note(methods: list[dict]) -> str:
    have = {m["label"]: m["seeds"] for m in methods if m["label"] in STUDY}
    if not have:
        return "PS-NOGS-trained RAM: not included (no best checkpoint of the PS-NOGS study was found)."
    return ("From the PS-NOGS study (`benchmarks/ps-nogs/comparison`): " + "; ".join(
        f"{label} (seeds {seeds})" for label, seeds in have.items()) + ". They are ram-grid models (one 12 px "
        "scale), trained to convergence with the loss on the last glimpse's prediction only: their predictions "
        "after fewer glimpses were never trained, so an early exit reads untrained outputs. They compare PS-NOGS "
        "with RAM at equal budget, not with the models above.")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
