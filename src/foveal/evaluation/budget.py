r"""Budgeted evaluation: accuracy against glimpses, area seen and multiply-adds, with and without early exit.

For one model (and the policy that drives it) on one split, :func:`budget_evaluation` reports

* **fixed T**: for t = 1..T, the accuracy after t glimpses, the fraction of the image seen and the MACs per
  image, from one fixed-T rollout (the prediction after t glimpses depends on the first t only);
* **early exit**: for every threshold of an exit rule (:mod:`foveal.models.early_exit`), a rollout that stops
  each image once the rule fires and looks again only at the undecided ones; its accuracy, the mean and the
  distribution of the glimpses taken, the fraction of the image seen and the MACs per image
  ``fixed + mean glimpses x per glimpse`` (:mod:`foveal.evaluation.cost`).

"Fraction seen" is the union of the finest-scale patches of the glimpses taken (the model's ``glimpse_size``;
for a grid model, the cell's receptive field), as the Saccader paper's accuracy against area.

Records first: the summary is a JSON-able dict; :func:`write_budget` makes ``budget.{json,csv,md}`` and the two
figures from it alone (``plot_budget`` reads the JSON).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from foveal.evaluation.cost import glimpse_cost
from foveal.models.early_exit import make_exit_rule, supports_early_exit, truncate_rollout
from foveal.policies.basic import greedy_policy
from foveal.retina import observation_mask

__all__ = ["budget_evaluation", "exit_summary", "write_budget", "plot_budget", "budget_table"]


def _area(locations: torch.Tensor, image_size: tuple[int, int], size: int) -> torch.Tensor:
    """``[B, t, 2]`` -> ``[B]`` fraction of the image inside the union of the patches (float64: pixel counts are
    exact, so the same union gives the same number however it was computed)."""
    return observation_mask(locations, image_size, size).sum((1, 2, 3)).double() / (image_size[0] * image_size[1])


def exit_summary(glimpses: np.ndarray, correct: np.ndarray, area: np.ndarray, max_glimpses: int,
                 cost: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The numbers of one early-exit pass from per-image glimpses ``[N]``, correctness ``[N]`` and area ``[N]``."""
    mean = float(np.mean(glimpses))
    out = {"accuracy": float(np.mean(correct)), "mean_glimpses": mean,
           "glimpse_histogram": np.bincount(glimpses, minlength=max_glimpses + 1)[1:].tolist(),
           "area": float(np.mean(area)), "num_images": int(len(glimpses))}
    if cost is not None:
        out["macs_per_image"] = cost["fixed_macs"] + mean * cost["macs_per_glimpse"]
    return out


@torch.no_grad()
def budget_evaluation(model: nn.Module, dataset: Dataset, *, rule: str, thresholds: Sequence[float],
                      max_glimpses: int, policy: Optional[Callable] = None, batch_size: int = 250,
                      device: str | torch.device = "cpu", limit: Optional[int] = None, seed: int = 0,
                      label: Optional[str] = None, fixed_curve: bool = True) -> dict[str, Any]:
    """Fixed-T and early-exit numbers of ``model`` under ``policy`` (default greedy) on ``dataset``.

    Args:
        rule: an exit rule name (``confidence``, ``entropy``, ``learned``); one pass per threshold.
        max_glimpses: T, the most glimpses an image may take.
        limit: the first ``limit`` items only (None: all).
        seed: torch is seeded before every pass, so that a random policy draws the same in each.
        fixed_curve: also make the fixed-T curve (one more pass); False leaves ``fixed`` empty.

    Returns:
        ``{"label", "rule", "max_glimpses", "cost", "fixed": [per t], "exit": [per threshold]}`` (module
        docstring); ``exit[i]["subset_rollout"]`` says whether stopped images were really dropped from the batch
        (the model's ``rollout`` takes ``exit_rule``) or the fixed rollout was truncated (a model of one's own).
    """
    rules = [make_exit_rule(rule, t) for t in thresholds]  # a bad name or threshold is refused first
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    cfg = model.config
    image_size, size = tuple(cfg.image_size), int(cfg.glimpse_size)
    policy = policy or greedy_policy
    image_shape = tuple(dataset[0]["image"].shape)
    cost = glimpse_cost(model, image_shape, policy=policy, device=device).as_dict()
    subset = supports_early_exit(model)

    def passes(exit_rule):
        torch.manual_seed(seed)
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            images, labels = batch["image"].to(device), batch["label"].to(device)
            if exit_rule is None or subset:
                ro = model.rollout(images, max_glimpses, policy=policy,
                                   **({} if exit_rule is None else {"exit_rule": exit_rule}))
            else:
                ro = truncate_rollout(model.rollout(images, max_glimpses, policy=policy), exit_rule)
            yield ro, labels

    correct_t, area_t = [], []
    for ro, labels in passes(None) if fixed_curve else ():
        correct_t.append((ro.logits.argmax(-1) == labels[:, None]).cpu())  # [B, T]
        B, T = ro.locations.shape[:2]
        single = observation_mask(ro.locations.reshape(B * T, 1, 2), image_size, size).view(B, T, -1)
        union = single.cummax(1).values.sum(-1).double() / (image_size[0] * image_size[1])
        area_t.append(union.cpu())  # [B, T] fraction inside the union of the first t patches
    fixed = []
    if fixed_curve:
        correct, area = torch.cat(correct_t).numpy(), torch.cat(area_t).numpy()  # means as in exit_summary
        fixed = [{"glimpses": t + 1, "accuracy": float(np.mean(correct[:, t])), "area": float(np.mean(area[:, t])),
                  "macs_per_image": cost["fixed_macs"] + (t + 1) * cost["macs_per_glimpse"]}
                 for t in range(max_glimpses)]
    exits = []
    for threshold, exit_rule in zip(thresholds, rules):
        glimpses, right, seen = [], [], []
        for ro, labels in passes(exit_rule):
            glimpses.append(ro.glimpses.cpu())
            right.append((ro.logits[:, -1].argmax(-1) == labels).cpu())
            seen.append(_area(ro.locations, image_size, size).cpu())  # padded steps repeat the last location
        entry = exit_summary(torch.cat(glimpses).numpy(), torch.cat(right).numpy(), torch.cat(seen).numpy(),
                             max_glimpses, cost)
        exits.append({"threshold": float(threshold), **entry, "subset_rollout": subset})
    model.train(was_training)
    return {"label": label or type(model).__name__, "rule": rule, "max_glimpses": max_glimpses,
            "num_images": len(dataset), "glimpse_size": size, "cost": cost, "fixed": fixed, "exit": exits}


