r"""Policy evaluation (the Saccader paper's Fig. 3a, 5a, 5b): accuracy vs glimpses, vs area, under occlusion.

A *method* is a glimpse model and the policy that drives it: an engineered policy on a shared grid
classifier (random, ordered logits, Sobel on a BagNet-lowD), a learned model with its own policy and
classifier (Saccader, DRAM), or a learned policy on the shared classifier. Every method is rolled out
once for ``T_max`` glimpses on the same images; since the prediction after t glimpses only depends
on the first t (the logits are averaged over time, or the recurrent state has seen t glimpses), one
rollout gives all t = 1..T_max. For each image and t the record keeps

* the prediction after t glimpses (accuracy vs number of glimpses, Fig. 3a);
* the fraction of the image covered by the union of the first t glimpses' patches
  (:func:`foveal.retina.observation_mask` with the model's finest glimpse size; accuracy vs area, Fig. 5a);
* optionally, the prediction of a full-image CNN on the image with those t patches set to zero
  (occlusion analysis after Zeiler & Fergus 2014, Fig. 5b: the better the policy, the lower this accuracy).

Records first: one glimpse record per method (``records/<method>.npz``,
:func:`foveal.evaluation.records.save_glimpse_record` with ``extra/predictions_per_glimpse``,
``extra/area`` and ``extra/occluded_predictions``, each ``[N, T_max]``); :func:`summarise` and
:func:`write_reports` make the JSON, CSV, Markdown and PNG files from the records alone.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from foveal.config import slug
from foveal.evaluation.glimpse_plots import plot_glimpse_examples
from foveal.evaluation.records import load_glimpse_record, save_glimpse_record
from foveal.policies.basic import greedy_policy
from foveal.retina import observation_mask

__all__ = ["Method", "evaluate_methods", "summarise", "write_reports", "example_figures",
           "markdown_table", "cumulative_area"]


@dataclass
class Method:
    """A glimpse model and the policy that drives its rollout (None: the model's own greedy policy)."""

    label: str
    model: nn.Module
    policy: Optional[Callable] = None


def cumulative_area(locations: Tensor, image_size: tuple[int, int], size: int) -> Tensor:
    """``[B, T, 2]`` -> ``[B, T, H, W]`` union of the patches of glimpses ``1..t`` (1 = covered), float."""
    B, T = locations.shape[:2]
    single = observation_mask(locations.reshape(B * T, 1, 2), image_size, size).view(B, T, *image_size)
    return single.cummax(dim=1).values


@torch.no_grad()
def _rollout_method(method: Method, images: Tensor, max_glimpses: int, occluder: Optional[nn.Module]
                    ) -> dict[str, Tensor]:
    model = method.model
    ro = model.rollout(images, max_glimpses, policy=method.policy or greedy_policy)
    cfg = model.config
    union = cumulative_area(ro.locations, tuple(images.shape[2:]), int(cfg.glimpse_size))  # [B, T, H, W]
    out = {"locations": ro.locations, "log_prob": ro.log_prob, "predictions_per_glimpse": ro.logits.argmax(-1),
           "area": union.mean((2, 3))}
    if occluder is not None:
        occluded = images[:, None] * (1 - union[:, :, None])  # [B, T, C, H, W]: patches of glimpses 1..t zeroed
        logits = occluder(occluded.flatten(0, 1)).view(images.shape[0], max_glimpses, -1)
        out["occluded_predictions"] = logits.argmax(-1)
    return out


def evaluate_methods(methods: Sequence[Method], dataset: Dataset, out_dir: str | Path, *, max_glimpses: int,
                     batch_size: int = 250, device: str | torch.device = "cpu", limit: Optional[int] = None,
                     occluder: Optional[nn.Module] = None, examples: int = 8, seed: int = 0,
                     progress: Optional[Callable[[str, int, int], None]] = None) -> list[Path]:
    """Roll every method out on ``dataset`` and write one glimpse record per method.

    Args:
        methods: what to evaluate; labels must be unique.
        out_dir: the records go to ``out_dir/records/<slug(label)>.npz``.
        max_glimpses: T_max (the paper: up to twice the T trained with).
        limit: evaluate on the first ``limit`` items only (None: all).
        occluder: the full-image CNN of the occlusion analysis (``[B, C, H, W] -> [B, K]``), or None.
        examples: images kept in each record for example figures.
        seed: seeds torch before each method, so random policies draw the same on every run.
        progress: ``progress(label, done, total)`` after every batch.

    Returns:
        The record paths, in the order of ``methods``.
    """
    labels = [m.label for m in methods]
    if len(set(map(slug, labels))) != len(labels):
        raise ValueError(f"methods: expected unique labels, found {labels}")
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    device = torch.device(device)
    if occluder is not None:
        occluder.to(device).eval()
    paths = []
    for method in methods:
        method.model.to(device).eval()
        torch.manual_seed(seed)
        parts: dict[str, list[np.ndarray]] = {}
        kept, targets = [], []
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            images = batch["image"].to(device)
            for key, value in _rollout_method(method, images, max_glimpses, occluder).items():
                parts.setdefault(key, []).append(value.cpu().numpy())
            targets.append(batch["label"].numpy())
            if sum(len(k) for k in kept) < examples:
                kept.append(batch["image"][:examples - sum(len(k) for k in kept)].numpy())
            if progress is not None:
                progress(method.label, sum(len(t) for t in targets), len(dataset))
        rec = {k: np.concatenate(v) for k, v in parts.items()}
        cfg = method.model.config
        extra = {k: rec[k] for k in ("predictions_per_glimpse", "area", "occluded_predictions") if k in rec}
        extra["label"] = np.asarray(method.label)
        base = getattr(dataset, "dataset", dataset)
        paths.append(save_glimpse_record(
            Path(out_dir) / "records" / f"{slug(method.label)}.npz", locations=rec["locations"],
            labels=np.concatenate(targets), predictions=rec["predictions_per_glimpse"][:, -1],
            image_size=tuple(cfg.image_size), glimpse_size=int(cfg.glimpse_size), num_scales=int(cfg.num_scales),
            factor=int(cfg.scale_factor), images=np.concatenate(kept) if kept else None,
            class_names=getattr(base, "class_names", None), log_prob=rec["log_prob"], extra=extra))
    return paths


def summarise(record_paths: Sequence[str | Path], *, train_glimpses: Optional[int] = None) -> dict[str, Any]:
    """Per method and t = 1..T_max: accuracy, mean area covered, occluded accuracy (from records only)."""
    methods = []
    for path in record_paths:
        rec = load_glimpse_record(path)
        ex = rec.extra
        per = ex["predictions_per_glimpse"] == rec.labels[:, None]  # [N, T]
        entry = {"label": str(ex.get("label", Path(path).stem)), "record": str(path), "num_images": rec.num_images,
                 "glimpse_size": rec.glimpse_size, "accuracy": per.mean(0).tolist(),
                 "area": ex["area"].mean(0).tolist()}
        if "occluded_predictions" in ex:
            entry["occluded_accuracy"] = (ex["occluded_predictions"] == rec.labels[:, None]).mean(0).tolist()
        methods.append(entry)
    return {"train_glimpses": train_glimpses, "methods": methods}


def write_reports(summary: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """``policy_eval.{json,csv,md}`` and the figures, from a :func:`summarise` dict."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = summary["methods"]
    paths = [out / "policy_eval.json", out / "policy_eval.csv", out / "policy_eval.md"]
    paths[0].write_text(json.dumps(summary, indent=2))
    with open(paths[1], "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["method", "glimpses", "accuracy", "area", "occluded_accuracy"])
        for m in methods:
            occ = m.get("occluded_accuracy")
            for t, (acc, area) in enumerate(zip(m["accuracy"], m["area"])):
                w.writerow([m["label"], t + 1, f"{acc:.4f}", f"{area:.4f}", "" if occ is None else f"{occ[t]:.4f}"])
    paths[2].write_text(markdown_table(summary))
    T = summary.get("train_glimpses")
    curves = {m["label"]: (list(range(1, len(m["accuracy"]) + 1)), m["accuracy"]) for m in methods}
    title = "Accuracy vs glimpses" + (f" (dotted: {T}, the number trained with)" if T else "")
    paths.append(_line_plot(curves, out / "accuracy_vs_glimpses.png", "number of glimpses", "accuracy", title, vline=T))
    paths.append(_line_plot({m["label"]: (m["area"], m["accuracy"]) for m in methods}, out / "accuracy_vs_area.png",
                            "fraction of the image covered", "accuracy", "Accuracy vs area covered"))
    occluded = {m["label"]: (m["area"], m["occluded_accuracy"]) for m in methods if "occluded_accuracy" in m}
    if occluded:
        paths.append(_line_plot(occluded, out / "occlusion.png", "fraction of the image occluded",
                                "full-image CNN accuracy", "Glimpses occluded (lower = more relevant glimpses)"))
    return paths


def _line_plot(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, xlabel: str, ylabel: str,
               title: str, vline: Optional[float] = None) -> Path:
    """One line with markers per method; a dotted vertical line at ``vline`` (the training T, as in Fig. 3a)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, (label, (xs, ys)) in enumerate(curves.items()):
        ax.plot(xs, ys, marker="osD^v<>pXh"[i % 10], markersize=5, linewidth=1.6, label=label)
    if vline:
        ax.axvline(vline, color="grey", linestyle=":", linewidth=1.2)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, format="png", facecolor="white")
    return path


def markdown_table(summary: dict[str, Any]) -> str:
    """Accuracy (%) after 1..T_max glimpses per method, then area and occluded accuracy at the training T."""
    methods = summary["methods"]
    if not methods:
        return "(no methods)\n"
    T_max = max(len(m["accuracy"]) for m in methods)
    T = summary.get("train_glimpses") or T_max
    head = ["method"] + [str(t) for t in range(1, T_max + 1)] + [f"area @{T}", f"occluded acc @{T}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        accs = [f"{100 * a:.1f}" for a in m["accuracy"]] + [""] * (T_max - len(m["accuracy"]))
        area = f"{100 * m['area'][T - 1]:.1f} %" if len(m["area"]) >= T else ""
        occ = m.get("occluded_accuracy")
        occ_s = f"{100 * occ[T - 1]:.1f}" if occ is not None and len(occ) >= T else "-"
        lines.append("| " + " | ".join([m["label"], *accs, area, occ_s]) + " |")
    return "\n".join(lines) + "\n"


def example_figures(record_paths: Sequence[str | Path], out_dir: str | Path, *, num_glimpses: Optional[int] = None,
                    max_images: int = 8) -> list[Path]:
    """``examples/<method>.png``: each method's first ``num_glimpses`` glimpses (default all) on the record's
    example images, titled with its prediction after them."""
    paths = []
    for p in record_paths:
        rec = load_glimpse_record(p)
        T = num_glimpses or rec.num_glimpses
        rec = replace(rec, locations=rec.locations[:, :T], predictions=rec.extra["predictions_per_glimpse"][:, T - 1],
                      log_prob=None)
        path = Path(out_dir) / "examples" / f"{Path(p).stem}.png"
        paths.append(plot_glimpse_examples(rec, path, max_images=max_images))
    return paths
