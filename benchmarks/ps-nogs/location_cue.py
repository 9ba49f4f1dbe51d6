"""Do supervision sequences teach a classifier to read the label off *where* it looks?

RAM's glimpse network takes the location as an input (``mix_where(where(l))``), and partial supervision forces
the annotated images' rollouts to the sequence's locations. A sequence chosen with knowledge the policy never has
(the hindsight references: the true image, or its label, picks the cells) may then carry the label in its
locations, and a network trained on it may learn a cue its own policy cannot reproduce at test time. This
measures that, on the 1,000 annotated training images, in two ways that do not involve the annotator's posterior:

* **Locations alone** (a probe): a multinomial logistic regression on the one-hot cells of the sequence, 5-fold
  cross-validated accuracy of the label. Glimpse 1 is the same cell on every image for all but label hindsight,
  so anything above the majority-class rate comes from cells 2-6, chosen after seeing glimpse 1 (NOGS, a policy)
  or the whole image (hindsight).
* **A trained network, images blanked**: each network rolled out on the annotated images forced to a sequence's
  locations with every pixel set to zero, so that the locations are all it gets; accuracy after the last glimpse.
  Beside it the same forced rollout on the real images, and the network's own greedy policy on them.

If the label does not travel through the locations, the other way a reference can fail as a teacher is that a
policy cannot reproduce it: the classifier then trains on glimpses its own policy never delivers. Two measures:

* **Imitation under teacher forcing**: the trained location network's mean negative log-likelihood of glimpses
  2-6 of each set, forced along the set (the term partial supervision minimises).
* **Free-running agreement**: how often the network's own greedy cells are the set's cells.

    .venv/bin/python benchmarks/ps-nogs/location_cue.py            # writes location-cue.json and .md here

One core, about two minutes. Intervals: 95 % bootstrap over the images (probe: over the folds' pooled predictions).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from foveal.data import build_dataset
from foveal.models import load_model
from foveal.policies import make_policy
from foveal.sequences import GlimpseSequences, paired_bootstrap

HERE = Path(__file__).resolve().parent
SEQUENCES = {  # name -> sequence file, as the comparison's methods use them
    "nogs": "annotations/nogs/sequences",
    "nogs-strong": "annotations/nogs-strong/sequences",
    "hindsight": "annotations/hindsight/sequences",
    "hindsight-label": "annotations/hindsight-label/sequences",
}
MODELS = {  # method -> the sequence set it was trained on (None: RAM, never forced)
    "ram": None, "ps-nogs": "nogs", "ps-nogs-strong-25": "nogs-strong", "ps-hindsight": "hindsight",
    "ps-hindsight-label-25": "hindsight-label",
}


def interval(correct: torch.Tensor) -> dict:
    """Mean of a 0/1 vector over images, with a 95 % bootstrap interval."""
    boot = paired_bootstrap(correct.float())
    low, high = boot["ci95"]
    return {"mean": round(100 * boot["mean"], 2), "low": round(100 * low, 2), "high": round(100 * high, 2),
            "n": int(correct.numel())}


def probe(cells: torch.Tensor, labels: torch.Tensor, num_cells: int, *, folds: int = 5, seed: int = 0,
          steps: int = 300, weight_decay: float = 1e-3) -> torch.Tensor:
    """Cross-validated predictions of a logistic regression on one-hot cells ``[N, T]`` -> correct ``[N]`` bool."""
    n, T = cells.shape
    x = F.one_hot(cells, num_cells).float().flatten(1)  # [N, T * cells]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    correct = torch.zeros(n, dtype=torch.bool)
    classes = int(labels.max()) + 1
    for k in range(folds):
        test = order[k::folds]
        train = torch.ones(n, dtype=torch.bool)
        train[test] = False
        w = torch.zeros(x.shape[1], classes, requires_grad=True)
        b = torch.zeros(classes, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def loss_fn():
            opt.zero_grad()
            loss = F.cross_entropy(x[train] @ w + b, labels[train]) + weight_decay * (w ** 2).sum()
            loss.backward()
            return loss

        opt.step(loss_fn)
        with torch.no_grad():
            correct[test] = (x[test] @ w + b).argmax(1) == labels[test]
    return correct


@torch.no_grad()
def rollout(model, images: torch.Tensor, labels: torch.Tensor, T: int, *,
            forced: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forced to ``forced`` ``[N, T, 2]``, or the model's own greedy policy: correct ``[N]`` after T glimpses,
    the location network's log-probability ``[N, T]`` of the cells looked at, and those cells' centres
    ``[N, T, 2]``."""
    model.eval()
    policy = make_policy("greedy", model=model)
    correct, log_prob, where = [], [], []
    for start in range(0, len(images), 250):
        part = slice(start, start + 250)
        ro = model.rollout(images[part], T, policy=policy, forced_locations=None if forced is None else forced[part])
        correct.append(ro.logits[:, -1].argmax(1) == labels[part])
        log_prob.append(ro.log_prob)
        where.append(ro.locations)
    return torch.cat(correct), torch.cat(log_prob), torch.cat(where)


