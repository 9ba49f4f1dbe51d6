r"""Deep Recurrent Attention Model (Ba, Mnih & Kavukcuoglu 2014), the Saccader paper's learned baseline.

Like RAM (:mod:`foveal.models.ram`) it looks at multi-resolution glimpses one after the other, with
three differences: a *context network* reads a coarse, downsampled copy of the whole image and sets
the initial state of the location layer, so the first glimpse already depends on the image; the core
has *two* recurrent layers, the lower ``r1`` for classification and the upper ``r2`` for deciding
where to look next; and the glimpse network combines "what" and "where" multiplicatively.
One step t = 0..T-1 of :meth:`DRAM.rollout`::

    pi_t  = Normal(tanh(emission(r2_{t-1})), std)       # r2_{-1} = (context(coarse x), 0)
    b_t   = baseline(sg[r2_{t-1}])
    l_t  ~ pi_t  (or forced / given by a policy)
    g_t   = ReLU(what(retina(x, l_t))) * ReLU(where(l_t))
    r1_t  = LSTM1(g_t, r1_{t-1});   y_t = classifier(r1_t)
    r2_t  = LSTM2(sg[r1_t], r2_{t-1})

Stop-gradients (``sg``), named as in RAM:

1. ``l_t`` is a sample: no gradient flows through the location into the glimpse.
2. ``r2`` reads ``r1_t.detach()``: the classification path (glimpse net, ``r1``, classifier) learns
   from the cross-entropy only, the location path (context net, ``r2``, emission) from the policy
   gradient only. (In RAM one state serves both, so its location net reads ``h.detach()``.)
3. The baseline reads ``r2.detach()``: it is a control variate trained by its own squared error.

It exposes the same :class:`~foveal.models.base.Rollout`, so :mod:`foveal.training.reinforce` trains it
unchanged (config ``saccader-dram-cluttered-fashion-mnist``). The Saccader paper's DRAM used 77 px
glimpses at 3 resolutions on 224 px images, a 2-layer LSTM and location std 0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from foveal.config import check_fields
from foveal.models.base import Policy, PolicyState, Rollout, check_glimpse_fits
from foveal.models.early_exit import ExitRule, StepRecorder
from foveal.models.registry import MODELS
from foveal.retina import extract_glimpses

__all__ = ["DRAMConfig", "DRAM"]


@dataclass(frozen=True)
class DRAMConfig:
    """Settings of a :class:`DRAM`.

    Attributes:
        in_channels, num_classes, image_size: from the data.
        glimpse_size, num_scales, scale_factor: the multi-resolution retina (:func:`foveal.retina.extract_glimpses`).
        glimpse_hidden: width of the "what" convolutions' linear layer input (conv channels 16, 32).
        location_hidden: width of the "where" layer.
        feature_size: glimpse feature size (both factors of the product).
        hidden_size: size of each LSTM layer.
        context_size: side of the coarse image the context network reads.
        location_std: std of the Gaussian location policy in [-1, 1] units.
    """

    in_channels: int
    num_classes: int
    image_size: tuple[int, int]
    glimpse_size: int = 12
    num_scales: int = 3
    scale_factor: int = 2
    glimpse_hidden: int = 128
    location_hidden: int = 64
    feature_size: int = 128
    hidden_size: int = 128
    context_size: int = 16
    location_std: float = 0.1

    def __post_init__(self) -> None:
        check_fields(self, "model")
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        for name in ("in_channels", "num_classes", "glimpse_size", "num_scales", "scale_factor", "glimpse_hidden",
                     "location_hidden", "feature_size", "hidden_size", "context_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DRAMConfig.{name}: expected a positive integer, found {value!r}")
        if not self.location_std > 0:
            raise ValueError(f"DRAMConfig.location_std: expected > 0, found {self.location_std!r}")
        check_glimpse_fits(self.image_size, self.glimpse_size)


def _small_conv(cin: int, size: int, out: int) -> nn.Sequential:
    """Two 3x3 conv-ReLU layers (the second with stride 2) and a linear layer to ``out``, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * math.ceil(size / 2) ** 2, out), nn.ReLU())


