"""Location policies that can drive any glimpse model in place of its own location network.

Seam 3 of foveal: a policy is ``policy(state, images) -> locations``, with ``state`` a
:class:`foveal.models.PolicyState` and locations ``[B, 2]`` (row, col) in [-1, 1]. Pass one as
``model.rollout(images, T, policy=...)``. ``None`` means "sample from the model's own location
network", the on-policy behaviour REINFORCE needs.

| name     | what it does                                                             |
|----------|--------------------------------------------------------------------------|
| sample   | the model's own policy, sampled (``None``)                               |
| greedy   | the mode of the model's own policy (Gaussian mean, most probable cell)   |
| random   | uniform over [-1, 1]^2, or over the model's grid cells: the control      |
| center   | always the image centre (the grid cell nearest to it on a grid)          |
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor
from torch.distributions import Categorical

from foveal.models.base import Policy, PolicyState


def greedy_policy(state: PolicyState, images: Tensor) -> Tensor:
    """The mode of the model's own location distribution."""
    dist = state.distribution
    if dist is None:
        raise ValueError("greedy policy: the model exposes no location distribution")
    if isinstance(dist, Categorical):
        return state.grid.index_to_location(dist.probs.argmax(-1))
    return dist.mean


def random_policy(state: PolicyState, images: Tensor) -> Tensor:
    """Uniform locations (over the grid's cells when the model has a grid)."""
    B = images.shape[0]
    if state.grid is not None:
        cells = torch.randint(len(state.grid), (B,), device=images.device)
        return state.grid.index_to_location(cells)
    return torch.rand(B, 2, device=images.device) * 2 - 1


def center_policy(state: PolicyState, images: Tensor) -> Tensor:
    """The image centre."""
    return images.new_zeros(images.shape[0], 2)


class ReplayPolicy:
    """Replays stored locations ``[B, T, 2]``: step t returns ``locations[:, t]``."""

    def __init__(self, locations: Tensor) -> None:
        self.locations = locations

    def __call__(self, state: PolicyState, images: Tensor) -> Tensor:
        return self.locations[:, state.t].to(images.device)


_POLICIES: dict[str, Optional[Callable[[PolicyState, Tensor], Tensor]]] = {
    "sample": None,
    "greedy": greedy_policy,
    "random": random_policy,
    "center": center_policy,
}


def policy_names() -> list[str]:
    return list(_POLICIES)


def make_policy(name: str) -> Optional[Policy]:
    """The policy called ``name`` (see the table above); ``"sample"`` gives ``None``."""
    if name not in _POLICIES:
        raise ValueError(f"policy: expected one of {policy_names()}, found {name!r}")
    return _POLICIES[name]
