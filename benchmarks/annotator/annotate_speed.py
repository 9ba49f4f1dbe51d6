"""The annotator at N = 64 completions: the plain search against each saving, at equal quality measured by an
independent posterior (docs/results/annotator.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/annotator/annotate_speed.py                    # the reported run, K = 30
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/annotator/annotate_speed.py --images 1 --sequences-only   # time one image

Setting and shared steps as in benchmarks/annotator/annotate.py (whose helpers this file uses): 60x60 cluttered
Fashion-MNIST, 12 px glimpses on the stride-4 grid (169 cells), T = 6, the choosing posterior
<work>/posterior, the bank <work>/bank.npy. Then:

1. images: validation positions 2500, 2550, ..., 2500 + 50 (K - 1) (K <= 50; a larger K extends the same
   list, so a run grows without recomputing), the half of the split checkpoint selection never saw;
2. sequences: for every image, every search variant of VARIANTS in turn (interleaved, so that a change of
   load on the machine hits all variants alike), N completions per step, the image's completions drawn from
   ``torch.Generator().manual_seed(position + offset)``; the first glimpse is the task's (plain search,
   4N completions) for all. Per image and variant: cells, seconds, seconds inside posterior forwards,
   posterior images; kept in <work>/n64/records/<variant>.json after every image, so a killed run continues;
3. scorer: the same posterior config trained separately with train.seed=1 (initial weights, batch order,
   sampled glimpses) in <work>/posterior-seed1; data.seed stays 0 because it sets the cluttered images
   themselves (the clutter of every item), not only their sampling;
4. quality: the scorer's accuracy and entropy after t = 1..T along each variant's sequences, per image;
   paired differences against plain on the same images with 95 % bootstrap CIs (10,000 resamples of the
   images) for accuracy after T and entropy averaged over t = 1..T. "within noise": both CIs contain 0.

Timings exclude the one-off work every variant shares (PCA of all cells, the first glimpse). "outside
forwards" is 1 - (seconds in posterior forwards) / (seconds of the search), as in benchmarks/annotator/annotate.py.

Writes benchmarks/annotator/annotate-n64.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).parent))
from annotate import DATASET, GLIMPSE, T, log, make_bank, make_sampler, run_variant, train_posterior  # noqa: E402

from foveal.boed import NetworkPosterior, first_glimpse  # noqa: E402
from foveal.boed.epe import FirstGlimpse, SearchConfig  # noqa: E402
from foveal.data import build_dataset  # noqa: E402
from foveal.evaluation.posterior_curves import posterior_curves  # noqa: E402
from foveal.recipes.run import load_model  # noqa: E402
from foveal.retina import LocationGrid  # noqa: E402
from foveal.runtime import speed_up_allocator  # noqa: E402
from foveal.sequences import GlimpseSequences, paired_bootstrap  # noqa: E402

FIRST, STEP = 2500, 50  # held-out positions FIRST + STEP * i
OTHER_SEEDS = 10_000
VARIANTS = {  # name -> (SearchConfig, seed offset); "plain" first: the others are compared with it
    "plain": (SearchConfig(), 0),
    # The plain search's numbers (local updates compute them exactly, 3x cheaper) with other completions:
    # how far plain is from itself, the Monte-Carlo noise floor of agreement and quality.
    "plain, other seeds": (SearchConfig(local_updates=True), OTHER_SEEDS),
    "local": (SearchConfig(local_updates=True), 0),
    "prune 8/16": (SearchConfig(screen_completions=8, screen_top_k=16), 0),
    # (no "prune 16/32" without local updates: it chooses what "local+prune 16/32" chooses, at 25 s per image,
    # which did not fit the run; measured on one image: 1.6x plain)
    "local+prune 8/16": (SearchConfig(screen_completions=8, screen_top_k=16, local_updates=True), 0),
    "local+prune 16/32": (SearchConfig(screen_completions=16, screen_top_k=32, local_updates=True), 0),
    "local+prune 4/8": (SearchConfig(screen_completions=4, screen_top_k=8, local_updates=True), 0),  # the cheapest
}
NOT_A_SAVING = {"plain", "plain, other seeds"}  # rows that are not candidates for "the fastest saving"


def slug(name: str) -> str:
    return name.replace(", ", "-").replace(" ", "-").replace("/", "-").replace("+", "-")


def write_json(path: Path, obj) -> None:
    """Atomically (a killed run never leaves half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=30, help="K held-out validation images, <= 50 (default: %(default)s)")
    ap.add_argument("--completions", type=int, default=64, help="N completions per step (default: %(default)s)")
    ap.add_argument("--target-ess", type=float, default=0.02, help="BankSampler.target_ess (default: %(default)s)")
    ap.add_argument("--iterations", type=int, help="posterior training iterations, both posteriors (default: config's)")
    ap.add_argument("--sequences-only", action="store_true", help="stop after the sequences (no scorer, no report)")
    ap.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default: %(default)s)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-annotate"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--tag", default="annotate-n64")
    ap.add_argument("--report-only", action="store_true", help="compute nothing: remake <tag>.md from <tag>.json")
    args = ap.parse_args()
    if args.report_only:
        report = json.loads((args.out / f"{args.tag}.json").read_text())
        (args.out / f"{args.tag}.md").write_text(table(report, args.tag))
        return
    if not 1 <= args.images <= 2500 // STEP:
        ap.error(f"--images: expected 1..{2500 // STEP}, found {args.images}")
    speed_up_allocator()
    torch.set_num_threads(1)
    chooser_ckpt = train_posterior(args)
    model, info = load_model(chooser_ckpt)
    model.eval()
    grid = LocationGrid.from_stride((60, 60), GLIMPSE, info["config"]["algorithm"]["grid_stride"])
    val = build_dataset(DATASET, "val", canvas=60)
    positions = FIRST + STEP * torch.arange(args.images)
    work = args.work / f"n{args.completions}"
    records, one_off = make_sequences(args, work, model, grid, val, positions)
    if args.sequences_only:
        return
    scorer_ckpt = train_posterior(args, "posterior-seed1", ("train.seed=1",))
    scorer, scorer_info = load_model(scorer_ckpt)
    scorer.eval()
    report = {"setting": {"dataset": DATASET, "image_size": [60, 60], "glimpse_size": GLIMPSE, "num_glimpses": T,
                          "grid_stride": info["config"]["algorithm"]["grid_stride"], "grid_cells": len(grid),
                          "completions": args.completions, "target_ess": args.target_ess,
                          "images": {"split": "val", "positions": positions.tolist()},
                          "threads": torch.get_num_threads(), "torch": torch.__version__, "git": git_state(),
                          "bootstrap_resamples": args.resamples},
              "posteriors": {"chooser": posterior_info(chooser_ckpt), "scorer": posterior_info(scorer_ckpt)},
              "one_off": one_off,
              "variants": summarise(args, records, positions, grid, val, model, scorer),
              "command": " ".join(["OMP_NUM_THREADS=1", ".venv/bin/python", *sys.argv])}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.tag}.json", report)
    (args.out / f"{args.tag}.md").write_text(table(report, args.tag))
    print(table(report))


