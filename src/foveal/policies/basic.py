"""Policies that follow the model's own location distribution or a given path, on any glimpse model."""

from __future__ import annotations

from torch import Tensor
from torch.distributions import Categorical

from foveal.models.base import PolicyState


def greedy_policy(state: PolicyState, images: Tensor) -> Tensor:
    """The mode of the model's own location distribution."""
    dist = state.distribution
    if dist is None:
        raise ValueError("greedy policy: the model exposes no location distribution")
    if isinstance(dist, Categorical):
        return state.grid.index_to_location(dist.probs.argmax(-1))
    return dist.mean


class ReplayPolicy:
    """Replays stored locations ``[B, T, 2]``: step t returns ``locations[:, t]`` (of ``state.rows``, if given)."""

    def __init__(self, locations: Tensor) -> None:
        self.locations = locations

    def __call__(self, state: PolicyState, images: Tensor) -> Tensor:
        step = self.locations[:, state.t]
        return (step if state.rows is None else step[state.rows.to(step.device)]).to(images.device)