def agreement(own: torch.Tensor, given: torch.Tensor) -> dict:
    """How often a free-running policy's cells ``[N, T, 2]`` are the sequence's: at glimpse 1, and over glimpses
    2-T (%)."""
    same = (own - given).abs().amax(-1) < 1e-4  # [N, T]
    return {"first": round(100 * float(same[:, 0].float().mean()), 1),
            "later": round(100 * float(same[:, 1:].float().mean()), 1)}


def imitation(log_prob: torch.Tensor) -> dict:
    """Mean negative log-likelihood (nats) of glimpses 2-T under the policy, and its perplexity in cells."""
    nll = -log_prob[:, 1:].mean(1).double()
    boot = paired_bootstrap(nll)
    return {"nll": round(boot["mean"], 3), "low": round(boot["ci95"][0], 3), "high": round(boot["ci95"][1], 3),
            "cells": round(float(torch.exp(nll.mean())), 1)}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "location-cue")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    dataset = build_dataset("cluttered-fashion-mnist", "train", canvas=60)
    sets = {name: GlimpseSequences.load(HERE / path, dataset) for name, path in SEQUENCES.items()}
    indices = sets["nogs"].indices
    for name, seqs in sets.items():
        if not torch.equal(seqs.indices, indices):
            raise SystemExit(f"{seqs.source}: expected the same images as {sets['nogs'].source}")
    items = dataset.__getitems__(indices.tolist())
    images = torch.stack([item["image"] for item in items])
    labels = torch.stack([item["label"] for item in items])
    blank = torch.zeros_like(images)
    T = sets["nogs"].num_glimpses
    grid = sets["nogs"].grid
    majority = interval(labels == labels.mode().values)
    print(f"{len(indices)} annotated images, {T} glimpses, majority class {majority['mean']:.1f} %", file=sys.stderr)

    result: dict = {"images": len(indices), "glimpses": T, "majority_class": majority, "probe": {}, "networks": [],
                    "not_found": []}
    for name, seqs in sets.items():
        cells = grid.corner_to_index(seqs.corners.long())  # [N, T], row-major as the policy's cells
        result["probe"][name] = {
            "first_cell_distinct": int(cells[:, 0].unique().numel()),
            "all_cells": interval(probe(cells, labels, len(grid))),
            "cells_2_to_T": interval(probe(cells[:, 1:], labels, len(grid))),
        }
        print(f"probe {name}: {result['probe'][name]}", file=sys.stderr)

    runs = HERE / "comparison" / "runs"
    for method, trained_on in MODELS.items():
        for seed in args.seeds:
            ckpt = runs / method / f"seed-{seed}" / "checkpoints" / "best"
            if not (Path(f"{ckpt}.json").exists() and (ckpt.parent.parent / "results.json").exists()):
                # a best checkpoint not kept (git keeps RAM's and two of PS-NOGS's), or a run still in progress
                result["not_found"].append(f"{method} seed {seed}")
                print(f"{ckpt}: not found, or its run is unfinished; left out", file=sys.stderr)
                continue
            model, _ = load_model(ckpt)
            own_correct, _, own_cells = rollout(model, images, labels, T)
            row = {"method": method, "seed": seed, "trained_on": trained_on, "own_greedy": interval(own_correct),
                   "forced": {}, "blank": {}, "imitation": {}, "agreement": {}}
            for name, seqs in sets.items():
                forced = seqs.locations().to(images)
                row["agreement"][name] = agreement(own_cells, forced)
                correct, log_prob, _ = rollout(model, images, labels, T, forced=forced)
                row["forced"][name] = interval(correct)
                row["imitation"][name] = imitation(log_prob)
                row["blank"][name] = interval(rollout(model, blank, labels, T, forced=forced)[0])
            result["networks"].append(row)
            print(f"{method} seed {seed}: own greedy {row['own_greedy']['mean']:.1f}, blank "
                  + ", ".join(f"{k} {v['mean']:.1f}" for k, v in row["blank"].items()) + "; imitation NLL "
                  + ", ".join(f"{k} {v['nll']:.2f}" for k, v in row["imitation"].items()), file=sys.stderr)

    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(args.out.with_suffix(".md"))
    return 0


