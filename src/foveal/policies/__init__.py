"""Location policies: one registry, one name = one meaning, for continuous and grid models alike.

Seam 3 of foveal: a policy is ``policy(state, images) -> locations``, with ``state`` a
:class:`foveal.models.PolicyState` and locations ``[B, 2]`` (row, col) in [-1, 1]. Pass one as
``model.rollout(images, T, policy=make_policy(name, model=model))``. ``None`` (the policy ``sample``)
means "sample from the model's own location network", the on-policy behaviour REINFORCE needs.

Every name below means the same on every model. Policies that rank grid cells never choose a cell
twice; without a grid (a continuous model such as RAM) ``random`` is uniform over [-1, 1]^2 and
``center`` is the centre at every step. ``foveal list`` and the ``--help`` of every command print this
table from the registry (``POLICIES.describe()``)::

    sample          the model's own location policy, sampled (on-policy; what REINFORCE trains)
    greedy          the mode of the model's own policy (Gaussian mean, most probable cell)
    random          uniformly random places, never the same grid cell twice
    center          the place nearest the image centre not yet seen, then outwards
    ordered-logits  cells by a grid model's largest class logit, highest first
    sobel-mean      cells by the mean Sobel edge magnitude over their patch, highest first
    sobel-variance  cells by the variance of the Sobel edge magnitude over their patch
    learned         another model's own policy: the Saccader cell's arg-max, or a glimpse model's greedy path

A policy of one's own is registered in :data:`POLICIES` where its builder is defined,
``@POLICIES.register("name")`` (the docstring's first paragraph is its summary; ``needs_model=True`` if it
reads a model); its builder takes ``model`` (the model being rolled out, or the model whose policy is used)
and ``grid`` keywords. This module does not import torch (the CLI lists policies in ``--help`` without it):
the built-ins are registered lazily as ``"module:function"`` (:mod:`foveal.policies.builtin`), imported when
first built. The policy types are in :mod:`foveal.policies.basic` (greedy, replay) and
:mod:`foveal.policies.grid` (cell rankings, the Saccader's and any model's learned policy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from foveal.registry import Registry

if TYPE_CHECKING:
    from foveal.models.base import Policy

__all__ = ["POLICIES", "make_policy"]


def make_policy(name: str, *, model: Any = None, grid: Any = None) -> Optional["Policy"]:
    """The policy called ``name`` (``POLICIES.build`` is this function); ``"sample"`` gives ``None`` (the model
    samples its own locations).

    Args:
        model: the model the policy reads (``ordered-logits``: its logits; ``learned``: its policy); the
            model being rolled out is the natural choice.
        grid: the cells that ranking policies choose from (a :class:`foveal.retina.LocationGrid`); None =
            the rolled-out model's grid, if it has one.
    """
    entry = POLICIES.entry(name)
    if entry.meta.get("needs_model") and model is None:
        raise ValueError(f"policy {name!r}: needs a model")
    return entry.load()(model=model, grid=grid)  # a lazy builder is imported once, then kept


POLICIES = Registry("policy", sort=False, build=make_policy)
# The built-ins, lazily: (name, builder, needs a model, summary); the builders import torch, this module does not.
for _name, _builder, _needs_model, _summary in (
        ("sample", "foveal.policies.builtin:sample", False,
         "the model's own location policy, sampled (on-policy; what REINFORCE trains)"),
        ("greedy", "foveal.policies.builtin:greedy", False,
         "the mode of the model's own policy (Gaussian mean, most probable cell)"),
        ("random", "foveal.policies.builtin:random", False, "uniformly random places, never the same grid cell twice"),
        ("center", "foveal.policies.builtin:center", False,
         "the place nearest the image centre not yet seen, then outwards"),
        ("ordered-logits", "foveal.policies.builtin:ordered_logits", True,
         "cells by a grid model's largest class logit, highest first"),
        ("sobel-mean", "foveal.policies.builtin:sobel_mean", False,
         "cells by the mean Sobel edge magnitude over their patch, highest first"),
        ("sobel-variance", "foveal.policies.builtin:sobel_variance", False,
         "cells by the variance of the Sobel edge magnitude over their patch"),
        ("learned", "foveal.policies.builtin:learned", True,
         "another model's own policy: the Saccader cell's arg-max, or a glimpse model's greedy path")):
    POLICIES.register(_name, _builder, summary=_summary, needs_model=_needs_model)
del _name, _builder, _needs_model, _summary
