"""Builders of the built-in policies, ``builder(*, model=None, grid=None) -> policy``, registered by name in
:mod:`foveal.policies` (which imports this module only when one of them is built)."""

from __future__ import annotations

from typing import Optional

from torch import nn

from foveal.models.base import Policy
from foveal.policies.basic import greedy_policy
from foveal.policies.grid import (CenterPolicy, ModelPolicy, OrderedLogitsPolicy, RandomPolicy, SaccaderPolicy,
                                  SobelPolicy)
from foveal.retina import LocationGrid

Model, Grid = Optional[nn.Module], Optional[LocationGrid]


def sample(*, model: Model = None, grid: Grid = None) -> Optional[Policy]:
    return None  # rollout(..., policy=None): the model samples from its own location distribution


def greedy(*, model: Model = None, grid: Grid = None) -> Policy:
    return greedy_policy


def random(*, model: Model = None, grid: Grid = None) -> Policy:
    return RandomPolicy(grid)


def center(*, model: Model = None, grid: Grid = None) -> Policy:
    return CenterPolicy(grid)


def ordered_logits(*, model: Model = None, grid: Grid = None) -> Policy:
    return OrderedLogitsPolicy(model)


def sobel_mean(*, model: Model = None, grid: Grid = None) -> Policy:
    return SobelPolicy("mean", grid)


def sobel_variance(*, model: Model = None, grid: Grid = None) -> Policy:
    return SobelPolicy("variance", grid)


def learned(*, model: Model = None, grid: Grid = None) -> Policy:
    return SaccaderPolicy(model) if hasattr(model, "cell") else ModelPolicy(model)
