"""Recurrent Attention Model (Mnih et al. 2014), and its grid variant (near-optimal glimpse sequences).

One step t = 0..T-1 of :meth:`RAM.rollout`::

    pi_t  = location_net(h_{t-1})            # Normal(mu, std) over [-1, 1]^2, or Categorical over a grid
    b_t   = baseline_net(h_{t-1})            # expected reward, from the state the choice is made in
    l_t  ~ pi_t  (or forced / given by a policy)
    g_t   = glimpse_net(retina(x, l_t), l_t)
    h_t   = core(g_t, h_{t-1})               # RNN (ReLU) / GRU / LSTM
    y_t   = classifier(h_t)                  # logits; y_{T-1} is the prediction
    s_t   = stop_net(sg[h_t])                # only with stop_head: the stop action's logit (DT-RAM)

``h_{-1} = 0``, so the first location is learned but does not depend on the image (nothing seen yet).

Stop-gradients (the questions users of RAM code ask most):

1. ``l_t`` is a *sample* (``dist.sample()``, or a forced / policy location): the retina is not
   differentiable in ``l``, so no gradient flows through the location into the glimpse. The only
   path from a loss to the location net is ``log_prob`` (REINFORCE, or a supervision sequence's
   log-likelihood).
2. The location net and the baseline read ``h_{t-1}.detach()``: the high-variance policy gradient
   and the baseline regression do not reach the core and glimpse net, which learn from the
   low-variance classification loss alone.
3. (In :mod:`foveal.training.reinforce`) the baseline is detached inside the advantage
   ``R - b_t``: it is a control variate, trained only by its own squared error.

The baseline reads ``h_{t-1}``, not ``h_t`` as in Mnih et al.: ``h_t`` already depends on ``l_t``,
which would bias the policy gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Independent, Normal

from foveal.config import check_fields
from foveal.models.base import Policy, PolicyState, Rollout, check_glimpse_fits, check_grid_fits
from foveal.models.early_exit import ExitRule, StepRecorder
from foveal.models.registry import MODELS
from foveal.retina import LocationGrid, extract_glimpses


@dataclass(frozen=True)
class RAMConfig:
    """Settings of a :class:`RAM`.

    Attributes:
        in_channels, num_classes, image_size: from the data (nothing assumes MNIST).
        glimpse_size: side of the finest glimpse patch in pixels.
        num_scales, scale_factor: multi-scale retina (scale k covers glimpse_size * factor**k px).
        glimpse_net: "mlp" (Mnih et al.: a linear layer on the flattened patches) or "conv" (two
            3x3 convolutions then a linear layer, as in the near-optimal-glimpse-sequences paper).
        glimpse_hidden, location_hidden, feature_size: widths of the "what", "where" and combined
            glimpse features.
        hidden_size: core state size.
        core: "rnn" (ReLU, Mnih et al.), "gru" or "lstm".
        location: "gaussian" (continuous, fixed std) or "categorical" (over a grid of cells).
        location_std: std of the Gaussian policy, in [-1, 1] units.
        location_head: how the Gaussian policy's mean is read from the state ``h`` (width ``hidden_size``):
            ``"linear"``, ``mu = tanh(W h + b)``, as in the common RAM code and every run saved before this
            field existed; or ``"scaled"``, ``mu = tanh(W h / sqrt(hidden_size) + b)``. Adam moves each of
            ``W``'s weights by about ``lr`` per step whatever the gradient's size, so the pre-activation
            ``W h`` moves by up to ``lr * sum_j |h_j|``, ~0.1 per step for 256 units. When the policy
            gradient is mostly noise (a small ``location_std`` makes the score ``(l - mu) / std**2`` large,
            and on a small centred image the reward hardly depends on ``l``), these steps are a random walk
            that carries ``W h`` far past +-2, where tanh pins the mean to the image border and its
            derivative (``1 - mu**2``) all but stops the gradient that could bring it back: glimpses 2..T
            end up on the borders and corners. ``"scaled"`` makes that step ``sqrt(hidden_size)`` times
            smaller (a readout multiplier, as in muP, Yang et al. 2022, which takes 1 / hidden_size), so the
            mean moves where the reward consistently says, not where the noise walks it; it also learns a policy more slowly where the
            reward does depend on the place (the demo: 78.6 % instead of 89.0 % after 3,000 iterations, which
            is why it is not the default there). Weights have the same shape either way; a categorical
            policy takes "linear" only.
        grid: cells per axis of the categorical policy's grid (an int or (rows, cols)), spread
            evenly (:meth:`LocationGrid.from_count`); or ``grid_stride`` pixels apart.
        stop_head: add a stop action after each glimpse (a linear layer on ``h_t``, DT-RAM), trained
            with the location policy by REINFORCE (``algorithm.stop_cost``); ``Rollout.stop_logits``.
    """

    in_channels: int
    num_classes: int
    image_size: tuple[int, int]
    glimpse_size: int = 8
    num_scales: int = 1
    scale_factor: int = 2
    glimpse_net: str = "mlp"
    glimpse_hidden: int = 128
    location_hidden: int = 128
    feature_size: int = 256
    hidden_size: int = 256
    core: str = "gru"
    location: str = "gaussian"
    location_std: float = 0.05
    location_head: str = "linear"
    grid: Optional[int | tuple[int, int]] = None
    grid_stride: Optional[int] = None
    stop_head: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "model")
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if isinstance(self.grid, list):
            object.__setattr__(self, "grid", tuple(self.grid))
        choices = {"glimpse_net": ("mlp", "conv"), "core": ("rnn", "gru", "lstm"), "location": ("gaussian", "categorical"),
                   "location_head": ("linear", "scaled")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"RAMConfig.{name}: expected one of {allowed}, found {getattr(self, name)!r}")
        for name in ("in_channels", "num_classes", "glimpse_size", "num_scales", "scale_factor", "hidden_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"RAMConfig.{name}: expected a positive integer, found {getattr(self, name)!r}")
        if self.location == "categorical" and self.location_head != "linear":
            raise ValueError(f"RAMConfig.location_head: {self.location_head!r} applies to a Gaussian policy; a "
                             "categorical one (a grid) takes 'linear'")
        if self.location == "gaussian" and not self.location_std > 0:
            raise ValueError(f"RAMConfig.location_std: expected > 0, found {self.location_std}")
        if self.location == "categorical" and (self.grid is None) == (self.grid_stride is None):
            raise ValueError("RAMConfig: a categorical location policy needs exactly one of grid, grid_stride; "
                             f"found grid={self.grid!r}, grid_stride={self.grid_stride!r}")
        check_glimpse_fits(self.image_size, self.glimpse_size)
        if self.location == "categorical":
            check_grid_fits(self.image_size, self.glimpse_size, self.grid, self.grid_stride)

    def make_grid(self) -> Optional[LocationGrid]:
        if self.location != "categorical":
            return None
        if self.grid_stride is not None:
            return LocationGrid.from_stride(self.image_size, self.glimpse_size, self.grid_stride)
        return LocationGrid.from_count(self.image_size, self.glimpse_size, self.grid)


class GlimpseNet(nn.Module):
    """``g = ReLU(W_g h_what + W_l h_where)``: what was seen and where, ``[B, feature_size]``."""

    def __init__(self, cfg: RAMConfig) -> None:
        super().__init__()
        channels = cfg.num_scales * cfg.in_channels
        if cfg.glimpse_net == "mlp":
            self.what = nn.Sequential(nn.Flatten(), nn.Linear(channels * cfg.glimpse_size**2, cfg.glimpse_hidden), nn.ReLU())
        else:
            self.what = nn.Sequential(
                nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),
                nn.Flatten(), nn.Linear(64 * math.ceil(cfg.glimpse_size / 2) ** 2, cfg.glimpse_hidden), nn.ReLU(),
            )
        self.where = nn.Sequential(nn.Linear(2, cfg.location_hidden), nn.ReLU())
        self.mix_what = nn.Linear(cfg.glimpse_hidden, cfg.feature_size)
        self.mix_where = nn.Linear(cfg.location_hidden, cfg.feature_size)

    def forward(self, patches: Tensor, locations: Tensor) -> Tensor:
        """patches: ``[B, S, C, p, p]``; locations: ``[B, 2]`` -> ``[B, feature_size]``."""
        what = self.what(patches.flatten(1, 2))
        return torch.relu(self.mix_what(what) + self.mix_where(self.where(locations)))


class Core(nn.Module):
    """The recurrent core; its state is a tuple (``(h,)``, or ``(h, c)`` for an LSTM)."""

    def __init__(self, cfg: RAMConfig) -> None:
        super().__init__()
        self.kind = cfg.core
        self.hidden_size = cfg.hidden_size
        if cfg.core == "rnn":
            self.cell = nn.RNNCell(cfg.feature_size, cfg.hidden_size, nonlinearity="relu")
        elif cfg.core == "gru":
            self.cell = nn.GRUCell(cfg.feature_size, cfg.hidden_size)
        else:
            self.cell = nn.LSTMCell(cfg.feature_size, cfg.hidden_size)

    def initial_state(self, batch: int, like: Tensor) -> tuple[Tensor, ...]:
        zero = like.new_zeros(batch, self.hidden_size)
        return (zero, zero) if self.kind == "lstm" else (zero,)

    def forward(self, g: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if self.kind == "lstm":
            return self.cell(g, state)
        return (self.cell(g, state[0]),)


class RAM(nn.Module):
    """Recurrent Attention Model; see the module docstring for one step and its stop-gradients."""

    def __init__(self, cfg: RAMConfig) -> None:
        super().__init__()
        self.config = cfg
        self.grid = cfg.make_grid()
        self.glimpse = GlimpseNet(cfg)
        self.core = Core(cfg)
        out = 2 if self.grid is None else len(self.grid)
        self.location_net = nn.Linear(cfg.hidden_size, out)
        # Multiplies W h (not b) of the Gaussian mean: see RAMConfig.location_head.
        self.location_gain = cfg.hidden_size ** -0.5 if cfg.location_head == "scaled" and self.grid is None else 1.0
        self.baseline_net = nn.Linear(cfg.hidden_size, 1)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_classes)
        # the stop action's logit after each glimpse (DT-RAM); reads h_t.detach(), as the location net reads
        # h_{t-1}.detach(): it learns by REINFORCE only (algorithm.stop_cost), not through the core
        self.stop_net = nn.Linear(cfg.hidden_size, 1) if cfg.stop_head else None
        if self.grid is not None:
            self.register_buffer("grid_locations", self.grid.locations(), persistent=False)  # [G, 2]

    def location_distribution(self, hidden: Tensor) -> torch.distributions.Distribution:
        """pi(l | h): ``Normal`` with batch shape [B] and event shape [2], or ``Categorical`` over cells.

        ``validate_args=False``: the parameters are a tanh and a constant, or a linear layer's logits, always
        valid; checking them costs a host synchronisation per glimpse (``Tensor.all()`` read back)."""
        out = self.location_pre_activation(hidden)
        if self.grid is None:
            return Independent(Normal(torch.tanh(out), self.config.location_std, validate_args=False), 1,
                               validate_args=False)
        return Categorical(logits=out, validate_args=False)

    def location_pre_activation(self, hidden: Tensor) -> Tensor:
        """``[B, hidden_size]`` -> ``[B, 2]`` Gaussian mean before tanh (``RAMConfig.location_head``), or
        ``[B, G]`` grid logits."""
        if self.location_gain == 1.0:
            return self.location_net(hidden)
        return nn.functional.linear(hidden, self.location_net.weight) * self.location_gain + self.location_net.bias

    def rollout(self, images: Tensor, num_glimpses: int, *, policy: Optional[Policy] = None,
                forced_locations: Optional[Tensor] = None, exit_rule: Optional[ExitRule] = None) -> Rollout:
        """Unroll ``num_glimpses`` steps on a batch.

        Args:
            images: ``[B, C, H, W]``.
            num_glimpses: T (the most glimpses under ``exit_rule``).
            policy: chooses the locations instead of sampling from the location net (random
                control, greedy evaluation, replayed sequences...).
            forced_locations: ``[B, T, 2]`` locations to look at (supervision sequences); rows of
                NaN leave that sample's step to the policy / the location net. On a grid model a
                forced or policy location is snapped to the nearest cell.
            exit_rule: stop each image once the rule fires (:mod:`foveal.models.early_exit`); the
                next glimpse is computed for the images still undecided only.

        Returns:
            A :class:`Rollout`; ``log_prob`` is the location net's log-probability of the locations
            actually used, whoever chose them.
        """
        B = images.shape[0]
        C, H, W = images.shape[1:]
        cfg = self.config
        if (C, H, W) != (cfg.in_channels, *cfg.image_size):
            raise ValueError(f"RAM.rollout: expected images [B, {cfg.in_channels}, {cfg.image_size[0]}, "
                             f"{cfg.image_size[1]}], found {list(images.shape)}")
        if forced_locations is not None and forced_locations.shape[:2] != (B, num_glimpses):
            raise ValueError(f"forced_locations: expected shape ({B}, {num_glimpses}, 2), found {tuple(forced_locations.shape)}")
        state = self.core.initial_state(B, images)
        steps = StepRecorder(B, num_glimpses, exit_rule, images.device)
        seen = images.new_zeros(B, 0, 2)  # [b, t, 2] locations looked at by the images still looking
        for t in range(num_glimpses):
            h = state[0].detach()  # stop-gradient 2: policy and baseline do not train the core
            dist = self.location_distribution(h)
            loc, index = self._choose(t, dist, PolicyState(t, h, seen, dist, self.grid, steps.subset), images, policy,
                                      forced_locations)
            log_prob, entropy = dist.log_prob(loc if index is None else index), dist.entropy()
            baseline = self.baseline_net(h).squeeze(-1)
            loc = loc.clamp(-1, 1).detach()  # stop-gradient 1: the retina sees a location, not a function of it
            patches = extract_glimpses(images, loc, cfg.glimpse_size, cfg.num_scales, cfg.scale_factor)
            state = self.core(self.glimpse(patches, loc), state)
            logits = self.classifier(state[0])
            stop_logit = None if self.stop_net is None else self.stop_net(state[0].detach()).squeeze(-1)
            steps.record(locations=loc, log_prob=log_prob, logits=logits, baseline=baseline, indices=index,
                         entropy=entropy, stop_logits=stop_logit)
            seen = torch.cat([seen, loc[:, None]], 1)
            keep = steps.stop(logits, stop_logit)
            if keep is not None:  # only the undecided images go on
                state, seen, images = tuple(s[keep] for s in state), seen[keep], images[keep]
                forced_locations = None if forced_locations is None else forced_locations[keep]
            if steps.finished:
                break
        return steps.rollout()

    def _choose(self, t: int, dist: torch.distributions.Distribution, state: PolicyState, images: Tensor,
                policy: Optional[Policy], forced: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """Location ``[B, 2]`` of step t (unclamped for a Gaussian) and its grid index ``[B]`` (or None)."""
        if policy is None:
            sample = dist.sample()  # no gradient: REINFORCE, not the reparameterisation trick
            loc = sample if self.grid is None else self.grid_locations[sample]
        else:
            loc = policy(state, images).detach()
        if forced is not None:
            given = forced[:, t].to(loc)
            loc = torch.where(torch.isnan(given), loc, given)
        if self.grid is None:
            return loc, None
        index = self.grid.nearest_index(loc)
        return self.grid_locations[index], index


@MODELS.register("ram", kind="glimpse")
def ram(**config) -> RAM:
    """The recurrent attention model (Mnih et al. 2014), Gaussian location policy.

    Settings: :class:`RAMConfig`."""
    return RAM(RAMConfig(**config))


@MODELS.register("ram-grid", kind="glimpse")
def ram_grid(**config) -> RAM:
    """RAM with a categorical policy over a grid of cells (near-optimal glimpse sequences paper).

    Settings: :class:`RAMConfig` with ``location: categorical``, ``glimpse_net: conv``."""
    return RAM(RAMConfig(**{"location": "categorical", "glimpse_net": "conv", **config}))
