"""RAM with an inference network over glimpse locations, for wake-sleep training (Ba et al. 2015).

The network used at test time is exactly :class:`foveal.models.ram.RAM` (same rollout, same
parameters); :class:`WakeSleepRAM` adds an *inference network* ``q(l_t | l_{<t}, x, y)``, a proposal
over where to look that, unlike the policy, may see the whole image and the label. It is only used
by the ``wake-sleep`` algorithm (:mod:`foveal.training.wake_sleep`) and is ignored at evaluation.

One step of the proposal::

    c     = context(x, y) = ReLU(W_x pool(x) + W_y onehot(y))    # once per rollout, [B, inference_hidden]
    q_t   = head(ReLU(W_h h_{t-1} + c))                          # Normal(mu, std) or Categorical over the grid

``pool(x)`` is the image average-pooled to ``inference_pool x inference_pool`` (a coarse view of the
whole image: enough to see where the object is, cheap for any image size). ``h_{t-1}`` is the model's
recurrent state (detached, as for the location network), which carries the glimpses already taken,
so the proposal is autoregressive like the policy. The distribution family is the policy's (same
std for a Gaussian, same grid for a categorical), so importance weights ``pi / q`` are well defined.

Registered as ``ram-ws`` (Gaussian policy) and ``ram-grid-ws`` (categorical over a grid), with the
settings of :class:`WakeSleepRAMConfig` (those of :class:`~foveal.models.ram.RAMConfig` plus two).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Independent, Normal

from foveal.models.ram import RAM, RAMConfig
from foveal.models.registry import MODELS

__all__ = ["WakeSleepRAMConfig", "WakeSleepRAM", "InferenceNet"]


@dataclass(frozen=True)
class WakeSleepRAMConfig(RAMConfig):
    """:class:`RAMConfig` plus the inference network's settings.

    Attributes:
        inference_hidden: width of the inference network.
        inference_pool: side of the average-pooled image the inference network sees.
    """

    inference_hidden: int = 256
    inference_pool: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("inference_hidden", "inference_pool"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"WakeSleepRAMConfig.{name}: expected a positive integer, found {getattr(self, name)!r}")


class InferenceNet(nn.Module):
    """``q(l_t | h_{t-1}, x, y)``: the proposal of the module docstring."""

    def __init__(self, cfg: WakeSleepRAMConfig, num_outputs: int) -> None:
        super().__init__()
        self.pool = cfg.inference_pool
        self.num_classes = cfg.num_classes
        self.image = nn.Linear(cfg.in_channels * cfg.inference_pool ** 2, cfg.inference_hidden)
        self.label = nn.Linear(cfg.num_classes, cfg.inference_hidden, bias=False)
        self.state = nn.Linear(cfg.hidden_size, cfg.inference_hidden)
        self.head = nn.Linear(cfg.inference_hidden, num_outputs)

    def context(self, images: Tensor, labels: Tensor) -> Tensor:
        """images ``[B, C, H, W]``, labels ``[B]`` -> ``[B, inference_hidden]``."""
        coarse = F.adaptive_avg_pool2d(images, self.pool).flatten(1)  # [B, C * pool^2]
        onehot = F.one_hot(labels.long(), self.num_classes).to(images.dtype)
        return torch.relu(self.image(coarse) + self.label(onehot))

    def forward(self, hidden: Tensor, context: Tensor) -> Tensor:
        """hidden ``[B, H]`` (detached by the caller), context ``[B, inference_hidden]`` -> raw outputs."""
        return self.head(torch.relu(self.state(hidden) + context))


class WakeSleepRAM(RAM):
    """:class:`RAM` plus :class:`InferenceNet`; the rollout and the test-time network are RAM's."""

    def __init__(self, cfg: WakeSleepRAMConfig) -> None:
        super().__init__(cfg)
        self.inference = InferenceNet(cfg, 2 if self.grid is None else len(self.grid))

    def inference_distribution(self, hidden: Tensor, context: Tensor) -> torch.distributions.Distribution:
        """q over the next location, in the policy's family (see :meth:`RAM.location_distribution`)."""
        out = self.inference(hidden, context)
        if self.grid is None:
            return Independent(Normal(torch.tanh(out), self.config.location_std, validate_args=False), 1,
                               validate_args=False)
        return Categorical(logits=out, validate_args=False)


@MODELS.register("ram-ws", kind="glimpse")
def ram_ws(**config) -> WakeSleepRAM:
    """RAM (Gaussian policy) with an inference network, for ``wake-sleep`` training."""
    return WakeSleepRAM(WakeSleepRAMConfig(**config))


@MODELS.register("ram-grid-ws", kind="glimpse")
def ram_grid_ws(**config) -> WakeSleepRAM:
    """``ram-grid`` with an inference network over the grid's cells, for ``wake-sleep`` training."""
    return WakeSleepRAM(WakeSleepRAMConfig(**{"location": "categorical", "glimpse_net": "conv", **config}))
