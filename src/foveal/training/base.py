"""Types shared by the training engine and every training algorithm.

Seam 2 of foveal: an algorithm turns ``(model, batch)`` into a :class:`LossOutput`; the engine
(:mod:`foveal.training.engine`) runs the loop, validation, logging and checkpoints for every
algorithm and knows nothing about any model.

A batch is a dict collated from dataset items: ``{"image": [B, C, H, W] float in [0, 1],
"label": [B] int64, "index": [B] int64}`` (dataset index, used to look up supervision sequences).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn


@dataclass
class LossOutput:
    """A scalar loss to minimise and the floats worth logging for it (``{"loss/ce": 0.3, ...}``)."""

    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Algorithm(Protocol):
    """A training algorithm.

    ``loss`` is called in train mode with gradients enabled; ``metrics`` in eval mode under
    ``torch.no_grad()`` on validation / test batches and returns per-batch means, which the engine
    averages weighted by batch size. ``metrics`` must contain ``"accuracy"`` and ``"ce"``.
    """

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput: ...

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]: ...
