"""A posterior network's accuracy, entropy and cross-entropy after t = 0..T glimpses (random cells, or given
sequences): how much a posterior knows from few glimpses, and how good a set of sequences is to it."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from foveal.boed.posterior import NetworkPosterior
from foveal.logits import posterior_entropy
from foveal.retina import LocationGrid, cell_masks
from foveal.training.posterior import loss_and_accuracy

__all__ = ["posterior_curves", "posterior_accuracy_curve"]


@torch.no_grad()
def posterior_curves(model: nn.Module, dataset: Dataset, grid: LocationGrid, num_glimpses: int, *,
                     sequences: Optional[Tensor] = None, batch_size: int = 64, seed: int = 0,
                     device: Optional[torch.device] = None) -> dict[str, Tensor]:
    """Accuracy and entropy of a posterior network after t = 0..T glimpses.

    After t glimpses the network sees the union of the first t cells of each image's sequence; the
    curves average over the images of ``dataset``.

    Args:
        model: maps ``masked_input`` to logits (run in eval mode, see :class:`NetworkPosterior`).
        dataset: items ``{"image", "label", "index"}`` (a ``Subset`` works: rows are looked up by "index").
        grid: the cells glimpses are taken at.
        num_glimpses: T.
        sequences: ``[M, >=T]`` cell indices, row = the item's "index" (e.g. annotated sequences); None =
            cells uniformly at random (with replacement, from a generator seeded with ``seed``).

    Returns:
        ``{"accuracy": [T + 1], "entropy": [T + 1], "ce": [T + 1]}``: accuracy (per-attribute accuracy for a
        multilabel network), mean posterior entropy (nats) and mean cross-entropy of the true label.
    """
    posterior = NetworkPosterior(model, device=device)
    generator = torch.Generator().manual_seed(seed)
    masks = cell_masks(grid)  # [G, 1, H, W]
    sums = torch.zeros(3, num_glimpses + 1, dtype=torch.float64)  # accuracy, entropy, ce
    total = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images, labels = batch["image"], batch["label"]
        B = images.shape[0]
        if sequences is None:
            cells = torch.randint(len(grid), (B, num_glimpses), generator=generator)
        else:
            cells = sequences[batch["index"], :num_glimpses].long()
            if cells.shape[1] < num_glimpses or (cells < 0).any() or (cells >= len(grid)).any():
                raise ValueError(f"sequences: expected {num_glimpses} cell indices in [0, {len(grid)}) per image, "
                                 f"found {cells.shape[1]} per image, values {cells.min()}..{cells.max()}")
        seen = torch.zeros(B, 1, *grid.image_size)
        for t in range(num_glimpses + 1):
            if t > 0:
                seen = torch.maximum(seen, masks[cells[:, t - 1]])
            logits = posterior.logits(images, seen)
            ce, accuracy = loss_and_accuracy(logits, labels, posterior.multilabel)
            sums[:, t] += torch.tensor([accuracy.item(), posterior_entropy(logits, posterior.multilabel).mean().item(),
                                        ce.item()], dtype=torch.float64) * B
        total += B
    curves = (sums / max(total, 1)).float()
    return {"accuracy": curves[0], "entropy": curves[1], "ce": curves[2]}


def posterior_accuracy_curve(model: nn.Module, dataset: Dataset, grid: LocationGrid, num_glimpses: int, *,
                             sequences: Optional[Tensor] = None, batch_size: int = 64, seed: int = 0,
                             device: Optional[torch.device] = None) -> Tensor:
    """``[T + 1]`` accuracy after t = 0..T glimpses: the "accuracy" of :func:`posterior_curves`."""
    return posterior_curves(model, dataset, grid, num_glimpses, sequences=sequences, batch_size=batch_size,
                            seed=seed, device=device)["accuracy"]