class DRAM(nn.Module):
    """DRAM; see the module docstring for one step and its stop-gradients."""

    def __init__(self, cfg: DRAMConfig) -> None:
        super().__init__()
        self.config = cfg
        self.grid = None
        self.what = nn.Sequential(_small_conv(cfg.num_scales * cfg.in_channels, cfg.glimpse_size, cfg.glimpse_hidden),
                                  nn.Linear(cfg.glimpse_hidden, cfg.feature_size))
        self.where = nn.Sequential(nn.Linear(2, cfg.location_hidden), nn.ReLU(),
                                   nn.Linear(cfg.location_hidden, cfg.feature_size))
        self.context = nn.Sequential(_small_conv(cfg.in_channels, cfg.context_size, cfg.hidden_size),
                                     nn.Linear(cfg.hidden_size, cfg.hidden_size))
        self.r1 = nn.LSTMCell(cfg.feature_size, cfg.hidden_size)
        self.r2 = nn.LSTMCell(cfg.hidden_size, cfg.hidden_size)
        self.emission = nn.Linear(cfg.hidden_size, 2)
        self.baseline_net = nn.Linear(cfg.hidden_size, 1)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_classes)

    def location_distribution(self, r2_hidden: Tensor) -> torch.distributions.Distribution:
        """pi(l | r2): ``Normal`` with batch shape [B] and event shape [2]."""
        return Independent(Normal(torch.tanh(self.emission(r2_hidden)), self.config.location_std, validate_args=False),
                           1, validate_args=False)

    def initial_states(self, images: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``r1 = (0, 0)``; ``r2 = (context(coarse image), 0)``, each ``[B, hidden_size]``."""
        cfg = self.config
        coarse = F.adaptive_avg_pool2d(images, cfg.context_size)  # [B, C, s, s]
        zero = images.new_zeros(images.shape[0], cfg.hidden_size)
        return (zero, zero), (self.context(coarse), zero)

    def rollout(self, images: Tensor, num_glimpses: int, *, policy: Optional[Policy] = None,
                forced_locations: Optional[Tensor] = None, exit_rule: Optional[ExitRule] = None) -> Rollout:
        """Unroll ``num_glimpses`` steps; arguments and result as :meth:`foveal.models.ram.RAM.rollout`."""
        cfg = self.config
        B = images.shape[0]
        if tuple(images.shape[1:]) != (cfg.in_channels, *cfg.image_size):
            raise ValueError(f"DRAM.rollout: expected images [B, {cfg.in_channels}, {cfg.image_size[0]}, "
                             f"{cfg.image_size[1]}], found {list(images.shape)}")
        if forced_locations is not None and forced_locations.shape[:2] != (B, num_glimpses):
            raise ValueError(f"forced_locations: expected shape ({B}, {num_glimpses}, 2), "
                             f"found {tuple(forced_locations.shape)}")
        s1, s2 = self.initial_states(images)
        steps = StepRecorder(B, num_glimpses, exit_rule, images.device)
        seen = images.new_zeros(B, 0, 2)  # [b, t, 2] locations looked at by the images still looking
        for t in range(num_glimpses):
            dist = self.location_distribution(s2[0])
            baseline = self.baseline_net(s2[0].detach()).squeeze(-1)  # stop-gradient 3
            if policy is None:
                loc = dist.sample()  # stop-gradient 1: a sample, scored through log_prob only
            else:
                loc = policy(PolicyState(t, s2[0].detach(), seen, dist, None, steps.subset), images).detach()
            if forced_locations is not None:
                given = forced_locations[:, t].to(loc)
                loc = torch.where(torch.isnan(given), loc, given)
            log_prob, entropy = dist.log_prob(loc), dist.entropy()
            loc = loc.clamp(-1, 1)
            patches = extract_glimpses(images, loc, cfg.glimpse_size, cfg.num_scales, cfg.scale_factor)
            g = torch.relu(self.what(patches.flatten(1, 2))) * torch.relu(self.where(loc))
            s1 = self.r1(g, s1)
            logits = self.classifier(s1[0])
            s2 = self.r2(s1[0].detach(), s2)  # stop-gradient 2: the policy gradient stays on the location path
            steps.record(locations=loc, log_prob=log_prob, logits=logits, baseline=baseline, entropy=entropy)
            seen = torch.cat([seen, loc[:, None]], 1)
            keep = steps.stop(logits)
            if keep is not None:  # only the undecided images go on
                s1, s2 = (s1[0][keep], s1[1][keep]), (s2[0][keep], s2[1][keep])
                seen, images = seen[keep], images[keep]
                forced_locations = None if forced_locations is None else forced_locations[keep]
            if steps.finished:
                break
        return steps.rollout()


@MODELS.register("dram", kind="glimpse")
def dram(**config) -> DRAM:
    """Deep recurrent attention model (Ba et al. 2014): a context network, two LSTM layers.

    Settings: :class:`DRAMConfig`."""
    return DRAM(DRAMConfig(**config))
