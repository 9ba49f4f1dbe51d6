r"""Sequence makers: one interface for every way of choosing glimpse sequences, and the registry of them.

A maker chooses where to look on the images of a :class:`Target` (positions of a built split, the number of
glimpses T, the allowed cells) and returns them as a :class:`~foveal.sequences.format.GlimpseSequences`::

    target = Target(dataset, indices, num_glimpses=6, grid=grid)
    seqs = MAKERS.build("salient", target, kind="edge")       # maker(target, **settings) -> GlimpseSequences

Every maker has that signature (:class:`SequenceMaker`): the target first, then its own settings as keyword
arguments. A maker is registered under the ``method`` it records in its files:

===================  =============================================================================  ==================
name                 chooses                                                                        registered in
===================  =============================================================================  ==================
``salient``          greedily the cell holding the most unseen saliency (edges or local variance)   here
``random``           cells uniformly at random, with replacement                                    here
``ps-ram``           what a trained glimpse model looks at: sampled from its policy (or greedy)     here
``nogs``             the near-optimal cells: least expected posterior entropy, completions from     :mod:`foveal.boed`
                     an image bank (Harvey et al. 2021; ``foveal annotate``)
``hindsight``        the cell after which the posterior is surest on the true image itself (a       :mod:`foveal.boed`
                     reference that sees the answer, not a method)
``hindsight-label``  the cell after which the posterior's cross-entropy of the true label on the    :mod:`foveal.boed`
                     true image is lowest, the first cell too (a reference that reads the label)
===================  =============================================================================  ==================

The annotator's three makers register themselves when :mod:`foveal.boed` is imported: this package sits
below the annotator in the layer order (the annotator writes sequences, partial supervision reads them, neither
may be imported here), and a ``"module:function"`` string naming it would count as an import too
(``tests/test_layers.py``). Sequences given by hand, whose length the hand decides, are in
:mod:`foveal.sequences.handmade` (PS-HGS from part annotations, user point files).

**Salient**: a hand-crafted, label-free saliency map (:func:`foveal.saliency.saliency_map`), looked at
greedily. With :math:`s(x, y) \ge 0` the saliency of a pixel, :math:`m_{t-1}` the pixels already seen and
:math:`c_g` the pixels of cell ``g``,

.. math::  l_t = \arg\max_g \sum_{(x, y) \in c_g} s(x, y)\,\big(1 - m_{t-1}(x, y)\big),

the cell holding the most *unseen* saliency (so the sequence moves on instead of looking at the same edge
again). Ties (e.g. once no saliency is left unseen) go to the cell with the most unseen pixels, then to the
lowest index. ``kind="edge"`` (default) is the Sobel magnitude of every channel, summed: edges mark object
outlines and texture, and clutter pieces have fewer of them than a whole object; ``"variance"`` is the 3x3
local variance. The near-optimal sequences cost ``N x |grid| x T`` posterior evaluations per image; salient
and random are the baselines that show what that buys.

**Random**: cells drawn independently and uniformly (with replacement), as in the posterior's training
distribution (:func:`foveal.training.posterior.random_glimpse_masks`); one generator seeded with ``seed`` is
drawn from in order of the target's images, so a file is reproducible.

**PS-RAM** (Harvey et al. 2021, section 6): train a model with RAM, then *sample* sequences from its learned
policy on the images to annotate (``policy="sample"``; ``"greedy"`` takes the mode instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence, Union

import torch
from torch import Tensor, nn

from foveal.policies import make_policy
from foveal.registry import Registry
from foveal.retina import LocationGrid, cell_masks, top_left
from foveal.saliency import saliency_map
from foveal.sequences.format import GlimpseSequences

__all__ = ["Target", "SequenceMaker", "MAKERS", "salient_sequences", "random_sequences", "policy_sequences",
           "salient_cells", "random_cells"]


@dataclass(frozen=True)
class Target:
    """What sequences are made for: images of a split, how many glimpses, where they may go.

    Attributes:
        dataset: a built split (``name``, ``split``, ``image_shape``; items ``{"image", ...}``; ``image_id``
            when its items have ids).
        indices: int64 ``[N]``, unique positions in the split (a list of ints is taken too).
        num_glimpses: T.
        grid: the allowed cells (makers that choose cells need one).
        dataset_name: the name for ``foveal.data.build_dataset`` when it is not ``dataset.name``.
    """

    dataset: Any
    indices: Union[Tensor, Sequence[int]]
    num_glimpses: int
    grid: Optional[LocationGrid] = None
    dataset_name: Optional[str] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "indices", torch.as_tensor(self.indices, dtype=torch.long).flatten())
        if int(self.num_glimpses) < 1:
            raise ValueError(f"Target.num_glimpses: expected >= 1, found {self.num_glimpses}")

    @classmethod
    def like(cls, seqs: GlimpseSequences, dataset: Any) -> "Target":
        """The images, T and grid of an existing file, on ``dataset``: its split, built."""
        return cls(dataset, seqs.indices, seqs.num_glimpses, seqs.grid, dataset_name=seqs.dataset)

    def grid_for(self, maker: str) -> LocationGrid:
        """The grid, for a maker that chooses its cells (ValueError naming ``maker`` without one)."""
        if self.grid is None:
            raise ValueError(f"{maker}: expected a target with a grid (the cells to choose from), found none")
        return self.grid

    def images(self, rows: Tensor) -> Tensor:
        """``[n, C, H, W]``: the images at target rows ``rows`` (positions ``indices[rows]`` of the split)."""
        return torch.stack([self.dataset[i]["image"] for i in self.indices[rows].tolist()])

    def sequences(self, corners: Tensor, *, glimpse_size: int, grid: Optional[LocationGrid], method: str,
                  provenance: dict) -> GlimpseSequences:
        """``corners [N, T, 2]`` of the target's images, in order, as a file of the target's split."""
        return GlimpseSequences(self.dataset_name or self.dataset.name, self.dataset.split,
                                tuple(self.dataset.image_shape[1:]), glimpse_size, self.indices, corners, grid=grid,
                                ids=_image_ids(self.dataset, self.indices), method=method, provenance=provenance)


class SequenceMaker(Protocol):
    """``maker(target, **settings) -> GlimpseSequences``: glimpse sequences for the target's images."""

    def __call__(self, target: Target, /, **settings: Any) -> GlimpseSequences: ...


