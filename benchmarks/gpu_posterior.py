"""The annotator's cost on a GPU: posterior forwards per second and seconds per image for DenseNet-121 at
224 px on a 50 x 50 grid (the paper's CelebA-HQ setting), plain search and with the annotator's savings,
fp32 vs bf16, eager vs compiled, NCHW vs channels-last.

    .venv/bin/python benchmarks/gpu_posterior.py                    # on a GPU machine, ~6 min
    .venv/bin/python benchmarks/gpu_posterior.py --smoke            # anywhere: tiny sizes, checks it runs

For each variant the benchmark times ``NetworkPosterior.logits`` (masked input -> DenseNet-121 -> logits, as
the EPE search calls it) on batches of ``--batch`` masked images, after warm-up, and converts the rate to
seconds per image with the search's forward count: the plain search scores every one of the G = 2,500 cells
with every one of the N = 200 completions at each of the T - 1 = 4 steps after the first glimpse (which is
the same for every image of a task and computed once), ``(T - 1) G N`` = 2.0 M forwards per image; the
savings (``SearchConfig``: screen every cell with the ``--screen`` heaviest completions, re-score the best
``--top-k`` with all N) need ``(T - 1) (G n_s + k N)`` forwards. A check step runs one real
``search_step`` with a few completions and compares its time with the rate's prediction (the overhead of
masks, entropies and bookkeeping). Completion sampling (the bank search) is not included: the paper's
1.5 M-image GAN bank is not part of this benchmark. The paper: about 1,440 GPU-seconds per image.

Writes benchmarks/results/<tag>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from foveal.boed.epe import SearchConfig, search_step
from foveal.boed.posterior import NetworkPosterior
from foveal.models import create_model
from foveal.retina import LocationGrid, cell_masks
from foveal.runtime import resolve_device


def forward_rate(posterior: NetworkPosterior, images: torch.Tensor, masks: torch.Tensor, seconds: float) -> float:
    """Masked images per second through ``posterior.logits`` (synchronised on the GPU)."""
    def sync():
        if posterior.device.type == "cuda":
            torch.cuda.synchronize(posterior.device)

    for _ in range(3):  # warm-up (and compilation)
        posterior.logits(images, masks)
    sync()
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        posterior.logits(images, masks)
        count += 1
    sync()
    return count * len(images) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
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
    ap.add_argument("--variants", nargs="+", default=["fp32-eager", "bf16-eager", "bf16-eager-cl", "bf16-compiled-cl"])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks that the script runs")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--tag", default="gpu_posterior")
    args = ap.parse_args()
    if args.smoke:
        args.size, args.glimpse, args.cells, args.completions, args.batch, args.seconds = 64, 16, 5, 4, 4, 0.2
        args.variants = ["fp32-eager", "bf16-eager-cl"]
    device = resolve_device(args.device, "--device")
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
        precision, mode, *layout = variant.split("-")
        network = create_model("posterior-densenet121", in_channels=3, num_classes=args.classes, image_size=(H, W),
                               multilabel=True).to(device).eval()
        if mode == "compiled":
            network = torch.compile(network)
        posterior = NetworkPosterior(network, device=device, precision=precision, channels_last=bool(layout))
        rate = forward_rate(posterior, images, masks, args.seconds)
        # a real search step with a few completions: its time against the rate's prediction
        few = min(N, 8)
        completions = torch.rand(few, 3, H, W, device=device)
        weights = torch.full((few,), 1.0 / few, device=device)
        observed = cell_masks(grid, device)[0]
        start = time.perf_counter()
        search_step(posterior, completions, weights, observed, grid, SearchConfig(), batch_size=args.batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step = time.perf_counter() - start
        rows.append({"variant": variant, "forwards_per_s": rate, "plain_s_per_image": plain / rate,
                     "savings_s_per_image": saving / rate, "check_step_s": step, "check_step_predicted_s": G * few / rate})
        print(f"{variant}: {rate:.0f} forwards/s, plain {plain / rate:.1f} s/image, savings {saving / rate:.1f} s/image",
              file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    report = {"command": " ".join([".venv/bin/python", *sys.argv]), "device": name, "torch": torch.__version__,
              "setting": {"image": H, "glimpse": args.glimpse, "grid": G, "completions": N, "steps": args.steps,
                          "screen": args.screen, "top_k": args.top_k, "batch": args.batch, "classes": args.classes},
              "forwards_per_image": {"plain": plain, "savings": saving}, "rows": rows}
    lines = [f"DenseNet-121 posterior on {name}: {H} px images, {G} cells ({args.cells}x{args.cells}), N = {N}, "
             f"T - 1 = {args.steps} steps; forwards per image: plain {plain:,}, savings (screen {args.screen}, "
             f"top {args.top_k}) {saving:,}. Posterior forwards only (no bank search).", "",
             "| variant | forwards/s | plain s/image | savings s/image | check step s (predicted) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['forwards_per_s']:.0f} | {r['plain_s_per_image']:.1f} | "
              f"{r['savings_s_per_image']:.1f} | {r['check_step_s']:.2f} ({r['check_step_predicted_s']:.2f}) |" for r in rows]
    lines += ["", f"Command: `{report['command']}`"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