def make_sequences(args, work: Path, model, grid: LocationGrid, val, positions) -> tuple[dict, dict]:
    """Every variant's sequence of every image, image-major; ``({variant: {position: record}}, one-off seconds)``."""
    (work / "records").mkdir(parents=True, exist_ok=True)
    setting = {"completions": args.completions, "target_ess": args.target_ess, "num_glimpses": T,
               "grid_cells": len(grid), "posterior": str(args.work / "posterior")}
    records = {}
    for name, (search, offset) in VARIANTS.items():
        path = work / "records" / f"{slug(name)}.json"
        rec = json.loads(path.read_text()) if path.exists() else {"setting": setting, "search": vars(search),
                                                                   "seed_offset": offset, "images": {}}
        if rec["setting"] != setting or rec["search"] != vars(search) or rec["seed_offset"] != offset:
            raise SystemExit(f"{path}: made with other settings ({rec['setting']}, {rec['search']}, offset "
                             f"{rec['seed_offset']}); expected {setting}, {vars(search)}, offset {offset}: "
                             "use another --work or remove it")
        records[name] = rec
    todo = [p for p in positions.tolist() if any(str(p) not in r["images"] for r in records.values())]
    one_off_path = work / "one-off.json"
    one_off = json.loads(one_off_path.read_text()) if one_off_path.exists() else {}
    if not todo:
        return records, one_off
    posterior = NetworkPosterior(model)
    bank = make_bank(args.work / "bank.npy")
    sampler, one_off["pca_seconds"] = make_sampler(bank, grid, args)
    first = load_first_glimpse(args, work, posterior, sampler, grid, one_off)
    write_json(one_off_path, one_off)
    for position in todo:
        image = val[position]["image"]
        for name, variant in VARIANTS.items():
            if str(position) in records[name]["images"]:
                continue
            cells, _, seconds, timed = run_variant(posterior, sampler, grid, [(position, image)], first, variant, args)
            records[name]["images"][str(position)] = {"cells": cells[0].tolist(), "seconds": seconds,
                                                      "posterior_seconds": timed.seconds,
                                                      "posterior_images": timed.images}
            write_json(work / "records" / f"{slug(name)}.json", records[name])
            log(f"image {position} {name}: {seconds:.1f} s ({timed.seconds / seconds:.0%} in forwards), "
                f"cells {cells[0].tolist()}")
    for name, rec in records.items():  # also as glimpse-sequence files, for anyone who wants to reuse them
        done = [int(p) for p in rec["images"]]
        cells = torch.tensor([rec["images"][str(p)]["cells"] for p in done])
        GlimpseSequences(DATASET, "val", grid.image_size, GLIMPSE, torch.tensor(done), grid.corners()[cells],
                         grid=grid, method="nogs",
                         provenance={"search": name, "completions": args.completions, "target_ess": args.target_ess,
                                     "seed": f"torch.Generator().manual_seed(position + {rec['seed_offset']})"}
                         ).save(work / "sequences" / slug(name))
    return records, one_off