MAKERS: Registry[SequenceMaker] = Registry("sequence maker", field="method", sort=False)


def _image_ids(dataset: Any, indices: Tensor) -> Optional[list[str]]:
    """The ids of items ``indices`` (``dataset.image_id``), or None for a dataset without ids."""
    return [dataset.image_id(i) for i in indices.tolist()] if hasattr(dataset, "image_id") else None


# ---------------------------------------------------------------------------------- salient and random
def salient_cells(images: Tensor, grid: LocationGrid, num_glimpses: int, *, kind: str = "edge") -> Tensor:
    """Greedy cells of most unseen saliency: ``[B, C, H, W]`` -> ``[B, T]`` int64 cell indices."""
    if images.dim() != 4 or tuple(images.shape[2:]) != grid.image_size:
        raise ValueError(f"images: expected [B, C, {grid.image_size[0]}, {grid.image_size[1]}] (the grid's size), "
                         f"found {list(images.shape)}")
    if num_glimpses < 1:
        raise ValueError(f"num_glimpses: expected >= 1, found {num_glimpses}")
    s = saliency_map(images, kind).flatten(1)  # [B, HW]
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


@MAKERS.register("salient", summary="greedily the cell holding the most unseen saliency (edges or local variance)")
def salient_sequences(target: Target, *, kind: str = "edge", batch_size: int = 256) -> GlimpseSequences:
    """Salient cells (module docstring) of the target's grid; ``kind``: ``"edge"`` or ``"variance"``."""
    grid = target.grid_for("salient")
    rows = torch.arange(len(target.indices)).split(batch_size)
    cells = [salient_cells(target.images(block), grid, target.num_glimpses, kind=kind) for block in rows]
    return _cell_sequences(target, grid, cells, "salient", {"method": "salient", "kind": kind})


