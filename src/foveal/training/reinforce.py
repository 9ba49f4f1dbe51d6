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

import torch.nn.functional as F
from torch import Tensor, nn

from foveal.policies import check_policy_name, make_policy
from foveal.training.base import LossOutput, PolicyEvaluation, check_evaluation_settings


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
        check_evaluation_settings("ReinforceConfig", self)
        check_policy_name("ReinforceConfig.train_policy", self.train_policy)


class Reinforce(PolicyEvaluation):
    """The hybrid REINFORCE loss of a model with ``rollout`` (see the module docstring); tested by
    :class:`~foveal.training.base.PolicyEvaluation` (``eval_policy``, ``test_samples``)."""

    def __init__(self, config: ReinforceConfig = ReinforceConfig()) -> None:
        self.config = config

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        cfg = self.config
        images, labels = batch["image"], batch["label"]
        policy = make_policy(cfg.train_policy, model=model)
        ro = model.rollout(images, cfg.num_glimpses, policy=policy)
        final = ro.logits[:, -1]  # [B, C]: only the last glimpse's prediction counts
        ce = F.cross_entropy(final, labels)
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
