r"""REINFORCE with a learned baseline: the hybrid loss of Mnih et al. (2014).

For a rollout with locations :math:`l_{1:T}`, prediction after the last glimpse and reward
:math:`R = 1[\hat y = y]` (no discount: every step's return is R),

.. math::

    L = w_{ce}\,\mathrm{CE}(y_T, y) + w_b \frac{1}{T}\sum_t (b_t - R)^2
        - w_r \sum_t \log \pi(l_t \mid h_{t-1})\,(R - \mathrm{sg}[b_t]) - w_H \sum_t H[\pi_t]

averaged over the batch. ``sg`` is stop-gradient 3 (see :mod:`foveal.models.ram`): the baseline is a
control variate inside the policy gradient, trained only by its squared error. The classifier,
core and glimpse net learn from the cross-entropy alone (stop-gradient 2). Only the prediction
after the last glimpse counts, in the loss and in the reward.

When the training policy is not the model's own (``train_policy="random"``, the control that
every learned policy must beat) the policy-gradient and baseline terms are left out: those
locations were not sampled from pi, so their score-function gradient would be meaningless.

At evaluation ``test_samples = M > 1`` averages the class probabilities of M rollouts per image
(Mnih et al.'s Monte-Carlo test averaging); with a deterministic ``eval_policy`` M is pointless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foveal.policies import make_policy, policy_names
from foveal.training.base import LossOutput


@dataclass(frozen=True)
class ReinforceConfig:
    """Settings of :class:`Reinforce`; the loss weights live here and nowhere else."""

    num_glimpses: int = 6
    ce_weight: float = 1.0
    baseline_weight: float = 1.0
    reinforce_weight: float = 1.0
    entropy_weight: float = 0.0
    train_policy: str = "sample"
    eval_policy: str = "greedy"
    test_samples: int = 1

    def __post_init__(self) -> None:
        if self.num_glimpses < 1:
            raise ValueError(f"ReinforceConfig.num_glimpses: expected >= 1, found {self.num_glimpses}")
        if self.test_samples < 1:
            raise ValueError(f"ReinforceConfig.test_samples: expected >= 1, found {self.test_samples}")
        for name in ("train_policy", "eval_policy"):
            if getattr(self, name) not in policy_names():
                raise ValueError(f"ReinforceConfig.{name}: expected one of {policy_names()}, found {getattr(self, name)!r}")


class Reinforce:
    """The hybrid REINFORCE loss of a model with ``rollout`` (see the module docstring)."""

    def __init__(self, config: ReinforceConfig = ReinforceConfig()) -> None:
        self.config = config
        self.train_policy = make_policy(config.train_policy)
        self.eval_policy = make_policy(config.eval_policy)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        cfg = self.config
        images, labels = batch["image"], batch["label"]
        ro = model.rollout(images, cfg.num_glimpses, policy=self.train_policy)
        final = ro.logits[:, -1]  # [B, C]: only the last glimpse's prediction counts
        ce = F.cross_entropy(final, labels)
        reward = (final.argmax(-1) == labels).float()  # [B]
        loss = cfg.ce_weight * ce
        logs = {"ce": ce.item(), "accuracy": reward.mean().item()}
        if self.train_policy is None:
            advantage = reward[:, None] - ro.baseline.detach()  # [B, T]; stop-gradient 3
            policy_gradient = -(ro.log_prob * advantage).sum(1).mean()
            baseline_mse = F.mse_loss(ro.baseline, reward[:, None].expand_as(ro.baseline))
            entropy = ro.entropy.sum(1).mean()
            loss = loss + cfg.reinforce_weight * policy_gradient + cfg.baseline_weight * baseline_mse
            loss = loss - cfg.entropy_weight * entropy
            logs.update(reinforce=policy_gradient.item(), baseline_mse=baseline_mse.item(), entropy=entropy.item())
        return LossOutput(loss, logs)

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Tensor, num_glimpses: int | None = None) -> tuple[Tensor, Tensor]:
        """Class probabilities ``[B, T, C]`` after each glimpse (averaged over ``test_samples``
        rollouts) and the locations ``[B, T, 2]`` of the first rollout."""
        T = num_glimpses or self.config.num_glimpses
        M = self.config.test_samples
        B = images.shape[0]
        ro = model.rollout(images.repeat(M, 1, 1, 1), T, policy=self.eval_policy)
        probs = ro.logits.softmax(-1).view(M, B, T, -1).mean(0)
        return probs, ro.locations[:B]

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        probs, _ = self.predict(model, batch["image"])
        labels = batch["label"]
        final = probs[:, -1]
        ce = F.nll_loss(final.clamp_min(1e-12).log(), labels)
        return {"accuracy": (final.argmax(-1) == labels).float().mean().item(), "ce": ce.item()}


class EvaluatedAsReinforce:
    """Mixin for training algorithms of a glimpse model whose evaluation is RAM's: the model's own policy,
    whatever steered it in training (sequences, salience maps, an inference network). The class sets
    ``self.reinforce``, a :class:`Reinforce` with its ``num_glimpses`` and evaluation settings."""

    reinforce: Reinforce

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Tensor, num_glimpses: Optional[int] = None) -> tuple[Tensor, Tensor]:
        """As :meth:`Reinforce.predict`."""
        return self.reinforce.predict(model, images, num_glimpses)

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        """As :meth:`Reinforce.metrics`."""
        return self.reinforce.metrics(model, batch)
