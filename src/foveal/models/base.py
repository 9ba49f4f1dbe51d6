"""Types shared by every glimpse model: the rollout record and the state a policy sees.

Seam 1 of foveal: ``model.rollout(images, num_glimpses, *, policy=None, forced_locations=None)``
returns a :class:`Rollout`, always the same type, for training, validation and evaluation alike.
The built-in models also take ``exit_rule=`` (:mod:`foveal.models.early_exit`): each image then stops
once its prediction is sure enough, and only the undecided images are looked at again.

Locations are ``(row, col)`` pairs in ``[-1, 1]``: the *centre* of the glimpse, ``-1`` the top (left)
edge of the image and ``+1`` the bottom (right) edge. :mod:`foveal.retina` converts to pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from foveal.retina import LocationGrid


@dataclass
class Rollout:
    """What one unrolled glimpse sequence produced.

    Attributes:
        locations: ``[B, T, 2]`` glimpse centres, (row, col) in [-1, 1], the ones actually looked at.
        log_prob: ``[B, T]`` log-probability of ``locations[:, t]`` under the model's own location
            distribution at step t (also for forced or policy-given locations: that is what
            supervision sequences maximise).
        logits: ``[B, T, C]`` class logits after each glimpse; ``logits[:, -1]`` is the prediction.
        baseline: ``[B, T]`` learned estimate of the reward, from the state in which ``locations[:, t]``
            was chosen (so it does not depend on that choice: an unbiased control variate).
        indices: ``[B, T]`` grid cell indices for models with a discrete location grid, else ``None``.
        entropy: ``[B, T]`` entropy of the location distribution at each step.
        stop_logits: ``[B, T]`` logit of the stop action after each glimpse, for a model with a stop head
            (the learned stopping policy, DT-RAM style), else ``None``.
        glimpses: ``[B]`` glimpses each image took under an exit rule (:mod:`foveal.models.early_exit`;
            its steps after the stop are padded, its prediction repeated), ``None`` for a fixed-T rollout.
    """

    locations: Tensor
    log_prob: Tensor
    logits: Tensor
    baseline: Tensor
    indices: Optional[Tensor] = None
    entropy: Optional[Tensor] = None
    stop_logits: Optional[Tensor] = None
    glimpses: Optional[Tensor] = None

    @property
    def num_glimpses(self) -> int:
        return self.locations.shape[1]

    def prediction(self) -> Tensor:
        """``[B]`` class predicted after the last glimpse."""
        return self.logits[:, -1].argmax(-1)


@dataclass
class PolicyState:
    """What a policy may look at when choosing the glimpse of step ``t`` (0-based).

    Attributes:
        t: index of the glimpse being chosen.
        hidden: ``[B, H]`` the model's recurrent state before this glimpse (detached).
        locations: ``[B, t, 2]`` locations already visited.
        distribution: the model's own location distribution at this step, if it has one
            (a ``Normal`` over (row, col), or a ``Categorical`` over the cells of ``grid``).
        grid: the model's discrete location grid, if it has one (a
            :class:`foveal.retina.LocationGrid`); policies should then return cell centres.
        rows: ``[b]`` the batch indices of the images asked about, once an exit rule has stopped some
            (:mod:`foveal.models.early_exit`): ``images``, ``hidden`` and ``locations`` then hold those rows
            only, and a policy that keeps something per image (a replayed path, scores ranked at t = 0)
            indexes it with ``rows``. None: the whole batch, in order.
    """

    t: int
    hidden: Optional[Tensor]
    locations: Tensor
    distribution: Optional[torch.distributions.Distribution] = None
    grid: Optional["LocationGrid"] = None
    rows: Optional[Tensor] = None


class Policy(Protocol):
    """Seam 3: ``policy(state, images) -> locations [B, 2]`` in [-1, 1], (row, col)."""

    def __call__(self, state: PolicyState, images: Tensor) -> Tensor: ...


def check_glimpse_fits(image_size: tuple[int, int], glimpse_size: int, key: str = "model.glimpse_size") -> None:
    """The finest glimpse lies inside the image (coarser scales may reach past it, into the zero padding).

    Raises:
        ValueError: naming ``key`` and the image size, which comes from the data.
    """
    H, W = image_size
    if glimpse_size > min(H, W):
        raise ValueError(f"{key}: expected at most {min(H, W)} px, the side of the {H}x{W} images (from the data), "
                         f"found {glimpse_size}")


def check_grid_fits(image_size: tuple[int, int], glimpse_size: int, grid: Optional[int | tuple[int, int]],
                    grid_stride: Optional[int], key: str = "model") -> None:
    """A grid of ``grid`` cells per axis (or one every ``grid_stride`` px) has distinct cells inside the image.

    Raises:
        ValueError: naming ``<key>.grid`` / ``<key>.grid_stride``, the image size and the glimpse size.
    """
    H, W = image_size
    if grid_stride is not None and grid_stride < 1:
        raise ValueError(f"{key}.grid_stride: expected a positive integer, found {grid_stride!r}")
    if grid is None:
        return
    counts = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if len(counts) != 2:
        raise ValueError(f"{key}.grid: expected cells per axis, an integer or [rows, cols], found {grid!r}")
    for n, side, axis in zip(counts, (H, W), ("rows", "cols")):
        positions = side - glimpse_size + 1
        if not 1 <= n <= positions:
            raise ValueError(f"{key}.grid: expected 1..{positions} cells per axis ({axis}: {glimpse_size} px glimpses "
                             f"have {positions} distinct positions in the {H}x{W} images from the data), found {n}")
