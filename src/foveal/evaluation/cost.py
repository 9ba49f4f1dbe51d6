r"""What a glimpse costs: multiply-adds (MACs) per image, counted from the model's own layers as it runs.

A rollout of n glimpses costs ``fixed + n * per_glimpse`` MACs per image: ``fixed`` is what runs once
whatever n is (the Saccader's representation and attention networks, DRAM's context network), ``per_glimpse``
what runs at every step (retina, glimpse network, core, classifier, location and baseline heads, a stop head,
the Saccader cell). :func:`glimpse_cost` finds both by running the model on one image for 1 and 2 glimpses and
counting every layer call with forward hooks; nothing is typed in by hand, so a changed width, scale count or
layout is counted as it is.

Counted, per call (``rows`` = the leading dimensions of the input, e.g. the batch):

==========================================  ===================================================================
``Linear(i, o)``                            ``rows * i * o``
``ConvNd``                                  ``output elements * in_channels / groups * prod(kernel)``
``RNNCell / GRUCell / LSTMCell``            ``rows * g * (i * h + h * h)`` with g = 1 / 3 / 4 gates
a module with ``macs(inputs, output)``      what it returns (the Saccader cell's three ``G x d`` products)
average pooling                             one add per input element read (the retina's coarser scales,
                                            DRAM's coarse image), counted as one MAC each
==========================================  ===================================================================

Not counted: biases, activations, BatchNorm (foldable into the convolution before it), softmax, the
gather that cuts a patch; they are a small part of each layer. A profiler counts the same layers:
``torch.utils.flop_counter.FlopCounterMode`` reports FLOPs = 2 x MACs for the matrix products and
convolutions (not pooling), which ``tests/test_cost.py`` checks against the hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["GlimpseCost", "count_macs", "glimpse_cost", "module_macs"]

_GATES = {nn.RNNCell: 1, nn.GRUCell: 3, nn.LSTMCell: 4}
_POOLS = ("avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool2d", "avg_pool1d", "avg_pool3d")
POOLING = "retina/pooling"


def module_macs(module: nn.Module, inputs: tuple, output: Any) -> Optional[int]:
    """MACs of one call of a counted layer (module docstring), None for any other module."""
    own = getattr(module, "macs", None)
    if callable(own):
        return int(own(inputs, output))
    if isinstance(module, nn.Linear):
        return inputs[0].numel() // module.in_features * module.in_features * module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * int(torch.tensor(module.kernel_size).prod())
        return output.numel() * per_output
    for cell, gates in _GATES.items():
        if isinstance(module, cell):
            rows = inputs[0].numel() // module.input_size
            return rows * gates * (module.input_size + module.hidden_size) * module.hidden_size
    return None


class _PoolCounter(TorchDispatchMode):
    """Counts the input elements of average-pooling ops, which are no module (the retina calls them)."""

    def __init__(self) -> None:
        super().__init__()
        self.adds = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in _POOLS:
            self.adds += args[0].numel()
        return func(*args, **(kwargs or {}))


def count_macs(model: nn.Module, run: Callable[[], Any]) -> dict[str, int]:
    """MACs of ``run()`` by the part of ``model`` they belong to (its top-level child, ``"retina/pooling"``).

    Every counted layer (module docstring) of ``model`` gets a forward hook for the time of the call; a
    module with its own ``macs`` is counted whole, its children not again.
    """
    parts: dict[str, int] = {}
    hooks = []
    owned: list[str] = []  # modules counted whole by their own macs()
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in owned):
            continue
        if callable(getattr(module, "macs", None)):
            owned.append(name)
        elif not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, *_GATES)):
            continue

        def hook(mod, inputs, output, part=name.split(".")[0] or type(model).__name__):
            parts[part] = parts.get(part, 0) + (module_macs(mod, inputs, output) or 0)

        hooks.append(module.register_forward_hook(hook))
    pools = _PoolCounter()
    try:
        with pools:
            run()
    finally:
        for h in hooks:
            h.remove()
    if pools.adds:
        parts[POOLING] = pools.adds
    return parts


@dataclass(frozen=True)
class GlimpseCost:
    """MACs per image: ``fixed + glimpses * per_glimpse``; ``parts`` splits both by part of the model."""

    fixed: int
    per_glimpse: int
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # part -> (fixed, per glimpse)

    def total(self, glimpses: float | Tensor) -> float | Tensor:
        """MACs per image after ``glimpses`` glimpses (a number, or a tensor of them)."""
        return self.fixed + glimpses * self.per_glimpse

    def as_dict(self) -> dict[str, Any]:
        return {"fixed_macs": self.fixed, "macs_per_glimpse": self.per_glimpse,
                "parts": {k: {"fixed": f, "per_glimpse": p} for k, (f, p) in sorted(self.parts.items())}}


@torch.no_grad()
def glimpse_cost(model: nn.Module, image_shape: tuple[int, int, int], *, policy=None,
                 device: str | torch.device = "cpu") -> GlimpseCost:
    """Count one image's rollout of 1 and of 2 glimpses; their difference is the cost of a glimpse.

    Args:
        model: a glimpse or grid model (evaluated in eval mode; its mode is restored).
        image_shape: ``(C, H, W)`` of the data.
        policy: the policy that drives the rollout (default: the model's greedy policy); a policy that runs
            a network of its own (``ordered-logits``, ``learned``) adds that network's cost if it is a part of
            ``model``, and otherwise is not counted.

    Raises:
        ValueError: if the cost is not linear in the glimpses (1, 2 and 3 glimpses checked).
    """
    from foveal.policies.basic import greedy_policy

    was_training = model.training
    model.eval()
    images = torch.rand(1, *image_shape, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        counts = [count_macs(model, lambda n=n: model.rollout(images, n, policy=policy or greedy_policy))
                  for n in (1, 2, 3)]
    finally:
        model.train(was_training)
    names = sorted(set().union(*counts))
    parts = {}
    for name in names:
        one, two, three = (c.get(name, 0) for c in counts)
        if three - two != two - one:
            raise ValueError(f"glimpse_cost: the MACs of {type(model).__name__}.{name} are not linear in the number "
                             f"of glimpses ({one}, {two}, {three} for 1, 2, 3)")
        parts[name] = (one - (two - one), two - one)
    return GlimpseCost(fixed=sum(f for f, _ in parts.values()), per_glimpse=sum(p for _, p in parts.values()),
                       parts=parts)
