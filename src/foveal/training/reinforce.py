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

**A learned stop** (``stop_cost = c``, DT-RAM of Li et al. 2017; the model needs ``stop_head``): after
glimpse t the model's stop head gives :math:`\sigma(s_t)`, and the episode ends at the first t where a
sampled :math:`a_t \sim \mathrm{Bernoulli}(\sigma(s_t))` is 1 (at T at the latest), after n glimpses.
The reward becomes :math:`R = 1[\hat y_n = y] - c\,n`, and the stop decisions join the location choices
in the policy gradient,

.. math::

    - \sum_{t < n} \log \pi(l_t \mid h_{t-1})\,(R - \mathrm{sg}[b_t])
    - \sum_{t < \min(n, T-1)} \log \mathrm{Bern}(a_t; \sigma(s_t))\,(R - \mathrm{sg}[b_{t+1}])

(``b_{t+1}`` reads ``h_t``, the state the stop decision is made in), while the baseline regresses R on the
steps taken. The rollout still computes all T steps during training (the batch stays whole; the stop
only decides which steps count); at evaluation an exit rule (``learned``, :mod:`foveal.models.early_exit`)
really stops. Because any step's prediction may become the answer, ``ce_steps: all`` (the cross-entropy
averaged over the T predictions) is what a stopping model should be trained with; the default ``last``
keeps Mnih et al.'s loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli

from foveal.policies import POLICIES, make_policy
from foveal.training.base import ALGORITHMS, EvaluationSettings, LossOutput, PolicyEvaluation


@dataclass(frozen=True)
class ReinforceConfig(EvaluationSettings):
    """Settings of :class:`Reinforce`, after the evaluation settings; the loss weights live here and nowhere else."""

    ce_weight: float = 1.0
    baseline_weight: float = 1.0
    reinforce_weight: float = 1.0
    entropy_weight: float = 0.0
    train_policy: str = "sample"
    ce_steps: str = "last"
    stop_cost: Optional[float] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        POLICIES.check(self.train_policy, "ReinforceConfig.train_policy")
        if self.ce_steps not in ("last", "all"):
            raise ValueError(f"ReinforceConfig.ce_steps: expected 'last' or 'all', found {self.ce_steps!r}")
        if self.stop_cost is not None and (isinstance(self.stop_cost, bool) or not isinstance(
                self.stop_cost, (int, float)) or not self.stop_cost >= 0):
            raise ValueError(f"ReinforceConfig.stop_cost: expected null or a number >= 0 (reward lost per glimpse), "
                             f"found {self.stop_cost!r}")
        if self.stop_cost is not None and self.train_policy != "sample":
            raise ValueError(f"ReinforceConfig.stop_cost: the stop action is learned by REINFORCE with the model's own "
                             f"sampled locations; expected train_policy 'sample', found {self.train_policy!r}")