def load_first_glimpse(args, work: Path, posterior, sampler, grid: LocationGrid, one_off: dict) -> FirstGlimpse:
    """The task's first cell (plain search, 4N prior samples, generator seed 0), computed once and kept."""
    path = work / "first-glimpse.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return FirstGlimpse(saved["cell"], torch.tensor(saved["epe_map"]))
    tic = time.perf_counter()
    first = first_glimpse(posterior, sampler, grid, 1, n_completions=4 * args.completions,
                          generator=torch.Generator().manual_seed(0))
    one_off["first_glimpse_seconds"] = time.perf_counter() - tic
    write_json(path, {"cell": first.cell, "epe_map": first.epe_map.tolist()})
    return first


def per_image_curves(model, val, grid: LocationGrid, rec: dict, positions: list[int]) -> dict[str, torch.Tensor]:
    """``{"accuracy", "entropy", "ce"}: [K, T + 1]`` of ``model`` along the record's sequences, one row per image."""
    table = torch.zeros(len(val), T, dtype=torch.long)
    for p in positions:
        table[p] = torch.tensor(rec["images"][str(p)]["cells"])
    rows = [posterior_curves(model, Subset(val, [p]), grid, T, sequences=table, batch_size=1) for p in positions]
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def summarise(args, records: dict, positions, grid, val, chooser, scorer) -> dict:
    pos = positions.tolist()
    plain = records["plain"]["images"]
    plain_cells = torch.tensor([plain[str(p)]["cells"] for p in pos])
    plain_seconds = sum(plain[str(p)]["seconds"] for p in pos)
    scored = {name: per_image_curves(scorer, val, grid, rec, pos) for name, rec in records.items()}
    out = {}
    for name, rec in records.items():
        imgs = [rec["images"][str(p)] for p in pos]
        seconds, fwd = sum(r["seconds"] for r in imgs), sum(r["posterior_seconds"] for r in imgs)
        cells = torch.tensor([r["cells"] for r in imgs])
        same = (cells[:, 1:] == plain_cells[:, 1:]).float()  # steps 2..T (step 1 is the task's)
        q, q0 = scored[name], scored["plain"]
        acc_T, h_mean = q["accuracy"][:, -1], q["entropy"][:, 1:].mean(1)
        d_acc = paired_bootstrap(acc_T - q0["accuracy"][:, -1], resamples=args.resamples)
        d_h = paired_bootstrap(h_mean - q0["entropy"][:, 1:].mean(1), resamples=args.resamples)
        chooser_acc = per_image_curves(chooser, val, grid, rec, pos)["accuracy"][:, -1]
        out[name] = {
            "search": rec["search"], "seed_offset": rec["seed_offset"], "images": len(pos),
            "seconds_per_image": seconds / len(pos), "sequences_per_minute": 60 * len(pos) / seconds,
            "speed_up": plain_seconds / seconds, "outside_forwards_share": 1 - fwd / seconds,
            "posterior_images_per_image": sum(r["posterior_images"] for r in imgs) / len(pos),
            "agreement_steps": float(same.mean()), "identical_sequences": float(same.all(1).float().mean()),
            "scorer": {"accuracy": q["accuracy"].mean(0).tolist(), "entropy": q["entropy"].mean(0).tolist(),
                       "ce": q["ce"].mean(0).tolist(), "accuracy_after_T": float(acc_T.mean()),
                       "entropy_mean_t1_T": float(h_mean.mean()),
                       "per_image": {"accuracy_after_T": acc_T.tolist(), "entropy_mean_t1_T": h_mean.tolist()}},
            "vs_plain": {"accuracy_after_T": d_acc, "entropy_mean_t1_T": d_h,
                         "within_noise": d_acc["contains_0"] and d_h["contains_0"]},
            "chooser_accuracy_after_T": float(chooser_acc.mean())}
    return out