def budget_table(summary: dict[str, Any]) -> str:
    """Markdown: per method, the fixed-T rows then the early-exit rows (accuracy %, glimpses, area, MMACs)."""
    lines = ["| method | setting | accuracy % | mean glimpses | glimpses 1..T | area seen % | MMACs / image |",
             "|---|---|---|---|---|---|---|"]
    for m in summary["methods"]:
        for f in m["fixed"]:
            lines.append(f"| {m['label']} | fixed T = {f['glimpses']} | {100 * f['accuracy']:.1f} | {f['glimpses']} | "
                         f"| {100 * f['area']:.1f} | {f['macs_per_image'] / 1e6:.2f} |")
        op = "<=" if m["rule"] == "entropy" else ">="  # stop when entropy falls to / confidence reaches it
        for e in m["exit"]:
            hist = " ".join(str(c) for c in e["glimpse_histogram"])
            lines.append(f"| {m['label']} | {m['rule']} {op} {e['threshold']:g} | {100 * e['accuracy']:.1f} | "
                         f"{e['mean_glimpses']:.2f} | {hist} | {100 * e['area']:.1f} | "
                         f"{e['macs_per_image'] / 1e6:.2f} |")
    return "\n".join(lines) + "\n"


def write_budget(summary: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """``budget.json``, ``budget.csv``, ``budget.md`` and the figures of ``{"methods": [budget_evaluation, ...]}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "budget.json", out / "budget.csv", out / "budget.md"]
    paths[0].write_text(json.dumps(summary, indent=2))
    with open(paths[1], "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["method", "rule", "threshold", "accuracy", "mean_glimpses", "glimpse_histogram", "area",
                    "macs_per_image"])
        for m in summary["methods"]:
            for e in m["fixed"]:
                w.writerow([m["label"], "fixed", "", f"{e['accuracy']:.4f}", e["glimpses"], "", f"{e['area']:.4f}",
                            f"{e['macs_per_image']:.0f}"])
            for e in m["exit"]:
                w.writerow([m["label"], m["rule"], e["threshold"], f"{e['accuracy']:.4f}", f"{e['mean_glimpses']:.4f}",
                            " ".join(map(str, e["glimpse_histogram"])), f"{e['area']:.4f}",
                            f"{e['macs_per_image']:.0f}"])
    paths[2].write_text(budget_table(summary))
    return paths + plot_budget(paths[0], out / "figures")


def plot_budget(record: str | Path, out_dir: str | Path) -> list[Path]:
    """``budget_accuracy_vs_glimpses.png`` and ``budget_accuracy_vs_macs.png`` from a ``budget.json``: per method,
    the fixed-T curve (dashed) and the early-exit curve over the thresholds (solid)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = json.loads(Path(record).read_text())
    paths = []
    for key, xlabel, name in (("glimpses", "mean glimpses per image", "budget_accuracy_vs_glimpses.png"),
                              ("macs", "multiply-adds per image (millions)", "budget_accuracy_vs_macs.png")):
        fig = Figure(figsize=(9, 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        for i, m in enumerate(summary["methods"]):
            colour = f"C{i % 10}"
            fx = [f["glimpses"] if key == "glimpses" else f["macs_per_image"] / 1e6 for f in m["fixed"]]
            if fx:
                ax.plot(fx, [f["accuracy"] for f in m["fixed"]], "--", marker="o", markersize=3, color=colour,
                        label=f"{m['label']}: fixed T")
            ex = sorted(m["exit"], key=lambda e: e["mean_glimpses"])
            xs = [e["mean_glimpses"] if key == "glimpses" else e["macs_per_image"] / 1e6 for e in ex]
            ax.plot(xs, [e["accuracy"] for e in ex], "-", marker="s", markersize=4, color=colour,
                    label=f"{m['label']}: early exit ({m['rule']})")
        ax.set(xlabel=xlabel, ylabel="accuracy")
        if key == "macs":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes: curves stay visible
        path = Path(out_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130, format="png", facecolor="white")
        paths.append(path)
    return paths