@MAKERS.register("random", summary="cells uniformly at random, with replacement")
def random_sequences(target: Target, *, seed: int = 0, batch_size: int = 256) -> GlimpseSequences:
    """Random cells of the target's grid from one generator seeded with ``seed`` (module docstring)."""
    grid = target.grid_for("random")
    generator = torch.Generator().manual_seed(seed)
    cells = [random_cells(len(block), grid, target.num_glimpses, generator=generator)
             for block in torch.arange(len(target.indices)).split(batch_size)]
    return _cell_sequences(target, grid, cells, "random", {"method": "random", "seed": seed})


def _cell_sequences(target: Target, grid: LocationGrid, cells: list[Tensor], method: str,
                    provenance: dict) -> GlimpseSequences:
    cells = torch.cat(cells) if cells else torch.zeros(0, target.num_glimpses, dtype=torch.long)  # [N, T]
    return target.sequences(grid.corners()[cells], glimpse_size=grid.glimpse_size, grid=grid, method=method,
                            provenance=provenance)


# ------------------------------------------------------------------------------------ a trained policy
@MAKERS.register("ps-ram", summary="what a trained glimpse model looks at: sampled from its policy (or greedy)")
@torch.no_grad()
def policy_sequences(target: Target, *, model: nn.Module, policy: str = "sample", seed: int = 0,
                     batch_size: int = 256, provenance: Optional[dict] = None) -> GlimpseSequences:
    """PS-RAM: the glimpses a trained glimpse model takes on the target's images (module docstring).

    Args:
        target: the images; its grid, if any, must be the model's (the file's grid is the model's, its glimpse
            size the model's).
        model: a glimpse model (``rollout``).
        policy: ``"sample"`` (the paper: sample from the learned policy) or ``"greedy"``.
        seed: seeds the sampling (the global RNG is restored afterwards); the samples depend on
            ``seed`` and ``batch_size`` (the rollout draws from the global RNG batch by batch).
        provenance: more to record (e.g. the checkpoint).

    Returns:
        Sequences with ``method="ps-ram"``, the model's glimpse size and grid.
    """
    if policy not in ("sample", "greedy"):
        raise ValueError(f"policy_sequences: policy: expected 'sample' or 'greedy', found {policy!r}")
    grid = getattr(model, "grid", None)
    if target.grid is not None and target.grid != grid:
        raise ValueError("policy_sequences: the target's grid is not the model's; a model looks at its own cells")
    rule = make_policy(policy)
    device = next(model.parameters()).device
    glimpse = model.config.glimpse_size
    image_size = tuple(target.dataset.image_shape[1:])
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for rows in torch.arange(len(target.indices)).split(batch_size):
                ro = model.rollout(target.images(rows).to(device), target.num_glimpses, policy=rule)
                chunks.append(top_left(ro.locations.cpu(), image_size, glimpse))
    finally:
        model.train(was_training)
    corners = torch.cat(chunks) if chunks else torch.zeros(0, target.num_glimpses, 2, dtype=torch.long)
    if grid is None:  # Gaussian policy: keep every glimpse inside the image, as the file format requires
        corners = torch.minimum(corners.clamp_min(0), torch.tensor([image_size[0] - glimpse, image_size[1] - glimpse]))
    return target.sequences(corners, glimpse_size=glimpse, grid=grid, method="ps-ram",
                            provenance={"policy": policy, "seed": seed, "num_glimpses": target.num_glimpses,
                                        **(provenance or {})})