def posterior_info(checkpoint: Path) -> dict:
    run = Path(checkpoint).parent.parent
    res = json.loads((run / "results.json").read_text())
    return {"checkpoint": str(checkpoint), "train_seed": res.get("training", {}).get("train_config", {}).get("seed"),
            "iterations": res.get("training", {}).get("iterations"),
            "training_wall_time_s": res.get("training", {}).get("wall_time_s"),
            "test_accuracy_after_T_random": res["test_accuracy"], "test_images": res.get("num_images"),
            "random_curve_seed": res.get("training", {}).get("train_config", {}).get("seed")}


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes in src/" if dirty else "")
    except OSError:
        return "unknown"


def fastest_within_noise(v: dict) -> tuple[str, dict]:
    ok = {n: r for n, r in v.items() if n not in NOT_A_SAVING and r["vs_plain"]["within_noise"]}
    name = max(ok, key=lambda n: ok[n]["speed_up"]) if ok else "plain"
    return name, v[name]


def table(r: dict, tag: str = "annotate-n64") -> str:
    s, v, po = r["setting"], r["variants"], r["posteriors"]
    K = len(s["images"]["positions"])
    ci = lambda d, f: f"{d['mean']:+{f}} [{d['ci95'][0]:+{f}}, {d['ci95'][1]:+{f}}]"  # noqa: E731
    lines = [f"# The annotator at N = {s['completions']} completions: plain vs each saving, quality by an "
             "independent posterior", "",
             f"{s['dataset']} 60x60, {s['glimpse_size']} px glimpses, grid stride {s['grid_stride']} "
             f"({s['grid_cells']} cells), T = {s['num_glimpses']}, target ESS {s['target_ess']}; {K} validation "
             f"images (positions {s['images']['positions'][0]}, {s['images']['positions'][1] if K > 1 else ''}, ..., "
             f"{s['images']['positions'][-1]}), the same images and per-image seeds for every variant; "
             f"{s['threads']} thread; torch {s['torch']}; code {s['git']}.", "",
             f"Chooser posterior (picks the cells): train.seed {po['chooser']['train_seed']}, "
             f"{po['chooser']['iterations']} iterations, {100 * po['chooser']['test_accuracy_after_T_random']:.1f} % "
             f"test accuracy after {s['num_glimpses']} random glimpses. Scorer (trained separately, train.seed "
             f"{po['scorer']['train_seed']}): {po['scorer']['iterations']} iterations, "
             f"{100 * po['scorer']['test_accuracy_after_T_random']:.1f} %.", "",
             "| search | sequences/min | s/image | speed-up | posterior images/image | outside forwards | "
             "same cell as plain (t=2..T) | identical sequences | scorer acc. after T | diff. vs plain [95 % CI] | "
             "scorer entropy, mean t=1..T | diff. vs plain [95 % CI] | within noise |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, x in v.items():
        d = x["vs_plain"]
        lines.append(f"| {name} | {x['sequences_per_minute']:.2f} | {x['seconds_per_image']:.2f} | "
                     f"{x['speed_up']:.1f}x | {x['posterior_images_per_image']:.0f} | "
                     f"{100 * x['outside_forwards_share']:.1f} % | {100 * x['agreement_steps']:.0f} % | "
                     f"{100 * x['identical_sequences']:.0f} % | {x['scorer']['accuracy_after_T']:.3f} | "
                     f"{'-' if name == 'plain' else ci(d['accuracy_after_T'], '.3f')} | "
                     f"{x['scorer']['entropy_mean_t1_T']:.3f} | "
                     f"{'-' if name == 'plain' else ci(d['entropy_mean_t1_T'], '.3f')} | "
                     f"{'-' if name == 'plain' else ('yes' if d['within_noise'] else 'no')} |")
    lines += ["", "## Scorer accuracy / entropy (nats) after t glimpses along each variant's sequences", "",
              "| search | " + " | ".join(f"acc t={t}" for t in range(1, T + 1)) + " | "
              + " | ".join(f"H t={t}" for t in range(1, T + 1)) + " |", "|---" * (2 * T + 1) + "|"]
    for name, x in v.items():
        lines.append(f"| {name} | " + " | ".join(f"{a:.3f}" for a in x["scorer"]["accuracy"][1:]) + " | "
                     + " | ".join(f"{a:.3f}" for a in x["scorer"]["entropy"][1:]) + " |")
    best, b = fastest_within_noise(v)
    verdict = "reaches the 10x target" if b["speed_up"] >= 10 else "does NOT reach the 10x target"
    worst = max(x["outside_forwards_share"] for x in v.values())
    one = r["one_off"]
    lines += ["", f"Fastest saving within noise of plain: **{best}, {b['speed_up']:.1f}x** "
              f"({b['sequences_per_minute']:.1f} vs {v['plain']['sequences_per_minute']:.2f} sequences/min): "
              f"{verdict}. "
              f"Largest share of time outside posterior forwards: {100 * worst:.1f} % (target <= 30 %).", "",
              f"Notes: one-off work shared by all variants and not in the timings: PCA of all cells "
              f"{one.get('pca_seconds', float('nan')):.0f} s (last start), first glimpse "
              f"{one.get('first_glimpse_seconds', float('nan')):.0f} s (plain, {4 * s['completions']} prior samples). "
              "\"within noise\": the 95 % percentile-bootstrap CIs (over images, paired with plain on the same "
              "image) of both differences contain 0; with this K they are wide, so \"within noise\" excludes only "
              "large losses. \"plain, other seeds\" is the plain search's numbers (computed by local updates, "
              "exact) with other completions: its rows show how much plain differs from itself. Posterior images "
              "per image count the distinct completions the sampler returns (at most N per step; resampling "
              "merges duplicates)."]
    lines += ["", f"Command: `{r.get('command', 'not recorded')}`", "",
              f"This file is remade from `{tag}.json` by "
              f"`.venv/bin/python benchmarks/annotator/annotate_speed.py --tag {tag} --report-only`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
