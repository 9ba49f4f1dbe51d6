"""The annotator's cost on a GPU: posterior forwards per second and seconds per image for DenseNet-121 at
224 px on a 50 x 50 grid (the paper's CelebA-HQ setting), plain search and with the annotator's savings,
fp32 vs bf16, eager vs compiled (``NetworkPosterior(compile=True)``, ``foveal annotate --compile``), NCHW vs
channels-last; and the bank search's step on the CPU against the same on the device.

    .venv/bin/python benchmarks/gpu/gpu_posterior.py                    # on a GPU machine, ~10-15 min
    .venv/bin/python benchmarks/gpu/gpu_posterior.py --smoke            # anywhere: tiny sizes, checks it runs

``--smoke`` times fp32-eager, fp32-compiled and bf16-eager-cl on 32 px images: on one CPU thread about
5 min the first time, nearly all of it compiling DenseNet-121, 1.5 min once the compile cache is warm
(``--variants fp32-eager bf16-eager-cl``: under a minute; without a C++ compiler on a CPU the compiled
variants are left out).

For each variant the benchmark times ``NetworkPosterior.logits`` (masked input -> DenseNet-121 -> logits, as
the EPE search calls it) on batches of ``--batch`` masked images, after warm-up (and compilation), and converts
the rate to seconds per image with the search's forward count: the plain search scores every one of the
G = 2,500 cells with every one of the N = 200 completions at each of the T - 1 = 4 steps after the first
glimpse (which is the same for every image of a task and computed once), ``(T - 1) G N`` = 2.0 M forwards per
image; the savings (``SearchConfig``: screen every cell with the ``--screen`` heaviest completions, re-score
the best ``--top-k`` with all N) need ``(T - 1) (G n_s + k N)`` forwards. A check step runs one real
``search_step`` with a few completions and compares its time with the rate's prediction (the overhead of
masks, entropies and bookkeeping).

The bank search (``--bank-images`` > 0) is timed apart: a bank of random images in memory (the paper's
1.5 M-image GAN bank is not part of this benchmark; the PCA stage scales with the bank, the exact stage with
``n_proposals``), one ``BankSampler`` on the CPU and one on the device, each asked for the weighted candidates
of an observation of ``--steps`` cells (PCA fits done before the timing; they are made once per cell).
The paper: about 1,440 GPU-seconds per image.

Writes benchmarks/gpu/<tag>.{md,json} (``--smoke``: <tag>-smoke).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from foveal.boed.bank import ImageBank
from foveal.boed.completion import BankSampler
from foveal.boed.epe import SearchConfig, search_step
from foveal.boed.posterior import NetworkPosterior
from foveal.models import create_model
from foveal.retina import LocationGrid, cell_masks
from foveal.runtime import resolve_device

VARIANTS = ["fp32-eager", "fp32-compiled", "bf16-eager", "bf16-compiled", "bf16-eager-cl", "bf16-compiled-cl"]
SMOKE_VARIANTS = ["fp32-eager", "fp32-compiled", "bf16-eager-cl"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_rate(posterior: NetworkPosterior, images: torch.Tensor, masks: torch.Tensor, seconds: float) -> float:
    """Masked images per second through ``posterior.logits`` (synchronised on the GPU)."""
    for _ in range(3):  # warm-up (and compilation)
        posterior.logits(images, masks)
    _sync(posterior.device)
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        posterior.logits(images, masks)
        count += 1
    _sync(posterior.device)
    return count * len(images) / (time.perf_counter() - start)


def posterior_row(variant: str, args, device: torch.device, grid: LocationGrid, images, masks, plain: int,
                  saving: int) -> dict:
    """One variant (``<fp32|bf16>-<eager|compiled>[-cl]``): its forward rate, s/image and a real search step."""
    precision, mode, *layout = variant.split("-")
    if mode not in ("eager", "compiled") or precision not in ("fp32", "bf16") or layout not in ([], ["cl"]):
        raise ValueError(f"--variants: expected <fp32|bf16>-<eager|compiled>[-cl], found {variant!r}")
    H, W = grid.image_size
    G, N = len(grid), args.completions
    network = create_model("posterior-densenet121", in_channels=3, num_classes=args.classes, image_size=(H, W),
                           multilabel=True).to(device).eval()
    posterior = NetworkPosterior(network, device=device, precision=precision, channels_last=bool(layout),
                                 compile=mode == "compiled")
    tic = time.perf_counter()
    posterior.logits(images, masks)  # the first call: compilation, for a compiled variant
    _sync(device)
    first_call = time.perf_counter() - tic
    rate = forward_rate(posterior, images, masks, args.seconds)
    # a real search step with a few completions: its time against the rate's prediction (the step's last
    # batch is smaller: a compiled variant compiles once more here, so that call is made before the timing)
    few = min(N, args.check_completions)
    completions = torch.rand(few, 3, H, W, device=device)
    weights = torch.full((few,), 1.0 / few, device=device)
    observed = cell_masks(grid, device)[0]
    search_step(posterior, completions, weights, observed, grid, SearchConfig(), batch_size=args.batch)
    _sync(device)
    start = time.perf_counter()
    search_step(posterior, completions, weights, observed, grid, SearchConfig(), batch_size=args.batch)
    _sync(device)
    step = time.perf_counter() - start
    return {"variant": variant, "precision": precision, "mode": mode, "channels_last": bool(layout),
            "first_call_s": first_call, "forwards_per_s": rate, "plain_s_per_image": plain / rate,
            "savings_s_per_image": saving / rate, "check_step_s": step, "check_step_predicted_s": G * few / rate}


def bank_rows(args, device: torch.device, grid: LocationGrid) -> list[dict]:
    """The bank search's step (weighted candidates of an observation of ``--steps`` cells), on the CPU and on
    ``device``."""
    H, W = grid.image_size
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (args.bank_images, 3, H, W), dtype=torch.uint8, generator=g)
    bank = ImageBank(pixels.numpy(), flips=True, source="random")
    cells = torch.randperm(len(grid), generator=g)[:args.steps]
    observed = cell_masks(grid)[cells].amax(0)  # [1, H, W]
    image = torch.rand(3, H, W, generator=g) * observed
    rows = []
    for where in dict.fromkeys(["cpu", str(device)]):
        sampler = BankSampler(bank, grid, pca_components=32, n_proposals=min(args.proposals, len(bank)),
                              pca_fit_samples=min(4096, len(bank)), cache_cells=len(cells), device=where)
        tic = time.perf_counter()
        for cell in cells.tolist():
            sampler.cell_pca(cell)
        _sync(sampler.device)
        fit = (time.perf_counter() - tic) / len(cells)
        sampler.weighted_candidates(image.to(device), observed.to(device))  # warm-up
        times = []
        for _ in range(args.bank_repeats):
            tic = time.perf_counter()
            sampler.weighted_candidates(image.to(device), observed.to(device))
            _sync(sampler.device)
            times.append(time.perf_counter() - tic)
        rows.append({"device": where, "bank": len(bank), "proposals": sampler.n_proposals, "cells": len(cells),
                     "pca_fit_s_per_cell": fit, "search_s": min(times)})
        print(f"bank search on {where}: {min(times):.3f} s per step ({len(bank)} images, {len(cells)} cells, "
              f"{sampler.n_proposals} proposals), PCA fit {fit:.2f} s per cell", file=sys.stderr, flush=True)
    return rows


def _have_cxx() -> bool:
    """torch.compile's CPU backend builds C++: is a compiler on the PATH?"""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++", "cc"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--glimpse", type=int, default=16)
    ap.add_argument("--cells", type=int, default=50, help="grid cells per axis")
    ap.add_argument("--completions", type=int, default=200)
    ap.add_argument("--steps", type=int, default=4, help="search steps per image after the first glimpse (T - 1)")
    ap.add_argument("--screen", type=int, default=8, help="completions that screen every cell")
    ap.add_argument("--top-k", type=int, default=16, help="cells re-scored with all completions")
    ap.add_argument("--classes", type=int, default=40, help="40 CelebA attributes (multilabel)")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=15.0, help="timing per variant")
    ap.add_argument("--check-completions", type=int, default=8, help="completions of the check step")
    ap.add_argument("--variants", nargs="+", help="<fp32|bf16>-<eager|compiled>[-cl] (default: all six; "
                                                  "--smoke: " + " ".join(SMOKE_VARIANTS) + ")")
    ap.add_argument("--bank-images", type=int, default=8192, help="bank search timing: bank size before flips "
                                                                  "(0: skip it)")
    ap.add_argument("--proposals", type=int, default=1000, help="bank search: n_proposals")
    ap.add_argument("--bank-repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks that the script runs")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--tag", default="gpu_posterior")
    args = ap.parse_args()
    device = resolve_device(args.device, "--device")
    if args.smoke:
        args.size, args.glimpse, args.cells, args.completions, args.batch, args.seconds = 32, 8, 4, 4, 4, 0.2
        args.screen, args.top_k, args.check_completions = 2, 4, 2
        args.bank_images, args.proposals, args.bank_repeats = 64, 16, 2
        args.tag += "-smoke"
        args.variants = args.variants or SMOKE_VARIANTS
        if device.type == "cpu" and not _have_cxx():  # compiling on the CPU needs a C++ compiler
            args.variants = [v for v in args.variants if "compiled" not in v]
    args.variants = args.variants or VARIANTS
    torch.manual_seed(0)
    H = W = args.size
    grid = LocationGrid.from_count((H, W), args.glimpse, args.cells)
    G, N = len(grid), args.completions
    plain = args.steps * G * N
    saving = args.steps * (G * min(args.screen, N) + min(args.top_k, G) * N)
    images = torch.rand(args.batch, 3, H, W, device=device)
    masks = cell_masks(grid, device)[torch.randint(G, (args.batch,), device=device)]  # [B, 1, H, W]
    rows = []
    for variant in args.variants:
        row = posterior_row(variant, args, device, grid, images, masks, plain, saving)
        rows.append(row)
        print(f"{variant}: {row['forwards_per_s']:.0f} forwards/s, plain {row['plain_s_per_image']:.1f} s/image, "
              f"savings {row['savings_s_per_image']:.1f} s/image (first call {row['first_call_s']:.1f} s)",
              file=sys.stderr, flush=True)
    bank = bank_rows(args, device, grid) if args.bank_images > 0 else []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    report = {"command": " ".join([".venv/bin/python", *sys.argv]), "device": name, "torch": torch.__version__,
              "setting": {"image": H, "glimpse": args.glimpse, "grid": G, "completions": N, "steps": args.steps,
                          "screen": args.screen, "top_k": args.top_k, "batch": args.batch, "classes": args.classes},
              "forwards_per_image": {"plain": plain, "savings": saving}, "rows": rows, "bank_search": bank}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(report, indent=2))
    text = "\n".join(report_lines(report, args.cells)) + "\n"
    (args.out / f"{args.tag}.md").write_text(text)
    print(text, end="")


