"""How good sets of glimpse sequences are, judged fairly: by a posterior network that did not choose them,
image by image, with paired confidence intervals.

A sequence set chosen with one posterior looks best to that same posterior; the score that counts is another
network's (trained separately, e.g. another seed or architecture). :func:`per_image_curves` gives that
scorer's accuracy, entropy and cross-entropy after t = 0..T glimpses of each image's sequence;
:func:`compare_sequences` scores several files on the images they share and pairs every file with the first
(per-image differences of accuracy after T, and of accuracy and entropy averaged over t = 1..T, with 95 %
percentile-bootstrap intervals over images, :func:`paired_bootstrap`). ``foveal sequences score`` prints it.

A second kind of scorer asks what users want from sequences: how well a *glimpse network* classifies along
them. :func:`glimpse_model_curves` forces a hard-attention model (one with ``rollout`` and the sequences'
grid, e.g. a ``ram-grid`` trained with ``algorithm.train_policy=random``: a classifier trained on random
glimpses) to look at each image's cells and scores its classifier after every glimpse; t = 0 is its classifier
on its initial state, the class prior it learnt. :func:`compare_sequences` takes either kind of scorer.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from foveal.boed.posterior import NetworkPosterior
from foveal.data.sequences import GlimpseSequences
from foveal.logits import posterior_entropy
from foveal.retina import LocationGrid, cell_masks

__all__ = ["per_image_curves", "glimpse_model_curves", "paired_bootstrap", "compare_sequences"]


def _scores(logits: Tensor, labels: Tensor, multilabel: bool) -> Tensor:
    """``[3, B]``: correct (a multilabel network: the share of attributes right), entropy, cross-entropy."""
    if multilabel:
        target = labels.float()
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(-1)
        correct = ((logits > 0).float() == target).float().mean(-1)
    else:
        ce = F.cross_entropy(logits, labels, reduction="none")
        correct = (logits.argmax(-1) == labels).float()
    return torch.stack([correct, posterior_entropy(logits, multilabel), ce]).double()


def _check_cells(cells: Tensor, n: int, grid: LocationGrid) -> None:
    if cells.dim() != 2 or cells.shape[0] != n:
        raise ValueError(f"cells: expected [{n}, T] cell indices, found {list(cells.shape)}")
    if cells.numel() and (int(cells.min()) < 0 or int(cells.max()) >= len(grid)):
        raise ValueError(f"cells: expected indices in [0, {len(grid)}), found {int(cells.min())}..{int(cells.max())}")


@torch.no_grad()
def per_image_curves(model: nn.Module, dataset: Dataset, grid: LocationGrid, cells: Tensor, *, batch_size: int = 64,
                     device: Optional[torch.device] = None) -> dict[str, Tensor]:
    """A posterior network's numbers after t = 0..T glimpses along given cells, one row per item.

    Args:
        model: maps ``masked_input`` to logits (:class:`~foveal.boed.posterior.NetworkPosterior`).
        dataset: items ``{"image", "label", ...}``, in the order of ``cells``' rows.
        cells: ``[N, T]`` cell indices of ``grid``, row i for item i.

    Returns:
        ``{"accuracy", "entropy", "ce"}``, each ``[N, T + 1]``: correct or not (a multilabel network: the share
        of attributes right), posterior entropy (nats) and cross-entropy of the true label.
    """
    _check_cells(cells, len(dataset), grid)
    posterior = NetworkPosterior(model, device=device)
    masks = cell_masks(grid)  # [G, 1, H, W]
    T = cells.shape[1]
    rows: dict[str, list[Tensor]] = {"accuracy": [], "entropy": [], "ce": []}
    start = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images, labels = batch["image"], batch["label"]
        B = images.shape[0]
        these = cells[start:start + B].long()
        start += B
        seen = torch.zeros(B, 1, *grid.image_size)
        out = torch.zeros(3, B, T + 1, dtype=torch.float64)
        for t in range(T + 1):
            if t > 0:
                seen = torch.maximum(seen, masks[these[:, t - 1]])
            out[:, :, t] = _scores(posterior.logits(images, seen), labels, posterior.multilabel)
        for k, name in enumerate(rows):
            rows[name].append(out[k])
    return {name: torch.cat(parts) if parts else torch.zeros(0, T + 1, dtype=torch.float64)
            for name, parts in rows.items()}


@torch.no_grad()
def glimpse_model_curves(model: nn.Module, dataset: Dataset, grid: LocationGrid, cells: Tensor, *,
                         batch_size: int = 64, device: Optional[torch.device] = None) -> dict[str, Tensor]:
    """A glimpse network's numbers after t = 0..T glimpses forced to given cells, one row per item.

    Args:
        model: a hard-attention model with ``rollout(images, T, forced_locations=...)`` and ``grid`` equal to
            ``grid`` (so each cell is one of its own locations).
        dataset, grid, cells: as :func:`per_image_curves`.

    Returns:
        As :func:`per_image_curves`; column t = 0 scores the model's classifier on its initial state (a uniform
        prediction for a model without ``core`` and ``classifier``).

    Raises:
        ValueError: the model has no ``rollout`` or another grid.
    """
    _check_cells(cells, len(dataset), grid)
    if not callable(getattr(model, "rollout", None)):
        raise ValueError(f"scorer: expected a glimpse network (a model with rollout), found {type(model).__name__}")
    own = getattr(model, "grid", None)
    if own != grid:
        raise ValueError(f"scorer: its grid ({None if own is None else f'{len(own)} cells of {own.glimpse_size} px'}) "
                         f"is not the sequences' ({len(grid)} cells of {grid.glimpse_size} px); train it on their grid")
    device = torch.device("cpu") if device is None else torch.device(device)
    was_training = model.training
    model.eval().to(device)
    multilabel = bool(getattr(model, "multilabel", False))
    locations = grid.locations().float()
    T = cells.shape[1]
    rows = []
    start = 0
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            images, labels = batch["image"].to(device), batch["label"].to(device)
            B = images.shape[0]
            these = cells[start:start + B].long()
            start += B
            rollout = model.rollout(images, T, forced_locations=locations[these].to(device))
            if hasattr(model, "core") and hasattr(model, "classifier"):
                prior = model.classifier(model.core.initial_state(B, images)[0])
            else:  # a uniform prediction
                prior = torch.zeros_like(rollout.logits[:, 0])
            logits = torch.cat([prior.unsqueeze(1), rollout.logits], 1)  # [B, T + 1, C]
            rows.append(torch.stack([_scores(logits[:, t], labels, multilabel) for t in range(T + 1)], -1).cpu())
    finally:
        model.train(was_training)
    out = torch.cat(rows, 1) if rows else torch.zeros(3, 0, T + 1, dtype=torch.float64)
    return {"accuracy": out[0], "entropy": out[1], "ce": out[2]}


def paired_bootstrap(diff: Tensor, *, resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean of per-image differences ``diff [K]`` and its 95 % percentile-bootstrap interval over images."""
    if diff.dim() != 1 or diff.numel() < 2:
        raise ValueError(f"diff: expected [K] differences of K >= 2 images, found {list(diff.shape)}")
    g = torch.Generator().manual_seed(seed)
    means = diff.double()[torch.randint(diff.numel(), (resamples, diff.numel()), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"mean": float(diff.double().mean()), "ci95": [lo, hi], "contains_0": lo <= 0 <= hi}


def compare_sequences(model: nn.Module, dataset: Dataset, files: Sequence[GlimpseSequences], *,
                      num_glimpses: Optional[int] = None, resamples: int = 10_000, batch_size: int = 64,
                      device: Optional[torch.device] = None) -> dict:
    """Score sequence files with ``model`` on the images all of them cover; pair each with the first.

    ``model``: a posterior network (:func:`per_image_curves`) or a glimpse network with ``rollout``
    (:func:`glimpse_model_curves`).

    Returns:
        ``{"images": K, "num_glimpses": T, "files": [{"source", "method", "accuracy" [T + 1], "entropy",
        "ce", "accuracy_after_T", "accuracy_mean", "entropy_mean", "vs_first": {"accuracy_after_T", "accuracy_mean",
        "entropy_mean"} or None}]}``, the curves averaged over the K images, ``*_mean`` also over t = 1..T.
    """
    if not files:
        raise ValueError("files: expected at least one sequence file")
    first = files[0]
    for f in files[1:]:
        if (f.dataset, f.split, f.grid) != (first.dataset, first.split, first.grid):
            raise ValueError(f"{f.source}: made for {f.dataset}/{f.split} on another grid than {first.source} "
                             f"({first.dataset}/{first.split}); only sequences of the same images and cells compare")
    if first.grid is None:
        raise ValueError(f"{first.source}: expected a file with a grid (cells to score), found none")
    T = min(f.num_glimpses for f in files) if num_glimpses is None else num_glimpses
    if T < 1 or any(f.num_glimpses < T for f in files):
        raise ValueError(f"num_glimpses: expected 1..{min(f.num_glimpses for f in files)}, found {T}")
    common = set(first.indices.tolist())
    for f in files[1:]:
        common &= set(f.indices.tolist())
    images = sorted(common)
    if len(images) < 2:
        raise ValueError(f"the files share {len(images)} image(s); at least 2 are needed to pair them")
    subset = Subset(dataset, images)
    grid = first.grid
    scored = []
    curves = glimpse_model_curves if callable(getattr(model, "rollout", None)) else per_image_curves
    for f in files:
        row = {int(i): r for r, i in enumerate(f.indices.tolist())}
        cells = grid.corner_to_index(f.corners[[row[i] for i in images], :T].reshape(-1, 2)).view(len(images), T)
        scored.append(curves(model, subset, grid, cells, batch_size=batch_size, device=device))
    out = []
    q0 = scored[0]
    for k, (f, q) in enumerate(zip(files, scored)):
        entry = {"source": str(f.source), "method": f.method,
                 **{k: v.mean(0).tolist() for k, v in q.items()},
                 "accuracy_after_T": float(q["accuracy"][:, -1].mean()),
                 "accuracy_mean": float(q["accuracy"][:, 1:].mean()),
                 "entropy_mean": float(q["entropy"][:, 1:].mean()), "vs_first": None}
        if k > 0:
            entry["vs_first"] = {
                "accuracy_after_T": paired_bootstrap(q["accuracy"][:, -1] - q0["accuracy"][:, -1], resamples=resamples),
                "accuracy_mean": paired_bootstrap(q["accuracy"][:, 1:].mean(1) - q0["accuracy"][:, 1:].mean(1),
                                                  resamples=resamples),
                "entropy_mean": paired_bootstrap(q["entropy"][:, 1:].mean(1) - q0["entropy"][:, 1:].mean(1),
                                                 resamples=resamples)}
        out.append(entry)
    return {"images": len(images), "num_glimpses": T, "files": out}
