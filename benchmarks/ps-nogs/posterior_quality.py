"""Is the annotator's posterior as accurate as the RAM it will teach, on the same glimpses?

    .venv/bin/python benchmarks/ps-nogs/posterior_quality.py \
        --posterior wide=benchmarks/ps-nogs/posteriors/wide/best \
        --ram benchmarks/ps-nogs/comparison/runs/ram/seed-0/checkpoints/best [--count 2000]

For the first ``--count`` test images of cluttered 60x60 Fashion-MNIST, every posterior network is scored
after t = 1..T glimpses of the grid's cells (the masked image it sees, as the annotator does), on two kinds
of locations: uniformly random cells (fixed generator; the distribution the posteriors were trained on) and
the cells each RAM run looks at under its greedy policy. Each RAM run is scored on its own glimpses as well
(its classifier after each glimpse). A posterior at least as accurate as RAM on RAM's own glimpses can judge
RAM's candidate glimpses; a weaker one teaches a weaker policy than the network already has.

Writes ``posterior-quality.json`` (read by ``report.py``) and ``posterior-quality.png`` beside this script.
Cost: about a minute per posterior and RAM run for 2,000 images on one core.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import torch

from foveal.data import build_dataset
from foveal.evaluation.sequence_quality import glimpse_model_curves, per_image_curves
from foveal.models import load_model
from foveal.sequences import Target, paired_bootstrap, policy_sequences
from foveal.retina import LocationGrid

HERE = Path(__file__).resolve().parent


def _named(text: str, flag: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"{flag}: expected NAME=CHECKPOINT, found {text!r}")
    return name, path


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posterior", action="append", required=True, metavar="NAME=CHECKPOINT",
                   help="a posterior network to score (repeat)")
    p.add_argument("--ram", action="append", default=[], metavar="[NAME=]CHECKPOINT",
                   help="a RAM (ram-grid) checkpoint whose greedy glimpses to score on (repeat)")
    p.add_argument("--count", type=int, default=2000, help="test images (the first ones)")
    p.add_argument("--num-glimpses", type=int, default=6)
    p.add_argument("--seed", type=int, default=0, help="the random cells' generator")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    dataset = build_dataset("cluttered-fashion-mnist", "test", canvas=60)
    images = torch.utils.data.Subset(dataset, range(min(args.count, len(dataset))))
    n, T = len(images), args.num_glimpses
    grid = LocationGrid.from_stride((60, 60), 12, 4)
    g = torch.Generator().manual_seed(args.seed)
    glimpse_sets = {"random cells": torch.stack([torch.randperm(len(grid), generator=g)[:T] for _ in range(n)])}
    rows, own_at_T = [], {}
    for k, text in enumerate(args.ram):
        name, path = _named(text, "--ram") if "=" in text else (f"RAM {k}", text)
        ram, _ = load_model(path)
        if getattr(ram, "grid", None) != grid:
            raise SystemExit(f"{path}: expected a ram-grid model on the 13x13 grid of 12 px cells every 4 px")
        seqs = policy_sequences(Target(dataset, list(range(n)), T), model=ram, policy="greedy")
        cells = grid.corner_to_index(seqs.corners)  # [n, T]
        glimpse_sets[f"{name}'s greedy cells"] = cells
        own = glimpse_model_curves(ram, images, grid, cells)["accuracy"][:, 1:]  # [n, T]
        own_at_T[f"{name}'s greedy cells"] = own[:, -1]
        rows.append({"scorer": f"{name} itself", "glimpses": f"{name}'s greedy cells",
                     "accuracy": own.mean(0).tolist(), "interval_at_T": paired_bootstrap(own[:, -1])["ci95"]})
    for text in args.posterior:
        name, path = _named(text, "--posterior")
        model, _ = load_model(path, kind="posterior")
        for label, cells in glimpse_sets.items():
            acc = per_image_curves(model.eval(), images, grid, cells)["accuracy"][:, 1:]
            row = {"scorer": f"posterior {name}", "glimpses": label, "accuracy": acc.mean(0).tolist(),
                   "interval_at_T": paired_bootstrap(acc[:, -1])["ci95"]}
            if label in own_at_T:  # the same images and cells: the posterior minus RAM, paired
                diff = paired_bootstrap(acc[:, -1] - own_at_T[label])
                row["minus_ram_at_T"] = {"mean": diff["mean"], "ci95": diff["ci95"]}
            rows.append(row)
    command = ".venv/bin/python benchmarks/ps-nogs/posterior_quality.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    data = {"command": command, "images": n, "steps": list(range(1, T + 1)), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "posterior-quality.json").write_text(json.dumps(data, indent=1) + "\n")
    _figure(data, args.out / "posterior-quality.png")
    for row in rows:
        diff = row.get("minus_ram_at_T")
        versus = (f"   minus RAM at T: {100 * diff['mean']:+.1f} [{100 * diff['ci95'][0]:+.1f}, "
                  f"{100 * diff['ci95'][1]:+.1f}]") if diff else ""
        print(f"{row['scorer']:>28} on {row['glimpses']:<28} " + " ".join(f"{100 * a:5.1f}" for a in row["accuracy"])
              + versus)
    return 0


def _figure(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    styles = {}
    for row in data["rows"]:
        color = styles.setdefault(row["scorer"], f"C{len(styles)}")
        dashed = row["glimpses"] == "random cells"
        ax.plot(data["steps"], [100 * a for a in row["accuracy"]], color=color, ls="--" if dashed else "-",
                marker="o", ms=3, label=f"{row['scorer']} on {row['glimpses']}")
    ax.set_xlabel("glimpses seen (t)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Posterior vs RAM on the same glimpses ({data['images']:,} test images, cluttered 60x60)\n"
                 "solid: RAM's greedy cells; dashed: uniformly random cells", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