@ALGORITHMS.register("reinforce", config=ReinforceConfig)
class Reinforce(PolicyEvaluation):
    """Hybrid REINFORCE (Mnih et al. 2014): cross-entropy, and a policy gradient for locations.

    The loss of a model with ``rollout`` (see the module docstring); tested by
    :class:`~foveal.training.base.PolicyEvaluation` (``eval_policy``, ``test_samples``)."""

    def __init__(self, config: ReinforceConfig = ReinforceConfig()) -> None:
        self.config = config

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        cfg = self.config
        images, labels = batch["image"], batch["label"]
        policy = make_policy(cfg.train_policy, model=model)
        ro = model.rollout(images, cfg.num_glimpses, policy=policy)
        if cfg.stop_cost is not None:
            return self._stop_loss(ro, labels)
        final = ro.logits[:, -1]  # [B, C]: only the last glimpse's prediction counts
        ce = self._cross_entropy(ro.logits, labels)
        reward = (final.argmax(-1) == labels).float()  # [B]
        loss = cfg.ce_weight * ce
        logs = {"ce": ce.detach(), "accuracy": reward.mean().detach()}
        if policy is None:
            advantage = reward[:, None] - ro.baseline.detach()  # [B, T]; stop-gradient 3
            policy_gradient = -(ro.log_prob * advantage).sum(1).mean()
            baseline_mse = F.mse_loss(ro.baseline, reward[:, None].expand_as(ro.baseline))
            entropy = ro.entropy.sum(1).mean()
            loss = loss + cfg.reinforce_weight * policy_gradient + cfg.baseline_weight * baseline_mse
            loss = loss - cfg.entropy_weight * entropy
            logs.update(reinforce=policy_gradient.detach(), baseline_mse=baseline_mse.detach(), entropy=entropy.detach())
        return LossOutput(loss, logs)

    def _cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """CE of the last prediction, or (``ce_steps: all``) the mean CE of the T predictions ``[B, T, C]``."""
        if self.config.ce_steps == "last":
            return F.cross_entropy(logits[:, -1], labels)
        B, T = logits.shape[:2]
        return F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(T))

    def _stop_loss(self, ro, labels: Tensor) -> LossOutput:
        """The hybrid loss with a learned stop (module docstring)."""
        cfg = self.config
        if ro.stop_logits is None:
            raise ValueError("algorithm.stop_cost: expected a model with a stop head (model.stop_head: true, "
                             "RAM family), found a rollout without stop logits")
        B, T = ro.log_prob.shape
        steps = torch.arange(T, device=labels.device)
        stop = Bernoulli(logits=ro.stop_logits[:, :-1])  # a decision after glimpses 1..T-1; after T it stops
        action = stop.sample()  # [B, T-1]; no gradient: REINFORCE, through log_prob
        stopped = torch.cat([action, action.new_ones(B, 1)], 1)  # [B, T]
        taken = stopped.argmax(1) + 1  # [B] glimpses n: the first stop
        live = (steps[None] < taken[:, None]).float()  # [B, T] steps looked at
        decided = live[:, :-1]  # [B, T-1] steps after which a stop decision was made (not after the last)
        final = ro.logits[torch.arange(B, device=labels.device), taken - 1]  # [B, C] the prediction at the stop
        correct = (final.argmax(-1) == labels).float()
        reward = correct - cfg.stop_cost * taken.float()  # [B]
        ce = self._cross_entropy(ro.logits, labels)
        advantage = reward[:, None] - ro.baseline.detach()  # [B, T]; stop-gradient 3
        location_term = -(ro.log_prob * advantage * live).sum(1).mean()
        stop_term = -(stop.log_prob(action) * advantage[:, 1:] * decided).sum(1).mean()  # b_{t+1} reads h_t
        baseline_mse = ((ro.baseline - reward[:, None]).square() * live).sum() / live.sum()
        entropy = (ro.entropy * live).sum(1).mean()
        loss = (cfg.ce_weight * ce + cfg.reinforce_weight * (location_term + stop_term)
                + cfg.baseline_weight * baseline_mse - cfg.entropy_weight * entropy)
        logs = {"ce": ce.detach(), "accuracy": correct.mean().detach(), "glimpses": taken.float().mean().detach(),
                "reinforce": location_term.detach(), "stop_reinforce": stop_term.detach(),
                "baseline_mse": baseline_mse.detach(), "entropy": entropy.detach()}
        return LossOutput(loss, logs)


def expected_glimpses(stop_logits: Tensor) -> Tensor:
    """``[B, T]`` stop logits -> ``[B]`` expected glimpses under the sampled stop policy (a stop is forced after T):
    ``E[n] = sum_{k=0}^{T-1} P(n > k) = sum_k prod_{t<k} (1 - sigmoid(s_t))``."""
    go_on = torch.sigmoid(-stop_logits[:, :-1])  # [B, T-1] P(no stop after glimpse t+1)
    survive = torch.cat([torch.ones_like(stop_logits[:, :1]), go_on.cumprod(1)], 1)  # [B, T] P(n > k)
    return survive.sum(1)
