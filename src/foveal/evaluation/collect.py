"""A run's test outputs: one rollout of the test split gives the numbers and the glimpse record, and the
run's figures are made from the saved record (:func:`foveal.recipes.run.evaluate_run` puts them together)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from foveal.evaluation import glimpse_plots, plots
from foveal.evaluation.records import save_glimpse_record

__all__ = ["collect_glimpses", "record_metrics", "save_record", "make_figures"]


@torch.no_grad()
def collect_glimpses(model, algorithm, dataset: Dataset, batch_size: int, device: torch.device,
                     examples: int, repeats: int = 1) -> dict[str, np.ndarray]:
    """``repeats`` rollouts of every image of ``dataset`` by ``algorithm.predict`` (its evaluation policy).

    Args:
        repeats: M rollouts per image, each scored on its own (the official near-optimal-sequences
            trainer's sampled evaluation: every image repeated M = 5 times under the sampled policy);
            1 for a deterministic policy.

    Returns:
        ``{"probs": [N, T, K], "locations": [N, T, 2], "labels": [N], "images": [E, C, H, W]}``: the class
        probabilities after each glimpse and where the model looked in each image's first rollout, the
        labels, and ``examples`` images spread over the split, whose rows come first; with ``repeats > 1``
        also ``"rollout_probs": [N, M, T, K]``, every rollout's probabilities.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: expected a positive integer (rollouts per test image), found {repeats!r}")
    was_training = model.training
    model.eval()
    # Example images spread evenly over the split (splits can be sorted by class). The record's
    # first rows must match its images, so the examples' rows are moved to the front.
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(examples, len(dataset))).round().astype(int))
    out: dict[str, list] = {"probs": [], "locations": [], "labels": [], "rollout_probs": []}
    images = []
    # its own generator: the global RNG is consumed by the rollouts alone (as in foveal.training.evaluate)
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator()):
        B = len(batch["image"])
        images_in = batch["image"].to(device)
        probs, locations = algorithm.predict(model, images_in if repeats == 1 else images_in.repeat(repeats, 1, 1, 1))
        probs = probs.view(repeats, B, *probs.shape[1:]).transpose(0, 1).cpu().numpy()  # [B, M, T, K]
        out["probs"].append(probs[:, 0])
        if repeats > 1:
            out["rollout_probs"].append(probs)
        out["locations"].append(locations[:B].cpu().numpy())
        out["labels"].append(batch["label"].numpy())
        in_batch = np.isin(batch["index"].numpy(), picks)
        images.append(batch["image"][torch.from_numpy(in_batch)].numpy())
    record = {k: np.concatenate(v) for k, v in out.items() if v}
    order = np.concatenate([picks, np.setdiff1d(np.arange(len(dataset)), picks)])
    record = {k: v[order] for k, v in record.items()}
    record["images"] = np.concatenate(images)
    model.train(was_training)
    return record


def record_metrics(record: dict[str, np.ndarray]) -> dict[str, Any]:
    """The test numbers of a :func:`collect_glimpses` record: accuracy and cross-entropy after the last
    glimpse, accuracy after each glimpse; all from the same rollouts, so they cannot disagree. With
    several rollouts per image every rollout is scored (means over the N x M rollouts)."""
    probs, labels = record["probs"].astype(np.float64), record["labels"]
    if "rollout_probs" in record:
        M = record["rollout_probs"].shape[1]
        probs, labels = record["rollout_probs"].astype(np.float64).reshape(-1, *probs.shape[1:]), np.repeat(labels, M)
    correct = probs.argmax(-1) == labels[:, None]  # [N, T]
    p_true = np.take_along_axis(probs[:, -1], labels[:, None], axis=1)[:, 0]
    return {"accuracy": float(correct[:, -1].mean()), "ce": float(-np.log(np.clip(p_true, 1e-12, None)).mean()),
            "accuracy_per_glimpse": [float(a) for a in correct.mean(0)]}


def save_record(record: dict[str, np.ndarray], model, dataset: Dataset, path: Path) -> Path:
    cfg = model.config
    save_glimpse_record(
        path, locations=record["locations"].astype(np.float32), labels=record["labels"].astype(np.int64),
        predictions=record["probs"][:, -1].argmax(-1).astype(np.int64), image_size=tuple(cfg.image_size),
        glimpse_size=cfg.glimpse_size, num_scales=cfg.num_scales, factor=cfg.scale_factor,
        images=record["images"].astype(np.float32), class_names=list(dataset.class_names),
    )
    return path


def make_figures(record_path: Path, run_dir: Path) -> list[Path]:
    """The run's figures, from its saved records only."""
    figures = run_dir / "figures"
    paths = [glimpse_plots.plot_glimpse_heatmaps(record_path, figures / "glimpse_heatmaps.png"),
             glimpse_plots.plot_glimpse_examples(record_path, figures / "glimpse_examples.png")]
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        paths.append(plots.plot_training_summary(metrics, figures / "training_curves.png"))
    return paths