def report_lines(report: dict, cells: int) -> list[str]:
    """The Markdown report: every variant, eager against compiled side by side, the bank search."""
    s, rows = report["setting"], report["rows"]
    plain, saving = report["forwards_per_image"]["plain"], report["forwards_per_image"]["savings"]
    lines = [f"DenseNet-121 posterior on {report['device']} (torch {report['torch']}): {s['image']} px images, "
             f"{s['grid']} cells ({cells}x{cells}), N = {s['completions']}, T - 1 = {s['steps']} steps; forwards "
             f"per image: plain {plain:,}, savings (screen {s['screen']}, top {s['top_k']}) {saving:,}; batches of "
             f"{s['batch']}.", "",
             "| variant | forwards/s | plain s/image | savings s/image | first call s | check step s (predicted) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['forwards_per_s']:.0f} | {r['plain_s_per_image']:.1f} | "
              f"{r['savings_s_per_image']:.1f} | {r['first_call_s']:.1f} | {r['check_step_s']:.2f} "
              f"({r['check_step_predicted_s']:.2f}) |" for r in rows]
    pairs = {}
    for r in rows:
        pairs.setdefault((r["precision"], r["channels_last"]), {})[r["mode"]] = r
    both = {k: v for k, v in pairs.items() if len(v) == 2}
    if both:
        lines += ["", "Eager against compiled (s/image, plain / savings):", "",
                  "| precision | layout | eager forwards/s | compiled forwards/s | eager s/image | compiled s/image |",
                  "|---|---|---|---|---|---|"]
        for (precision, cl), v in both.items():
            e, c = v["eager"], v["compiled"]
            lines.append(f"| {precision} | {'channels-last' if cl else 'NCHW'} | {e['forwards_per_s']:.0f} | "
                         f"{c['forwards_per_s']:.0f} | {e['plain_s_per_image']:.1f} / {e['savings_s_per_image']:.1f} "
                         f"| {c['plain_s_per_image']:.1f} / {c['savings_s_per_image']:.1f} |")
    if report["bank_search"]:
        b = report["bank_search"][0]
        lines += ["", f"Bank search, one step (weighted candidates of {b['cells']} observed cells; a random bank of "
                      f"{b['bank']} images (flips included), {b['proposals']} proposals; PCA fits before the "
                      "timing):", "", "| device | s per step | PCA fit s per cell |", "|---|---|---|"]
        lines += [f"| {r['device']} | {r['search_s']:.3f} | {r['pca_fit_s_per_cell']:.2f} |"
                  for r in report["bank_search"]]
    lines += ["", f"Command: `{report['command']}`"]
    return lines


if __name__ == "__main__":
    main()
