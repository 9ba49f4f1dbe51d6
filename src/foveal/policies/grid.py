r"""Policies that pick cells of a location grid: the Saccader paper's engineered and learned policies.

Each is a :class:`foveal.models.base.Policy`, ``policy(state, images) -> locations [B, 2]`` (cell centres,
(row, col) in [-1, 1]), so it drives any glimpse model's ``rollout(images, T, policy=...)``: a grid
classifier (:class:`~foveal.models.bagnet.BagNet`, :class:`~foveal.models.saccader.Saccader`) reads the
logits of the chosen cells, a patch classifier cuts the patches there, a continuous model (RAM, DRAM)
looks at the centres. None chooses a cell twice: cells seen so far (``state.locations``, snapped to the
grid) are skipped.

==================  ===================================================================================
name                cells, in order
==================  ===================================================================================
``random``          uniformly at random, without replacement (no grid: uniform over [-1, 1]^2)
``center``          nearest to the image centre first, then outwards (no grid: the centre, every step)
``ordered-logits``  by the largest class logit of a grid model at the cell, highest first (greedy)
``sobel-mean``      by the mean of the Sobel gradient magnitude over the cell's patch, highest first
``sobel-variance``  by its variance over the patch (Kanopoulos et al. 1988 edge strength)
``learned``         the model's own policy: the Saccader cell's arg-max, or any glimpse model's greedy
                    rollout replayed (DRAM, RAM)
==================  ===================================================================================

The ranking policies score every cell once, at ``t = 0`` of each rollout (a rollout asks for
``t = 0, 1, ...`` in order), then take the best unvisited cell at every step; once an exit rule has
stopped some images they read the scores of the others by ``state.rows``. The Sobel magnitude of the
grey image ``x`` (channel mean) is ``sqrt((k_x * x)^2 + (k_y * x)^2)`` with the 3x3 Sobel kernels (the border
pixels repeated, so the image's edge is not an edge); a cell's patch is the ``grid.glimpse_size`` square at its
top-left pixel.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical

from foveal.models.base import PolicyState
from foveal.policies.basic import greedy_policy
from foveal.retina import LocationGrid
from foveal.saliency import sobel_magnitude


def visited_cells(locations: Tensor, grid: LocationGrid) -> Tensor:
    """``[B, t, 2]`` locations seen -> ``[B, G]`` float memory, 1 on the cells nearest to them."""
    B, t = locations.shape[:2]
    visited = locations.new_zeros(B, len(grid))
    if t:
        visited.scatter_(1, grid.nearest_index(locations), 1.0)
    return visited


def patch_statistics(values: Tensor, grid: LocationGrid, statistic: str) -> Tensor:
    """Mean or variance of ``values [B, 1, H, W]`` over every cell's patch -> ``[B, G]``."""
    k = grid.glimpse_size
    mean = F.avg_pool2d(values, k, stride=1)  # [B, 1, H - k + 1, W - k + 1]
    if statistic == "variance":
        mean = (F.avg_pool2d(values.square(), k, stride=1) - mean.square()).clamp_min(0)
    corners = grid.corners().to(values.device)
    return mean[:, 0, corners[:, 0], corners[:, 1]]


class RankingPolicy:
    """Scores every cell of a grid once per rollout (at ``t = 0``) and returns the best unvisited one.

    Args:
        grid: the cells to rank; None = the grid of the model being rolled out (``state.grid``).
    """

    def __init__(self, grid: Optional[LocationGrid] = None) -> None:
        self.grid = grid
        self._scores: Optional[Tensor] = None

    def scores(self, images: Tensor, grid: LocationGrid) -> Tensor:
        """``[B, G]`` higher = earlier."""
        raise NotImplementedError

    def without_grid(self, state: PolicyState, images: Tensor) -> Tensor:
        """Locations ``[B, 2]`` when neither the policy nor the model has a grid; ranking needs one by default."""
        raise ValueError(f"{type(self).__name__}: needs a location grid; the model has none, pass grid=")

    def __call__(self, state: PolicyState, images: Tensor) -> Tensor:
        grid = self.grid or state.grid
        if grid is None:
            return self.without_grid(state, images)
        if state.rows is not None and state.t > 0 and self._scores is not None:
            scores = self._scores[state.rows]  # an exit rule stopped some images: the others' ranks from t = 0
        else:
            if state.t == 0 or self._scores is None or self._scores.shape[0] != images.shape[0]:
                with torch.no_grad():
                    self._scores = self.scores(images, grid).float()
            scores = self._scores
        visited = visited_cells(state.locations, grid).bool()
        index = scores.masked_fill(visited, float("-inf")).argmax(-1)
        return grid.index_to_location(index)


