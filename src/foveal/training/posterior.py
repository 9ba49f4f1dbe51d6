r"""Training the attentional variational posterior (Eq. 7).

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

from foveal.retina import LocationGrid, cell_masks, masked_input
from foveal.training.base import ALGORITHMS, EvaluationSettings, LossOutput

__all__ = ["PosteriorTrainingConfig", "PosteriorTraining", "random_glimpse_masks", "loss_and_accuracy"]


@dataclass(frozen=True)
class PosteriorTrainingConfig(EvaluationSettings):
    """Settings of :class:`PosteriorTraining`, after the evaluation settings: ``num_glimpses`` is T, the most
    glimpses an image is seen through; ``eval_policy`` and ``test_samples`` are fixed at ``"random"`` and 1,
    since a posterior network is tested through uniformly random cells
    (:mod:`foveal.evaluation.posterior_curves`).

    Attributes:
        min_glimpses: the fewest (t is uniform over ``min_glimpses..num_glimpses``).
        glimpse_size: side of a glimpse in pixels.
        grid: cells per axis spread evenly (:meth:`LocationGrid.from_count`), or
        grid_stride: cells every ``grid_stride`` pixels; neither: every pixel position (stride 1),
            the paper's "uniform over all image locations".
    """

    num_glimpses: int = 5
    eval_policy: str = "random"
    min_glimpses: int = 1
    glimpse_size: int = 8
    grid: Optional[int | tuple[int, int]] = None
    grid_stride: Optional[int] = None

    def __post_init__(self) -> None:
        if (self.eval_policy, self.test_samples) != ("random", 1):
            raise ValueError(f"PosteriorTrainingConfig: a posterior network is tested through random cells, once; "
                             f"expected eval_policy='random', test_samples=1, found {self.eval_policy!r}, "
                             f"{self.test_samples!r}")
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
        super().__post_init__()  # last: the checks above name these fields as they always have

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


def loss_and_accuracy(logits: Tensor, labels: Tensor, multilabel: bool) -> tuple[Tensor, Tensor]:
    """The mean cross-entropy (binary for ``multilabel``) and accuracy of ``[B, K]`` logits."""
    if multilabel:
        if labels.shape != logits.shape:
            raise ValueError(f"batch['label']: expected [B, K] = {list(logits.shape)} attributes for a multilabel "
                             f"posterior, found {list(labels.shape)}")
        target = labels.float()
        return F.binary_cross_entropy_with_logits(logits, target), ((logits > 0).float() == target).float().mean()
    return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean()


@ALGORITHMS.register("posterior", config=PosteriorTrainingConfig)
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
        loss, accuracy = loss_and_accuracy(logits, labels, bool(getattr(model, "multilabel", False)))
        return loss, accuracy, counts.float().mean()

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        loss, accuracy, mean_t = self._forward(model, batch)
        return LossOutput(loss, {"ce": loss.detach(), "accuracy": accuracy.detach(), "mean_glimpses": mean_t.detach()})

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        loss, accuracy, _ = self._forward(model, batch)
        return {"ce": loss.item(), "accuracy": accuracy.item()}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Tensor, num_glimpses: Optional[int] = None) -> tuple[Tensor, Tensor]:
        """Class probabilities ``[B, T, K]`` after each of T uniformly random cells (with replacement, as in
        training; global torch RNG) and the cells' centres ``[B, T, 2]``; categorical networks only."""
        T = num_glimpses or self.config.num_glimpses
        grid = self.grid(tuple(images.shape[2:]))
        cells = torch.randint(len(grid), (images.shape[0], T)).to(images.device)  # [B, T]
        masks = cell_masks(grid, images.device)  # [G, 1, H, W]
        seen = images.new_zeros(images.shape[0], 1, *images.shape[2:])
        probs = []
        for t in range(T):
            seen = torch.maximum(seen, masks[cells[:, t]])
            probs.append(model(masked_input(images, seen)).softmax(-1))
        return torch.stack(probs, 1), grid.index_to_location(cells)
