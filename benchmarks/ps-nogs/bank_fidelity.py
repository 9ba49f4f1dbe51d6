"""What a bank of real images costs in completion fidelity, against the paper's 1.5 M generator samples.

The annotator completes a partly seen image by importance-weighting bank images by how well they match the
glimpses seen so far (a Gaussian likelihood whose sigma^2 is set so that the weights' effective sample size is
``target_ess`` x 1,000 candidates). With few bank images near an observation, the completions either match
what was seen poorly, or (at a low target ESS) are few distinct images. This measures, along the strong
annotator's sequences of the first ``--images`` annotated images (train positions 0..), after t = 1..5
observed glimpses, for banks of 1/16, 1/4, 1/2 and all of the study's bank (train positions 2,000 on and their
mirrors, 106,000 images) and for both annotators' target ESS (0.02 today's, 0.2 the strong one):

* **observed-pixel error**: the weighted root-mean-square difference between the completions and the true image
  on the pixels seen (a random bank image's is the scale; an exact completion's would be 0);
* **same class**: the weighted share of completions of the true image's class (10 % for random images).

Distances are exact over all bank images (no PCA retrieval: the bank's fidelity, not the sampler's shortcut),
the candidates the 1,000 nearest, as the annotator keeps. The paper retrieves the same way, from 1.5 million GAN
samples per task (its section 4), 14x our bank: the trend over bank size, fitted linearly in log bank size and
read at 1.5 million (an extrapolation), is what the paper's bank would buy here.

    .venv/bin/python benchmarks/ps-nogs/bank_fidelity.py       # bank-fidelity.json, .md and .png here

One core, a few minutes (building the 53,000 cluttered images takes most of it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional

import torch

from foveal.boed.completion import ess_sigma2
from foveal.data import build_dataset
from foveal.sequences import GlimpseSequences

HERE = Path(__file__).resolve().parent
SEQUENCES = HERE / "annotations" / "nogs-strong" / "sequences"
BANK_START = 2000  # the study's bank: train positions 2,000 on (benchmarks/ps-nogs/pipeline.sh), with mirrors
FRACTIONS = (1 / 16, 1 / 4, 1 / 2, 1.0)
TARGETS = {"today's (ESS 0.02)": 0.02, "strong (ESS 0.2)": 0.2}


def completion_fidelity(distances: torch.Tensor, bank_labels: torch.Tensor, label: int, seen: int, target: float,
                        candidates: int = 1000) -> dict:
    """Weighted observed-pixel RMS error and same-class share (%) of the completions, from every bank image's
    squared distance ``[M]`` to the image on its ``seen`` observed pixels: the ``candidates`` nearest, weighted
    ``softmax(-d / sigma^2)`` at ESS ``target * candidates``."""
    near = torch.topk(distances, min(candidates, len(distances)), largest=False).indices
    d = distances[near].double()
    w = torch.softmax(-d / ess_sigma2(d, target), 0)
    return {"rmse": float(torch.sqrt((w * d).sum() / seen)), "same_class": 100 * float(w[bank_labels[near] == label].sum())}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "bank-fidelity")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    dataset = build_dataset("cluttered-fashion-mnist", "train", canvas=60)
    seqs = GlimpseSequences.load(SEQUENCES, dataset)
    positions = list(range(BANK_START, len(dataset)))
    print(f"building the bank: {len(positions)} images and their mirrors", file=sys.stderr)
    stored, labels = [], []
    for start in range(0, len(positions), 2000):
        items = dataset.__getitems__(positions[start:start + 2000])
        stored.append(torch.stack([item["image"] for item in items]))
        labels.append(torch.stack([item["label"] for item in items]))
    stored, labels = torch.cat(stored), torch.cat(labels)
    full = torch.cat([stored, stored.flip(-1)]).flatten(1)  # [2N, D]: mirrors after the images, as ImageBank
    full_labels = torch.cat([labels, labels])
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))  # nested random subsets
    g = seqs.glimpse_size
    T = seqs.num_glimpses
    n_images = min(args.images, len(seqs))
    items = dataset.__getitems__(seqs.indices[:n_images].tolist())
    subsets = {fraction: order[:round(fraction * len(full))] for fraction in FRACTIONS}
    values = {(f, name, t): {"rmse": [], "same_class": []} for f in FRACTIONS for name in TARGETS for t in range(1, T)}
    random_rmse = []
    for k, item in enumerate(items):
        image, label = item["image"].flatten(), int(item["label"])
        seen = torch.zeros(item["image"].shape, dtype=torch.bool)
        distances = torch.zeros(len(full))  # every bank image's squared distance on the pixels seen so far
        for t in range(1, T):  # glimpses 1..t seen: the completions that choose glimpse t + 1
            r, c = (int(v) for v in seqs.corners[k, t - 1])
            new = torch.zeros_like(seen)
            new[..., r:r + g, c:c + g] = True
            new &= ~seen
            seen |= new
            pixels = new.flatten().nonzero().squeeze(1)
            distances += (full[:, pixels] - image[pixels]).square().sum(1)
            n_seen = int(seen.sum())
            for fraction, keep in subsets.items():
                for name, target in TARGETS.items():
                    out = completion_fidelity(distances[keep], full_labels[keep], label, n_seen, target)
                    values[fraction, name, t]["rmse"].append(out["rmse"])
                    values[fraction, name, t]["same_class"].append(out["same_class"])
            pick = torch.randint(len(full), (200,), generator=torch.Generator().manual_seed(k * T + t))
            random_rmse.append(float(torch.sqrt(distances[pick].mean() / n_seen)))
        if (k + 1) % 20 == 0:
            print(f"{k + 1} of {n_images} images", file=sys.stderr)

    rows = []
    for (fraction, name, t), v in values.items():
        rmse, same = torch.tensor(v["rmse"]), torch.tensor(v["same_class"])
        rows.append({"bank": len(subsets[fraction]), "fraction": fraction, "annotator": name,
                     "target_ess": TARGETS[name], "glimpses_seen": t, "rmse": round(float(rmse.mean()), 4),
                     "rmse_sem": round(float(rmse.std() / math.sqrt(len(rmse))), 4),
                     "same_class": round(float(same.mean()), 1),
                     "same_class_sem": round(float(same.std() / math.sqrt(len(same))), 1)})
    result = {"images": n_images, "bank_full": len(full), "random_image_rmse": round(sum(random_rmse) / len(random_rmse), 4),
              "fits": fits(rows, len(full)), "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    figure(result, args.out.with_suffix(".png"))
    print(args.out.with_suffix(".md"))
    return 0


def fits(rows: list[dict], bank_full: int, paper: float = 1.5e6) -> list[dict]:
    """Least-squares line in log2(bank images) per annotator and glimpses seen: slope per doubling, value at the
    full bank and at the paper's 1.5 million."""
    out = []
    for name in TARGETS:
        for t in sorted({r["glimpses_seen"] for r in rows}):
            sel = [r for r in rows if r["annotator"] == name and r["glimpses_seen"] == t]
            x = torch.tensor([math.log2(r["bank"]) for r in sel], dtype=torch.float64)
            fit = {"annotator": name, "glimpses_seen": t}
            for key in ("rmse", "same_class"):
                y = torch.tensor([r[key] for r in sel], dtype=torch.float64)
                slope = float(((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum())
                at = lambda n: float(y.mean() + slope * (math.log2(n) - x.mean()))  # noqa: E731
                fit[f"{key}_per_doubling"] = round(slope, 4)
                fit[f"{key}_at_bank"] = round(at(bank_full), 4)
                fit[f"{key}_at_1.5M"] = round(at(paper), 4)
            out.append(fit)
    return out


def markdown(result: dict) -> str:
    lines = ["# Completion fidelity of a real-image bank", "",
             "Generated by `.venv/bin/python benchmarks/ps-nogs/bank_fidelity.py` (see its docstring): "
             f"{result['images']} annotated images along the strong annotator's sequences; mean over the images "
             "(+- standard error). Observed-pixel error is a root-mean-square over the pixels seen (pixels in "
             f"[0, 1]; a random bank image's: {result['random_image_rmse']:.3f}; an exact completion's: 0). Same class: "
             "weighted share of completions of the true class (random images: 10 %).", "",
             "## Per doubling of the bank, and read at the paper's 1.5 million images (log-linear fit, an "
             "extrapolation)", "",
             "| annotator | glimpses seen | error per doubling | same class per doubling (points) | error at 106,000 "
             "| at 1.5 M | same class at 106,000 | at 1.5 M |", "|---|---|---|---|---|---|---|---|"]
    for fit in result["fits"]:
        lines.append(f"| {fit['annotator']} | {fit['glimpses_seen']} | {fit['rmse_per_doubling']:+.4f} | "
                     f"{fit['same_class_per_doubling']:+.1f} | {fit['rmse_at_bank']:.3f} | {fit['rmse_at_1.5M']:.3f} | "
                     f"{fit['same_class_at_bank']:.1f} | {fit['same_class_at_1.5M']:.1f} |")
    lines += ["", "## Every bank size", "",
             "| bank images | annotator | glimpses seen | observed-pixel error | same class (%) |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['bank']:,} | {r['annotator']} | {r['glimpses_seen']} | {r['rmse']:.3f} +- {r['rmse_sem']:.3f} "
                     f"| {r['same_class']:.1f} +- {r['same_class_sem']:.1f} |")
    return "\n".join(lines) + "\n"


def figure(result: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in TARGETS:
        for t in (1, 3, 5):
            rows = [r for r in result["rows"] if r["annotator"] == name and r["glimpses_seen"] == t]
            style = "-" if "strong" in name else "--"
            x = [r["bank"] for r in rows]
            axes[0].plot(x, [r["rmse"] for r in rows], style, marker="o", label=f"{name}, {t} seen")
            axes[1].plot(x, [r["same_class"] for r in rows], style, marker="o", label=f"{name}, {t} seen")
    axes[0].axhline(result["random_image_rmse"], color="grey", lw=0.8, label="random bank image")
    axes[1].axhline(10, color="grey", lw=0.8, label="random bank image")
    for ax, title in zip(axes, ["observed-pixel RMS error (0 = an exact completion)", "completions of the true class (%)"]):
        ax.set_xscale("log")
        ax.set_xlabel("bank images")
        ax.set_title(title, fontsize=10)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