def _cell(v: dict) -> str:
    return f"{v['mean']:.1f} [{v['low']:.1f}, {v['high']:.1f}]"


def markdown(result: dict) -> str:
    names = list(result["probe"])
    lines = ["# Location cue: can the label be read off where the supervision sequences look?", "",
             "Generated by `.venv/bin/python benchmarks/ps-nogs/location_cue.py` (see its docstring). "
             f"{result['images']} annotated training images, {result['glimpses']} glimpses; accuracy in %, "
             "95 % bootstrap interval over the images. Majority class: "
             f"{result['majority_class']['mean']:.1f} %."
             + (" Left out, their best checkpoint not found: " + ", ".join(result["not_found"]) + "."
                if result.get("not_found") else ""), "",
             "## Locations alone: logistic regression on the sequence's cells, 5-fold cross-validated", "",
             "| sequences | distinct first cells | all cells | cells 2-6 |", "|---|---|---|---|"]
    for name, p in result["probe"].items():
        lines.append(f"| {name} | {p['first_cell_distinct']} | {_cell(p['all_cells'])} | {_cell(p['cells_2_to_T'])} |")
    lines += ["", "## Trained networks on the annotated images: blanked images forced to each sequence set's "
              "locations (the locations are all the network gets), and its own greedy policy on the real images", "",
              "| network | seed | trained on | own greedy | " + " | ".join(f"blank, {n}" for n in names) + " |",
              "|---|---|---|---|" + "---|" * len(names)]
    for row in result["networks"]:
        lines.append(f"| {row['method']} | {row['seed']} | {row['trained_on'] or '-'} | {_cell(row['own_greedy'])} | "
                     + " | ".join(_cell(row["blank"][n]) for n in names) + " |")
    lines += ["", "## How well a trained policy predicts each set's cells: mean negative log-likelihood (nats) of "
              "glimpses 2-6 under the network's location network, forced along the set on the real images "
              "(in brackets: the perplexity, the number of equally likely cells it amounts to)", "",
              "| network | seed | trained on | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for row in result["networks"]:
        lines.append(f"| {row['method']} | {row['seed']} | {row['trained_on'] or '-'} | "
                     + " | ".join(f"{row['imitation'][n]['nll']:.2f} ({row['imitation'][n]['cells']:.0f})"
                                  for n in names) + " |")
    lines += ["", "## Does the free-running policy reproduce the sequences? Share of the network's own greedy cells that "
              "are the set's cells, at glimpse 1 / over glimpses 2-6 (%), on the annotated images it was supervised on",
              "", "| network | seed | trained on | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for row in result["networks"]:
        lines.append(f"| {row['method']} | {row['seed']} | {row['trained_on'] or '-'} | "
                     + " | ".join(f"{row['agreement'][n]['first']:.0f} / {row['agreement'][n]['later']:.0f}"
                                  for n in names) + " |")
    lines += ["", "## Forced to each set's locations on the real images: accuracy after the last glimpse", "",
              "| network | seed | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for row in result["networks"]:
        lines.append(f"| {row['method']} | {row['seed']} | " + " | ".join(_cell(row["forced"][n]) for n in names) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
