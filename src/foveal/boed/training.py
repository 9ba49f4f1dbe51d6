r"""Training the attentional variational posterior (Eq. 7), and its accuracy after t random glimpses.

The AVP is trained to minimise :math:`\mathbb{E}_{u(t, l_{1:t})}\,
\mathrm{KL}\big(p(\theta \mid y_{1:t}, l_{1:t}) \,\|\, q(\theta \mid y_{1:t}, l_{1:t})\big)`, whose gradient
is that of a cross-entropy on images seen through random glimpses (Eq. 7): per image,
:math:`t \sim U\{t_{min}, \dots, T\}` and :math:`l_1, \dots, l_t` i.i.d. uniform over the cells of a grid
(with replacement, so the mask is the union of at most t cells). The paper uses :math:`t \in 1..T`; the
released code used :math:`1..T-1` (``min_glimpses`` / ``num_glimpses`` cover both).

Labels: ``batch["label"]`` is ``[B]`` class indices, or ``[B, K]`` 0/1 attributes for a ``multilabel``
network (binary cross-entropy averaged over attributes; "accuracy" is the per-attribute accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from foveal.boed.epe import cell_masks, posterior_entropy
from foveal.boed.posterior import NetworkPosterior
from foveal.retina import LocationGrid, masked_input
from foveal.training.base import LossOutput

__all__ = ["PosteriorTrainingConfig", "PosteriorTraining", "random_glimpse_masks", "posterior_curves",
           "posterior_accuracy_curve"]


@dataclass(frozen=True)
class PosteriorTrainingConfig:
    """Settings of :class:`PosteriorTraining`.

    Attributes:
        num_glimpses: T, the most glimpses an image is seen through.
        min_glimpses: the fewest (t is uniform over ``min_glimpses..num_glimpses``).
        glimpse_size: side of a glimpse in pixels.
        grid: cells per axis spread evenly (:meth:`LocationGrid.from_count`), or
        grid_stride: cells every ``grid_stride`` pixels; neither: every pixel position (stride 1),
            the paper's "uniform over all image locations".
    """

    num_glimpses: int = 5
    min_glimpses: int = 1
    glimpse_size: int = 8
    grid: Optional[int | tuple[int, int]] = None
    grid_stride: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.grid, list):
            object.__setattr__(self, "grid", tuple(self.grid))
        if not 0 <= self.min_glimpses <= self.num_glimpses or self.num_glimpses < 1:
            raise ValueError(f"PosteriorTrainingConfig: expected 0 <= min_glimpses <= num_glimpses and num_glimpses >= 1, "
                             f"found min_glimpses={self.min_glimpses}, num_glimpses={self.num_glimpses}")
        if self.glimpse_size < 1:
            raise ValueError(f"PosteriorTrainingConfig.glimpse_size: expected >= 1, found {self.glimpse_size}")
        if self.grid is not None and self.grid_stride is not None:
            raise ValueError(f"PosteriorTrainingConfig: expected at most one of grid, grid_stride; "
                             f"found grid={self.grid!r}, grid_stride={self.grid_stride!r}")

    def make_grid(self, image_size: tuple[int, int]) -> LocationGrid:
        if self.grid is not None:
            return LocationGrid.from_count(image_size, self.glimpse_size, self.grid)
        return LocationGrid.from_stride(image_size, self.glimpse_size, self.grid_stride or 1)


def random_glimpse_masks(batch: int, grid: LocationGrid, min_glimpses: int, max_glimpses: int, *,
                         generator: Optional[torch.Generator] = None,
                         device: Optional[torch.device] = None) -> tuple[Tensor, Tensor]:
    """Masks of ``t ~ U{min..max}`` uniformly random cells per image (Eq. 7's u(t, l_{1:t})).

    Returns:
        ``(masks [B, 1, H, W], counts [B])``: the union of each image's cells, and its t.
    """
    counts = torch.randint(min_glimpses, max_glimpses + 1, (batch,), generator=generator)  # [B]
    cells = torch.randint(len(grid), (batch, max(max_glimpses, 1)), generator=generator)  # [B, T]
    used = torch.arange(cells.shape[1]) < counts[:, None]  # [B, T]: first t cells of each row
    per_cell = cell_masks(grid)[cells] * used[:, :, None, None, None]  # [B, T, 1, H, W]
    return per_cell.amax(dim=1).to(device), counts.to(device)


def _loss_and_accuracy(logits: Tensor, labels: Tensor, multilabel: bool) -> tuple[Tensor, Tensor]:
    if multilabel:
        if labels.shape != logits.shape:
            raise ValueError(f"batch['label']: expected [B, K] = {list(logits.shape)} attributes for a multilabel "
                             f"posterior, found {list(labels.shape)}")
        target = labels.float()
        return F.binary_cross_entropy_with_logits(logits, target), ((logits > 0).float() == target).float().mean()
    return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean()


class PosteriorTraining:
    """Cross-entropy of a posterior network on images seen through random glimpses (Eq. 7)."""

    def __init__(self, config: PosteriorTrainingConfig = PosteriorTrainingConfig()) -> None:
        self.config = config
        self._grids: dict[tuple[int, int], LocationGrid] = {}

    def grid(self, image_size: tuple[int, int]) -> LocationGrid:
        if image_size not in self._grids:
            self._grids[image_size] = self.config.make_grid(image_size)
        return self._grids[image_size]

    def _forward(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        images, labels = batch["image"], batch["label"]
        cfg = self.config
        grid = self.grid(tuple(images.shape[2:]))
        masks, counts = random_glimpse_masks(images.shape[0], grid, cfg.min_glimpses, cfg.num_glimpses,
                                             device=images.device)  # global torch RNG: the engine restores it on resume
        logits = model(masked_input(images, masks))
        loss, accuracy = _loss_and_accuracy(logits, labels, bool(getattr(model, "multilabel", False)))
        return loss, accuracy, counts.float().mean()

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        loss, accuracy, mean_t = self._forward(model, batch)
        return LossOutput(loss, {"ce": loss.item(), "accuracy": accuracy.item(), "mean_glimpses": mean_t.item()})

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        loss, accuracy, _ = self._forward(model, batch)
        return {"ce": loss.item(), "accuracy": accuracy.item()}


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
            ce, accuracy = _loss_and_accuracy(logits, labels, posterior.multilabel)
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
