"""Location policies: one registry, one name = one meaning, for continuous and grid models alike.

Seam 3 of foveal: a policy is ``policy(state, images) -> locations``, with ``state`` a
:class:`foveal.models.PolicyState` and locations ``[B, 2]`` (row, col) in [-1, 1]. Pass one as
``model.rollout(images, T, policy=make_policy(name, model=model))``. ``None`` (the policy ``sample``)
means "sample from the model's own location network", the on-policy behaviour REINFORCE needs.

Every name below means the same on every model. Policies that rank grid cells never choose a cell
twice; without a grid (a continuous model such as RAM) ``random`` is uniform over [-1, 1]^2 and
``center`` is the centre at every step. ``foveal list`` and the ``--help`` of every command print this
table from the registry (:func:`describe_policies`)::

    sample          the model's own location policy, sampled (on-policy; what REINFORCE trains)
    greedy          the mode of the model's own policy (Gaussian mean, most probable cell)
    random          uniformly random places, never the same grid cell twice
    center          the place nearest the image centre not yet seen, then outwards
    ordered-logits  cells by a grid model's largest class logit, highest first
    sobel-mean      cells by the mean Sobel edge magnitude over their patch, highest first
    sobel-variance  cells by the variance of the Sobel edge magnitude over their patch
    learned         another model's own policy: the Saccader cell's arg-max, or a glimpse model's greedy path

A policy of one's own is registered with :func:`register_policy`; its builder takes ``model`` (the
model being rolled out, or the model whose policy is used) and ``grid`` keywords. This module does not
import torch (the CLI lists policies in ``--help`` without it): a built-in builder is named as
``"module:function"`` (:mod:`foveal.policies.builtin`) and imported when first built. The policy types
are in :mod:`foveal.policies.basic` (greedy, replay) and :mod:`foveal.policies.grid` (cell rankings, the
Saccader's and any model's learned policy).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

if TYPE_CHECKING:
    from foveal.models.base import Policy

__all__ = ["register_policy", "make_policy", "policy_names", "describe_policies", "check_policy_name"]

Builder = Callable[..., Optional["Policy"]]


@dataclass(frozen=True)
class _Entry:
    builder: Union[Builder, str]  # a callable, or "module:function" imported on first use
    summary: str
    needs_model: bool


_POLICIES: dict[str, _Entry] = {}


def register_policy(name: str, builder: Union[Builder, str], *, summary: str, needs_model: bool = False) -> None:
    """Add ``builder(*, model=None, grid=None) -> policy`` under ``name``; a name is registered once.

    Args:
        builder: the callable, or ``"module:function"`` naming it (imported when the policy is first built).
        summary: one line for ``foveal list`` and ``--help``.
        needs_model: :func:`make_policy` refuses to build it without ``model``.
    """
    if name in _POLICIES:
        raise ValueError(f"policy registry: the name {name!r} is already registered")
    if not (callable(builder) or isinstance(builder, str) and ":" in builder):
        raise TypeError(f"register_policy({name!r}): builder expected a callable or 'module:function', found {builder!r}")
    _POLICIES[name] = _Entry(builder, summary, needs_model)


def policy_names() -> list[str]:
    """Registered policy names, in the order they were registered."""
    return list(_POLICIES)


def describe_policies() -> list[tuple[str, str]]:
    """``(name, summary)`` of every registered policy."""
    return [(name, entry.summary) for name, entry in _POLICIES.items()]


def check_policy_name(field: str, name: Any) -> None:
    """Raise a ``ValueError`` naming ``field`` unless ``name`` is a registered policy."""
    if not isinstance(name, str) or name not in _POLICIES:
        raise ValueError(f"{field}: expected one of {policy_names()}, found {name!r}")


def make_policy(name: str, *, model: Any = None, grid: Any = None) -> Optional["Policy"]:
    """The policy called ``name``; ``"sample"`` gives ``None`` (the model samples its own locations).

    Args:
        model: the model the policy reads (``ordered-logits``: its logits; ``learned``: its policy); the
            model being rolled out is the natural choice.
        grid: the cells that ranking policies choose from (a :class:`foveal.retina.LocationGrid`); None =
            the rolled-out model's grid, if it has one.
    """
    check_policy_name("policy", name)
    entry = _POLICIES[name]
    if entry.needs_model and model is None:
        raise ValueError(f"policy {name!r}: needs a model")
    builder = entry.builder
    if isinstance(builder, str):  # imported once, then kept: algorithms build their policy every step
        module, _, function = builder.partition(":")
        builder = getattr(importlib.import_module(module), function)
        _POLICIES[name] = _Entry(builder, entry.summary, entry.needs_model)
    return builder(model=model, grid=grid)


for _name, _function, _summary, _needs_model in (
        ("sample", "sample", "the model's own location policy, sampled (on-policy; what REINFORCE trains)", False),
        ("greedy", "greedy", "the mode of the model's own policy (Gaussian mean, most probable cell)", False),
        ("random", "random", "uniformly random places, never the same grid cell twice", False),
        ("center", "center", "the place nearest the image centre not yet seen, then outwards", False),
        ("ordered-logits", "ordered_logits", "cells by a grid model's largest class logit, highest first", True),
        ("sobel-mean", "sobel_mean", "cells by the mean Sobel edge magnitude over their patch, highest first", False),
        ("sobel-variance", "sobel_variance", "cells by the variance of the Sobel edge magnitude over their patch",
         False),
        ("learned", "learned", "another model's own policy: the Saccader cell's arg-max, or a glimpse model's greedy "
         "path", True)):
    register_policy(_name, f"foveal.policies.builtin:{_function}", summary=_summary, needs_model=_needs_model)
del _name, _function, _summary, _needs_model
