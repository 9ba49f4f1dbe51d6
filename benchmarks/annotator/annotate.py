"""Near-optimal glimpse sequences (NOGS) on 60x60 cluttered Fashion-MNIST: quality against random and salient
sequences, and the annotator's speed, plain and with its savings.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/annotator/annotate.py                 # the reported run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/annotator/annotate.py --images 20 --speed-images 4 --iterations 300

Steps (each resumes: the posterior is an ordinary run folder, the bank and every sequence file are kept):

1. posterior: `foveal train-posterior --config posterior-cluttered-fashion-mnist` (12 px glimpses, T = 6,
   grid stride 4 = 13 x 13 cells) in <work>/posterior, or `--posterior CKPT`;
2. bank: the 55,000 training images plus their mirror images (110,000), <work>/bank.npy;
3. held-out images: K validation images at positions 2500, 2500 + s, ... (s = 2500 // K), in the half of
   the validation split that checkpoint selection (its first 1,280 images) never saw;
4. sequences: NOGS (the search settings of --nogs-variant), salient (greedy edge energy) and random (cells
   i.i.d. uniform; the curve averages 10 draws), as glimpse-sequence files in <work>/sequences/;
5. quality: accuracy and entropy of the posterior after t = 0..T glimpses along each method's sequences;
6. speed: on the first --speed-images images, every search variant from the same per-image seeds:
   sequences per minute, share of time outside the posterior's forward passes, and agreement of the
   chosen cells with the plain search; and NOGS on coarser grids (stride 6, 8) for the stride choice.

Writes benchmarks/annotator/annotate.{md,json} and annotate-*.png (Fig. 2 for two images, the curves).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from foveal.boed import NetworkPosterior, first_glimpse, greedy_sequence
from foveal.boed.bank import ImageBank
from foveal.boed.completion import BankSampler
from foveal.boed.epe import SearchConfig
from foveal.config import apply_overrides, load_config
from foveal.data import build_dataset
from foveal.evaluation.boed_plots import plot_epe_sequence, plot_posterior_curves
from foveal.evaluation.posterior_curves import posterior_curves
from foveal.recipes.run import load_model, train_run
from foveal.retina import LocationGrid
from foveal.runtime import speed_up_allocator
from foveal.sequences import MAKERS, GlimpseSequences, Target, random_cells

CONFIG, DATASET, T, GLIMPSE = "posterior-cluttered-fashion-mnist", "cluttered-fashion-mnist", 6, 12
VARIANTS = {  # name -> (SearchConfig, seed offset); "plain" first: the others are compared with it
    "plain": (SearchConfig(), 0),
    "plain, other seeds": (SearchConfig(), 10_000),  # the Monte-Carlo noise floor of the agreement
    "local": (SearchConfig(local_updates=True), 0),
    "prune 4/8": (SearchConfig(screen_completions=4, screen_top_k=8), 0),
    "local+prune 4/8": (SearchConfig(screen_completions=4, screen_top_k=8, local_updates=True), 0),
    "local+prune 8/16": (SearchConfig(screen_completions=8, screen_top_k=16, local_updates=True), 0),
    "local+prune 8/16+skip": (SearchConfig(screen_completions=8, screen_top_k=16, local_updates=True,
                                           skip_seen=True), 0),
}


class TimedPosterior:
    """A posterior that adds up the seconds spent in its forward passes (plain and local)."""

    def __init__(self, inner: NetworkPosterior) -> None:
        self.inner, self.multilabel, self.seconds, self.images = inner, inner.multilabel, 0.0, 0

    def logits(self, images, masks):
        tic = time.perf_counter()
        out = self.inner.logits(images, masks)
        self.seconds += time.perf_counter() - tic
        self.images += images.shape[0]
        return out

    def cell_logits(self, images, observed, grid, cells, image_index, *, batch_size=256):
        tic = time.perf_counter()
        out = self.inner.cell_logits(images, observed, grid, cells, image_index, batch_size=batch_size)
        self.seconds += time.perf_counter() - tic
        self.images += cells.shape[0]
        return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100, help="K held-out validation images (default: %(default)s)")
    ap.add_argument("--speed-images", type=int, default=8, help="images of the speed table (default: %(default)s)")
    ap.add_argument("--iterations", type=int, help="posterior training iterations (default: the config's)")
    ap.add_argument("--posterior", help="use this posterior checkpoint instead of training one")
    ap.add_argument("--completions", type=int, default=16, help="N completions per step (default: %(default)s)")
    ap.add_argument("--target-ess", type=float, default=0.02, help="BankSampler.target_ess (default: %(default)s)")
    ap.add_argument("--nogs-variant", default="local+prune 8/16", choices=list(VARIANTS))
    ap.add_argument("--strides", type=int, nargs="*", default=[6, 8], help="coarser grids to compare (speed set)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-annotate"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--tag", default="annotate")
    ap.add_argument("--report-only", action="store_true",
                    help="compute nothing: remake <tag>.md and <tag>-curves.png from <tag>.json")
    args = ap.parse_args()
    if args.report_only:
        report = json.loads((args.out / f"{args.tag}.json").read_text())
        (args.out / f"{args.tag}.md").write_text(table(report, args.tag))
        plot_posterior_curves(report, args.out / f"{args.tag}-curves.png")
        return
    speed_up_allocator()
    torch.set_num_threads(1)
    tic = time.perf_counter()
    checkpoint = args.posterior or train_posterior(args)
    model, info = load_model(checkpoint)
    model.eval()
    algo = info["config"]["algorithm"]
    grid = LocationGrid.from_stride((60, 60), GLIMPSE, algo["grid_stride"])
    val = build_dataset(DATASET, "val", canvas=60)
    step = max(1, 2500 // args.images)
    positions = torch.arange(2500, 2500 + step * args.images, step)[:args.images]
    bank = make_bank(args.work / "bank.npy")

    seqs, speed = {}, {}
    seqs["nogs"], speed = annotate_all(args, model, bank, grid, val, positions, checkpoint)
    for method in ("salient", "random"):
        path = args.work / "sequences" / method
        if not Path(f"{path}.json").exists():
            MAKERS.build(method, Target(val, positions, T, grid)).save(path)  # random: seed 0
        seqs[method] = GlimpseSequences.load(path)
    strides = stride_table(args, model, bank, val, positions[:args.speed_images], speed)
    strides = {str(algo["grid_stride"]): {"cells": len(grid),
                                         "sequences_per_minute": speed["variants"][args.nogs_variant]["sequences_per_minute"],
                                         **curve_of(model, val, positions[:args.speed_images],
                                                    seqs["nogs"].subset(args.speed_images))}, **strides}
    quality = curves(model, val, positions, grid, seqs)
    report = {"setting": {"dataset": DATASET, "image_size": [60, 60], "glimpse_size": GLIMPSE, "num_glimpses": T,
                          "grid_stride": algo["grid_stride"], "grid_cells": len(grid),
                          "completions": args.completions, "target_ess": args.target_ess,
                          "posterior": str(checkpoint), "posterior_model": info["model"],
                          "images": {"split": "val", "positions": positions.tolist()},
                          "nogs_variant": args.nogs_variant, "threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "curves": quality, "t": list(range(T + 1)), "dataset": DATASET, "split": "val",
              "num_images": len(positions), "speed": speed, "strides": strides,
              "wall_time_s": time.perf_counter() - tic,
              "command": " ".join(["OMP_NUM_THREADS=1", ".venv/bin/python", *sys.argv])}
    write(args, report, seqs, val)


def train_posterior(args, name: str = "posterior", overrides: tuple[str, ...] = ()) -> Path:
    """The posterior of CONFIG trained in <work>/<name> (resumed if killed); ``overrides`` e.g. another seed."""
    overrides = [*([f"train.iterations={args.iterations}"] if args.iterations else []), *overrides]
    run = args.work / name
    if not (run / "results.json").exists():
        log(f"== posterior -> {run}")
        train_run(apply_overrides(load_config(CONFIG), overrides), run)
    return run / "checkpoints" / "best"


def make_bank(path: Path) -> ImageBank:
    if not path.exists() or not path.with_suffix(".json").exists():
        log(f"== bank -> {path}")
        ImageBank.build(build_dataset(DATASET, "train", canvas=60), path, flips=True)
    return ImageBank.open(path)


def make_sampler(bank: ImageBank, grid: LocationGrid, args) -> tuple[BankSampler, float]:
    sampler = BankSampler(bank, grid, pca_components=32, n_proposals=1000, target_ess=args.target_ess,
                          cache_cells=len(grid))
    tic = time.perf_counter()
    for cell in range(len(grid)):
        sampler.cell_pca(cell)  # one-off: every cell's PCA, so that no variant pays for it
    return sampler, time.perf_counter() - tic


def run_variant(posterior, sampler, grid, images, first, variant, args, keep_maps=False):
    """Sequences of ``images`` (positions, tensors) with one search; per-image generators seeded by position."""
    search, offset = variant
    cells, maps, timed = [], [], TimedPosterior(posterior)
    tic = time.perf_counter()
    for position, image in images:
        seq = greedy_sequence(image, timed, sampler, grid, T, n_completions=args.completions, first_location=first,
                              keep_maps=keep_maps, search=search,
                              generator=torch.Generator().manual_seed(int(position) + offset))
        cells.append(seq.cells)
        maps.append(seq.epe_maps)
    seconds = time.perf_counter() - tic
    return torch.stack(cells), (torch.stack(maps) if keep_maps else None), seconds, timed


def annotate_all(args, model, bank, grid, val, positions, checkpoint):
    path = args.work / "sequences" / "nogs"
    speed_path = args.work / "speed.json"
    if Path(f"{path}.json").exists() and speed_path.exists():
        return GlimpseSequences.load(path), json.loads(speed_path.read_text())
    posterior = NetworkPosterior(model)
    sampler, pca_seconds = make_sampler(bank, grid, args)
    tic = time.perf_counter()
    first = first_glimpse(posterior, sampler, grid, 1, n_completions=4 * args.completions,
                          generator=torch.Generator().manual_seed(0))
    first_seconds = time.perf_counter() - tic
    images = [(int(p), val[int(p)]["image"]) for p in positions]
    k = args.speed_images
    speed = {"pca_seconds": pca_seconds, "first_glimpse_seconds": first_seconds, "speed_images": k, "variants": {}}
    chosen = {}
    for name, variant in VARIANTS.items():
        log(f"== speed: {name} on {k} images")
        cells, maps, seconds, timed = run_variant(posterior, sampler, grid, images[:k], first, variant, args,
                                                  keep_maps=name == "local")
        chosen[name] = cells
        same = (cells[:, 1:] == chosen["plain"][:, 1:]).float()  # steps 2..T (step 1 is shared)
        seqs = GlimpseSequences(DATASET, "val", grid.image_size, GLIMPSE, positions[:k], grid.corners()[cells],
                                grid=grid, method="nogs", epe_maps=None if maps is None else maps.view(k, T, *grid.shape),
                                provenance={"search": name, "exact_maps": True})
        if name == "local":  # exact maps (the plain method's numbers) for Fig. 2
            seqs.save(args.work / "sequences" / "nogs-exact-maps")
        quality = curve_of(model, val, positions[:k], seqs)
        speed["variants"][name] = {
            "search": vars(variant[0]), "seed_offset": variant[1], "accuracy_after_T": quality["accuracy"][-1],
            "entropy_after_T": quality["entropy"][-1],
            "seconds_per_image": seconds / k, "sequences_per_minute": 60 * k / seconds,
            "posterior_seconds_per_image": timed.seconds / k, "outside_posterior_share": 1 - timed.seconds / seconds,
            "posterior_images_per_image": timed.images / k, "agreement_steps": float(same.mean()),
            "agreement_first_step": float(same[:, 0].mean()), "identical_sequences": float(same.all(1).float().mean())}
        log(json.dumps({name: speed["variants"][name]}))
    log(f"== NOGS ({args.nogs_variant}) on {len(images)} images")
    cells, maps, seconds, timed = run_variant(posterior, sampler, grid, images, first, VARIANTS[args.nogs_variant],
                                              args, keep_maps=True)
    speed["nogs_run_outside_posterior_share"] = 1 - timed.seconds / seconds
    speed["nogs_run"] = {"variant": args.nogs_variant, "images": len(images), "seconds": seconds,
                         "sequences_per_minute": 60 * len(images) / seconds}
    seqs = GlimpseSequences(DATASET, "val", grid.image_size, GLIMPSE, positions, grid.corners()[cells], grid=grid,
                            method="nogs", epe_maps=maps.view(len(images), T, *grid.shape),
                            provenance={"posterior": str(checkpoint), "completions": args.completions,
                                        "target_ess": args.target_ess, "search": vars(VARIANTS[args.nogs_variant][0]),
                                        "seed": "torch.Generator().manual_seed(position)"})
    seqs.save(path)
    speed_path.write_text(json.dumps(speed, indent=1))
    return seqs, speed


def stride_table(args, model, bank, val, positions, speed) -> dict:
    """NOGS with the default variant on coarser grids: posterior accuracy after T and sequences per minute."""
    path = args.work / "strides.json"
    if path.exists():
        return json.loads(path.read_text())
    posterior = NetworkPosterior(model)
    images = [(int(p), val[int(p)]["image"]) for p in positions]
    table = {}
    for stride in args.strides:
        grid = LocationGrid.from_stride((60, 60), GLIMPSE, stride)
        sampler, _ = make_sampler(bank, grid, args)
        first = first_glimpse(posterior, sampler, grid, 1, n_completions=4 * args.completions,
                              generator=torch.Generator().manual_seed(0))
        log(f"== stride {stride}: {len(grid)} cells")
        cells, _, seconds, _ = run_variant(posterior, sampler, grid, images, first, VARIANTS[args.nogs_variant], args)
        seq = GlimpseSequences(DATASET, "val", grid.image_size, GLIMPSE, positions, grid.corners()[cells], grid=grid)
        table[str(stride)] = {"cells": len(grid), "sequences_per_minute": 60 * len(images) / seconds,
                         **curve_of(model, val, positions, seq)}
    path.write_text(json.dumps(table, indent=1))
    return table


def curve_of(model, val, positions, seqs: GlimpseSequences) -> dict:
    """Accuracy / entropy after t = 0..T along ``seqs`` (one cell index per glimpse, on a per-file grid)."""
    from torch.utils.data import Subset

    table = torch.zeros(len(val), T, dtype=torch.long)
    table[seqs.indices] = seqs.grid.corner_to_index(seqs.corners)
    out = posterior_curves(model, Subset(val, positions.tolist()), seqs.grid, T, sequences=table, batch_size=100)
    return {k: [float(v) for v in c] for k, c in out.items()}


def curves(model, val, positions, grid, seqs: dict) -> dict:
    out = {name: curve_of(model, val, positions, s) for name, s in seqs.items()}
    draws = []
    for seed in range(10):  # the random baseline is noisy on K images: average 10 draws
        cells = random_cells(len(positions), grid, T, generator=torch.Generator().manual_seed(seed))
        s = GlimpseSequences(DATASET, "val", grid.image_size, GLIMPSE, positions, grid.corners()[cells], grid=grid)
        draws.append(curve_of(model, val, positions, s))
    out["random"] = {k: [sum(d[k][t] for d in draws) / len(draws) for t in range(T + 1)] for k in draws[0]}
    out["random"]["draws"] = len(draws)
    return out


def write(args, report: dict, seqs: dict, val) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"{args.tag}.md").write_text(table(report, args.tag))
    plot_posterior_curves(report, args.out / f"{args.tag}-curves.png")
    nogs = GlimpseSequences.load(args.work / "sequences" / "nogs-exact-maps")
    for row in range(min(2, len(nogs))):
        image = val[int(nogs.indices[row])]["image"].numpy()
        plot_epe_sequence(nogs, image, args.out / f"{args.tag}-fig2-{row}.png", row=row)
    print(table(report, args.tag))


def table(r: dict, tag: str = "annotate") -> str:
    s = r["setting"]
    lines = [f"# Near-optimal glimpse sequences: {s['dataset']} 60x60, {s['glimpse_size']} px glimpses, T = {T}",
             "", f"Grid stride {s['grid_stride']} ({s['grid_cells']} cells), N = {s['completions']} completions, "
             f"bank = train split + mirrors, target ESS {s['target_ess']}; NOGS search: {s['nogs_variant']}; "
             f"{r['num_images']} validation images (positions {s['images']['positions'][0]}, "
             f"{s['images']['positions'][1] if len(s['images']['positions']) > 1 else ''}, ...); "
             f"{s['threads']} thread; total {r['wall_time_s'] / 60:.1f} min.", "",
             "## Posterior accuracy / entropy (nats) after t glimpses", "",
             "| method | " + " | ".join(f"t={t}" for t in range(1, T + 1)) + " |", "|---" * (T + 1) + "|"]
    for name, c in r["curves"].items():
        lines.append(f"| {name} acc | " + " | ".join(f"{a:.3f}" for a in c["accuracy"][1:]) + " |")
    for name, c in r["curves"].items():
        lines.append(f"| {name} H | " + " | ".join(f"{a:.3f}" for a in c["entropy"][1:]) + " |")
    sp = r["speed"]
    lines += ["", f"## Speed ({sp['speed_images']} images, one-off: PCA of all cells {sp['pca_seconds']:.0f} s, "
              f"first glimpse {sp['first_glimpse_seconds']:.1f} s)", "",
              "| search | sequences/min | s/image | posterior images/image | outside posterior | "
              "same cell as plain (steps 2..T) | identical sequences | accuracy after T | entropy after T |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, v in sp["variants"].items():
        lines.append(f"| {name} | {v['sequences_per_minute']:.1f} | {v['seconds_per_image']:.2f} | "
                     f"{v['posterior_images_per_image']:.0f} | {100 * v['outside_posterior_share']:.1f} % | "
                     f"{100 * v['agreement_steps']:.0f} % | {100 * v['identical_sequences']:.0f} % | "
                     f"{v['accuracy_after_T']:.3f} | {v['entropy_after_T']:.3f} |")
    run = sp["nogs_run"]
    lines += ["", f"NOGS run ({run['variant']}, {run['images']} images): {run['sequences_per_minute']:.1f} "
              f"sequences/min, {100 * sp['nogs_run_outside_posterior_share']:.1f} % outside the posterior."]
    lines += ["", "## Grid stride (NOGS, speed images)", "", "| stride | cells | sequences/min | accuracy after T |",
              "|---|---|---|---|"]
    for stride, v in r["strides"].items():
        lines.append(f"| {stride} | {v['cells']} | {v['sequences_per_minute']:.1f} | {v['accuracy'][-1]:.3f} |")
    lines += ["", "Notes: at t = 1 NOGS's glimpse is one cell for every image (nothing is seen yet, so the first choice "
              "cannot depend on the image), while salient looks at the image. \"plain, other seeds\" is the plain "
              "method with other random completions: its agreement with plain is the Monte-Carlo noise floor. "
              "\"local\" computes the same numbers as plain (exact up to float rounding). Quality columns of the "
              "speed table are on its few images only."]
    lines += ["", f"Command: `{r.get('command', 'not recorded')}`", "",
              f"This file and `{tag}-curves.png` are remade from `{tag}.json` by "
              f"`.venv/bin/python benchmarks/annotator/annotate.py --tag {tag} --report-only`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
