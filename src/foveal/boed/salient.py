r"""Cheap baseline glimpse sequences: greedy salient cells, and uniformly random cells.

The near-optimal sequences (:mod:`foveal.boed.epe`) cost ``N x |grid| x T`` posterior evaluations per
image; a baseline must show what that buys. Both baselines here choose cells of the same
:class:`~foveal.retina.LocationGrid` and give :class:`~foveal.data.sequences.GlimpseSequences` files.

**Salient** (method ``"salient"``): a hand-crafted, label-free saliency map, looked at greedily. With
:math:`s(x, y) \ge 0` the saliency of a pixel, :math:`m_{t-1}` the pixels already seen and :math:`c_g` the
pixels of cell ``g``,

.. math::  l_t = \arg\max_g \sum_{(x, y) \in c_g} s(x, y)\,\big(1 - m_{t-1}(x, y)\big),

the cell holding the most *unseen* saliency (so the sequence moves on instead of looking at the same
edge again). Ties (e.g. once no saliency is left unseen) go to the cell with the most unseen pixels,
then to the lowest index. Saliency kinds:

* ``"edge"`` (default): edge energy, the Sobel gradient magnitude
  :math:`\sqrt{(S_x * I)^2 + (S_y * I)^2}` summed over channels. Edges mark object
  outlines and texture, and clutter pieces have fewer of them than a whole object (the Saccader code's
  "Sobel" policies use the same statistic, there as a fixed ranking).
* ``"variance"``: local variance of the image in a 3x3 window, summed over channels.

Both pad the image by replicating its border, so the image frame itself is not an edge.

**Random** (method ``"random"``): cells drawn independently and uniformly (with replacement), as in
the posterior's training distribution (:func:`foveal.training.posterior.random_glimpse_masks`); one
generator seeded with ``seed`` is drawn from in order of the given images, so a file is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from foveal.data.sequences import GlimpseSequences
from foveal.retina import LocationGrid, cell_masks
from foveal.saliency import SALIENCY_KINDS, saliency_map

__all__ = ["SALIENCY_KINDS", "SalientConfig", "saliency_map", "salient_cells", "random_cells",
           "baseline_sequences"]



@dataclass(frozen=True)
class SalientConfig:
    """Settings of the salient baseline.

    Attributes:
        kind: the saliency map, one of :data:`SALIENCY_KINDS`.
    """

    kind: str = "edge"

    def __post_init__(self) -> None:
        if self.kind not in SALIENCY_KINDS:
            raise ValueError(f"SalientConfig.kind: expected one of {SALIENCY_KINDS}, found {self.kind!r}")


def salient_cells(images: Tensor, grid: LocationGrid, num_glimpses: int, *,
                  config: SalientConfig = SalientConfig()) -> Tensor:
    """Greedy cells of most unseen saliency: ``[B, C, H, W]`` -> ``[B, T]`` int64 cell indices."""
    if images.dim() != 4 or tuple(images.shape[2:]) != grid.image_size:
        raise ValueError(f"images: expected [B, C, {grid.image_size[0]}, {grid.image_size[1]}] (the grid's size), "
                         f"found {list(images.shape)}")
    if num_glimpses < 1:
        raise ValueError(f"num_glimpses: expected >= 1, found {num_glimpses}")
    s = saliency_map(images, config.kind).flatten(1)  # [B, HW]
    cells = cell_masks(grid, images.device).flatten(1)  # [G, HW]
    unseen = torch.ones_like(s)  # [B, HW]
    chosen = []
    for _ in range(num_glimpses):
        score = (s * unseen) @ cells.T  # [B, G] unseen saliency per cell
        best = score == score.amax(1, keepdim=True)  # [B, G]
        area = unseen @ cells.T  # [B, G] unseen pixels per cell
        pick = torch.where(best, area, area.new_tensor(-1.0)).argmax(1)  # first maximum: lowest index on ties
        chosen.append(pick)
        unseen = unseen * (1 - cells[pick])
    return torch.stack(chosen, 1)


def random_cells(batch: int, grid: LocationGrid, num_glimpses: int, *,
                 generator: Optional[torch.Generator] = None) -> Tensor:
    """``[B, T]`` int64 cells drawn uniformly with replacement."""
    return torch.randint(len(grid), (batch, num_glimpses), generator=generator)


def baseline_sequences(method: str, dataset: Any, indices: Sequence[int] | Tensor, grid: LocationGrid,
                       num_glimpses: int, *, dataset_name: Optional[str] = None, seed: int = 0,
                       config: SalientConfig = SalientConfig(), batch_size: int = 256):
    """Salient or random sequences for items ``indices`` of ``dataset``, as a :class:`GlimpseSequences`.

    Args:
        method: ``"salient"`` or ``"random"``.
        dataset: a built split (``name``, ``split``, ``image_shape``; items ``{"image", ...}``).
        indices: positions in the split to make sequences for (unique).
        dataset_name: the name for ``build_dataset`` if it differs from ``dataset.name``.
        seed: of the random cells' generator.
        config: the salient settings.
    """
    if method not in ("salient", "random"):
        raise ValueError(f"method: expected 'salient' or 'random', found {method!r}")
    idx = torch.as_tensor(indices, dtype=torch.long).flatten()
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, idx.shape[0], batch_size):
        block = idx[start:start + batch_size]
        if method == "random":
            parts.append(random_cells(block.shape[0], grid, num_glimpses, generator=generator))
        else:
            images = torch.stack([dataset[i]["image"] for i in block.tolist()])
            parts.append(salient_cells(images, grid, num_glimpses, config=config))
    cells = torch.cat(parts) if parts else torch.zeros(0, num_glimpses, dtype=torch.long)
    corners = grid.corners()[cells]  # [N, T, 2]
    ids = [dataset.image_id(i) for i in idx.tolist()] if hasattr(dataset, "image_id") else None
    provenance = {"method": method, "seed": seed} if method == "random" else {"method": method, "kind": config.kind}
    return GlimpseSequences(dataset_name or dataset.name, dataset.split, grid.image_size, grid.glimpse_size, idx,
                            corners, grid=grid, ids=ids, method=method, provenance=provenance)
