"""Networks scoring glimpse sequences: a network's accuracy, entropy and cross-entropy after t = 0..T glimpses
along given cells, one row per image (the scorers of :func:`foveal.sequences.scoring.compare_sequences`).

:func:`per_image_curves` asks a posterior network (one that did not choose the sequences: the score that
counts is another network's) what it makes of the pixels seen so far. A second kind of scorer asks what
users want from sequences: how well a *glimpse network* classifies along them. :func:`glimpse_model_curves`
forces a hard-attention model (one with ``rollout`` and the sequences' grid, e.g. a ``ram-grid`` trained with
``algorithm.train_policy=random``: a classifier trained on random glimpses) to look at each image's cells and
scores its classifier after every glimpse; t = 0 is its classifier on its initial state, the class prior it
learnt. :func:`network_scorer` picks the one that fits a model.
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from foveal.boed.posterior import NetworkPosterior
from foveal.logits import posterior_entropy
from foveal.retina import LocationGrid, cell_masks
from foveal.sequences.scoring import Scorer

__all__ = ["per_image_curves", "glimpse_model_curves", "network_scorer"]


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


def network_scorer(model: nn.Module, *, batch_size: int = 64, device: Optional[torch.device] = None) -> Scorer:
    """``model`` as a :data:`~foveal.sequences.scoring.Scorer`: a glimpse network (one with ``rollout``) by
    :func:`glimpse_model_curves`, any other (a posterior network) by :func:`per_image_curves`."""
    curves = glimpse_model_curves if callable(getattr(model, "rollout", None)) else per_image_curves
    return partial(curves, model, batch_size=batch_size, device=device)