class RandomPolicy(RankingPolicy):
    """Uniformly random cells without replacement (random scores, drawn from the global torch RNG); a model
    without a grid gets uniform locations in [-1, 1]^2 (where a repeat has probability 0)."""

    def without_grid(self, state: PolicyState, images: Tensor) -> Tensor:
        return torch.rand(images.shape[0], 2, device=images.device) * 2 - 1

    def scores(self, images: Tensor, grid: LocationGrid) -> Tensor:
        return torch.rand(images.shape[0], len(grid), device=images.device)


class CenterPolicy(RankingPolicy):
    """The cell nearest to the image centre, then the next nearest, ... (ties: lowest index); a model
    without a grid looks at the centre itself at every step."""

    def without_grid(self, state: PolicyState, images: Tensor) -> Tensor:
        return images.new_zeros(images.shape[0], 2)

    def scores(self, images: Tensor, grid: LocationGrid) -> Tensor:
        distance = grid.locations().to(images.device).square().sum(-1)  # [G]
        return (-distance).expand(images.shape[0], -1)


class SobelPolicy(RankingPolicy):
    """Cells by the mean (``statistic="mean"``) or variance of the Sobel magnitude over their patch."""

    def __init__(self, statistic: str, grid: Optional[LocationGrid] = None) -> None:
        if statistic not in ("mean", "variance"):
            raise ValueError(f"SobelPolicy.statistic: expected 'mean' or 'variance', found {statistic!r}")
        super().__init__(grid)
        self.statistic = statistic

    def scores(self, images: Tensor, grid: LocationGrid) -> Tensor:
        return patch_statistics(sobel_magnitude(images, per_channel=False), grid, self.statistic)  # the grey image


class OrderedLogitsPolicy(RankingPolicy):
    """Cells by the largest class logit of a grid model (``model.encode(images).logits``), highest first."""

    def __init__(self, model: nn.Module) -> None:
        if not hasattr(model, "encode"):
            raise ValueError(f"ordered-logits: expected a grid model with encode() (bagnet, saccader), "
                             f"found {type(model).__name__}")
        super().__init__(model.grid)
        self.model = model

    def scores(self, images: Tensor, grid: LocationGrid) -> Tensor:
        logits = self.model.encode(images).logits  # [B, K, h, w]
        return logits.flatten(2).amax(1)  # [B, G]


class SaccaderPolicy:
    """The Saccader cell's policy (Eq. 1-3) for any model: arg-max (``sample=False``) or a sample.

    The mixed features are computed once per rollout, at ``t = 0``; the cell's memory is the cells
    seen so far (``state.locations`` snapped to the Saccader's grid).
    """

    def __init__(self, model: nn.Module, *, sample: bool = False) -> None:
        self.model, self.sample = model, sample
        self._mixed: Optional[Tensor] = None

    def __call__(self, state: PolicyState, images: Tensor) -> Tensor:
        grid = self.model.grid
        with torch.no_grad():
            if state.rows is not None and state.t > 0 and self._mixed is not None:
                mixed = self._mixed[state.rows]  # an exit rule stopped some images
            else:
                if state.t == 0 or self._mixed is None or self._mixed.shape[0] != images.shape[0]:
                    self._mixed = self.model.mixed_features(self.model.encode(images))
                mixed = self._mixed
            logits = self.model.cell(mixed, visited_cells(state.locations, grid))  # [B, G]
        index = Categorical(logits=logits).sample() if self.sample else logits.argmax(-1)
        return grid.index_to_location(index)


class ModelPolicy:
    """Any glimpse model's own locations: its rollout (under ``policy``, default greedy) replayed step by step.

    The rollout is run at ``t = 0`` for ``horizon`` steps and again, longer, if more are asked for
    (with a deterministic ``policy`` the first steps are the same).
    """

    def __init__(self, model: nn.Module, *, policy=None, horizon: int = 12) -> None:
        self.model, self.policy, self.horizon = model, policy or greedy_policy, horizon
        self._locations: Optional[Tensor] = None

    def __call__(self, state: PolicyState, images: Tensor) -> Tensor:
        if state.rows is not None and state.t > 0 and self._locations is not None \
                and state.t < self._locations.shape[1]:
            return self._locations[state.rows, state.t]  # an exit rule stopped some images
        stale = self._locations is None or self._locations.shape[0] != images.shape[0]
        if state.t == 0 or stale or state.t >= self._locations.shape[1]:
            steps = max(self.horizon, 2 * (state.t + 1))
            with torch.no_grad():
                self._locations = self.model.rollout(images, steps, policy=self.policy).locations
        return self._locations[:, state.t]
