r"""The Saccader's three training stages (Elsayed et al. 2019, Sec. 3.2) as engine algorithms.

Each is an ordinary algorithm (``loss(model, batch) -> LossOutput``, ``metrics``, ``predict``), so the
engine trains, validates, checkpoints and resumes it like any other. A stage starts from the previous
stage's weights through the model builder's ``init_from`` (config ``model.init_from``); see
``foveal train-saccader``, which chains the three run folders.

**1. Representation pretraining** (``saccader-representation``, Eq. 4). With ``z_{ij}`` the logits of
cell (i, j) of the ``h x w`` grid, the class distribution is the normalised geometric mean of the cells'
(``P_{ij} = softmax(z_{ij})``):

.. math::

    J(\theta) = -\log \mathrm{softmax}_y\Big(\frac{1}{hw}\sum_{ij} \log P_{ij}\Big)
                + \frac{\lambda}{2}\sum \theta^2

**2. Location pretraining** (``saccader-location``, Eq. 5). Targets are the cells sorted by their
largest logit, ``l^1`` the highest; the cell is unrolled for ``T = 12`` steps *towards* them (the memory
``C^{t-1}`` marks ``l^1..l^{t-1}``):

.. math:: J(\eta) = -\sum_{t=1}^{T} \log \pi(l^t \mid X, C^{t-1}) + \frac{\nu}{2}\sum \eta^2

The representation network is frozen here: it runs under ``torch.no_grad()`` (stop-gradient: Eq. 5
trains only the attention network, the mixing conv and the cell, η) and in eval mode (so its
BatchNorm running statistics do not drift either).

**3. REINFORCE fine-tuning** (``saccader-reinforce``, Eq. 6). ``S = 2`` trajectories are sampled per image
from the cell's policy; the reward ``r = 1[prediction after T glimpses is right]``; the baseline ``b``
is the mean reward of the minibatch (all S x B trajectories; a number, so no gradient; in a data-parallel
run the mean over every rank's trajectories, :func:`foveal.training.distributed.all_reduce_mean`, so that
the estimator is the one-process estimator on the global batch); the prediction
averages the logits of the T cells read:

.. math::

    J = -\frac{1}{B}\sum_{b}\sum_{s=1}^{S}\Big(\sum_{t=1}^{T}\log\pi(l^t_{s} \mid X, C^{t-1}_s)\Big)(r_s - b)
        + \mathrm{CE}\Big(\frac{1}{T}\sum_t z_{l^t_s}, y\Big) + \frac{\nu}{2}\sum\eta^2 + \frac{\lambda}{2}\sum\theta^2

with the cross-entropy averaged over the S x B trajectories. Unlike :mod:`foveal.training.reinforce`
(RAM's hybrid loss: a learned baseline and only the last step's classifier), nothing here learns a
baseline and every glimpse's logits enter the prediction. The L2 terms sum the squares of the
*weights* (tensors with more than one dimension: conv kernels, the cell's ``a`` is a vector and is
left out, as are biases and BatchNorm parameters); ``l2`` / ``l2_location`` set λ and ν.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foveal.training import distributed
from foveal.training.base import (ALGORITHMS, EvaluationSettings, LossOutput, PolicyEvaluation,
                                  check_positive_integers)

__all__ = ["RepresentationConfig", "RepresentationPretraining", "LocationConfig", "LocationPretraining",
           "SaccaderReinforceConfig", "SaccaderReinforce", "l2_penalty", "sorted_logit_targets"]


def _check_settings(config: EvaluationSettings, positive: tuple[str, ...], nonnegative: tuple[str, ...]) -> None:
    """A stage's own positive integers and non-negative numbers (after the evaluation settings' checks)."""
    owner = type(config).__name__
    check_positive_integers(owner, config, positive)
    for name in nonnegative:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{owner}.{name}: expected a number >= 0, found {value!r}")


def l2_penalty(modules: list[nn.Module], weight: float) -> Tensor:
    """``weight / 2 * sum of squares`` of the modules' weight tensors (``dim > 1``); 0 when ``weight == 0``."""
    params = [p for m in modules for p in m.parameters() if p.dim() > 1 and p.requires_grad]
    if weight == 0 or not params:
        return torch.zeros(())
    return weight / 2 * sum(p.square().sum() for p in params)


def _representation(model: nn.Module) -> nn.Module:
    return getattr(model, "representation", model)


def _location_modules(model: nn.Module) -> list[nn.Module]:
    return [model.attention, model.mix, model.cell]


def sorted_logit_targets(logit_map: Tensor, steps: int) -> Tensor:
    """``[B, K, h, w]`` logits -> ``[B, steps]`` cells by their largest logit, highest first (Eq. 5 targets)."""
    return logit_map.flatten(2).amax(1).argsort(dim=-1, descending=True, stable=True)[:, :steps]


@dataclass(frozen=True)
class RepresentationConfig(EvaluationSettings):
    """Settings of :class:`RepresentationPretraining`, after the evaluation settings: how ``predict`` rolls
    the model out for glimpse records (``test_samples`` rollouts averaged,
    :class:`~foveal.training.base.PolicyEvaluation`; by default ordered by the cells' logits).

    Attributes:
        l2: λ of Eq. 4, on the representation network's weights.
    """

    eval_policy: str = "ordered-logits"
    l2: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_settings(self, (), ("l2",))


@ALGORITHMS.register("saccader-representation", config=RepresentationConfig)
class RepresentationPretraining(PolicyEvaluation):
    """Saccader stage 1, Eq. 4: the classifier of all cells' averaged logits (bagnet or saccader).

    See the module docstring."""

    def __init__(self, config: RepresentationConfig = RepresentationConfig()) -> None:
        self.config = config

    @staticmethod
    def average_log_probs(model: nn.Module, images: Tensor) -> Tensor:
        """``[B, K]`` mean over all cells of the cells' log-probabilities."""
        logits = model.encode(images).logits  # [B, K, h, w]
        return logits.log_softmax(1).mean((2, 3))

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        avg = self.average_log_probs(model, batch["image"])
        ce = F.cross_entropy(avg, batch["label"])  # log-softmax of the mean log-probabilities: Eq. 4
        l2 = l2_penalty([_representation(model)], self.config.l2).to(ce)
        accuracy = (avg.argmax(-1) == batch["label"]).float().mean()
        return LossOutput(ce + l2, {"ce": ce.detach(), "l2": l2.detach(), "accuracy": accuracy.detach()})

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        """Accuracy and CE of the all-cells average (Eq. 4's classifier), and of ``eval_policy``'s T glimpses."""
        avg = self.average_log_probs(model, batch["image"])
        labels = batch["label"]
        glimpses = super().metrics(model, batch)
        return {"accuracy": (avg.argmax(-1) == labels).float().mean().item(),
                "ce": F.cross_entropy(avg, labels).item(),
                "glimpse_accuracy": glimpses["accuracy"], "glimpse_ce": glimpses["ce"]}


@dataclass(frozen=True)
class LocationConfig(EvaluationSettings):
    """Settings of :class:`LocationPretraining`, after the evaluation settings (validation and ``predict``:
    the greedy policy, T glimpses).

    Attributes:
        steps: T of Eq. 5 (12 in the paper).
        l2: ν of Eq. 5, on the location network's weights.
    """

    steps: int = 12
    l2: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_settings(self, ("steps",), ("l2",))


@ALGORITHMS.register("saccader-location", config=LocationConfig)
class LocationPretraining(PolicyEvaluation):
    """Saccader stage 2, Eq. 5: the location network learns the cells' logit order (saccader).

    See the module docstring."""

    def __init__(self, config: LocationConfig = LocationConfig()) -> None:
        self.config = config

    def target_nll(self, model: nn.Module, images: Tensor) -> Tensor:
        """``[B]`` ``-sum_t log pi(l^t | X, C^{t-1})`` over the ``steps`` sorted-logit targets."""
        rep = model.representation
        was_training = rep.training
        rep.eval()
        try:
            with torch.no_grad():  # stop-gradient: Eq. 5 trains the location network only
                maps = model.encode(images)
        finally:
            rep.train(was_training)
        G = maps.logits.shape[2] * maps.logits.shape[3]
        if self.config.steps > G:
            raise ValueError(f"LocationConfig.steps: expected at most the {G} cells of the grid, "
                             f"found {self.config.steps}")
        targets = sorted_logit_targets(maps.logits, self.config.steps)  # [B, T]
        mixed = model.mixed_features(maps)
        visited = mixed.new_zeros(images.shape[0], G)
        nll = mixed.new_zeros(images.shape[0])
        for t in range(self.config.steps):
            logp = model.cell(mixed, visited).log_softmax(-1)  # [B, G]
            nll = nll - logp.gather(1, targets[:, t:t + 1]).squeeze(1)
            visited = visited.scatter(1, targets[:, t:t + 1], 1.0)
        return nll

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        nll = self.target_nll(model, batch["image"]).mean()
        l2 = l2_penalty(_location_modules(model), self.config.l2).to(nll)
        return LossOutput(nll + l2, {"location_nll": nll.detach(), "l2": l2.detach()})


@dataclass(frozen=True)
class SaccaderReinforceConfig(EvaluationSettings):
    """Settings of :class:`SaccaderReinforce`, after the evaluation settings (``num_glimpses``: T, 6 in the
    paper); the loss weights live here and nowhere else.

    Attributes:
        samples: S trajectories per image (2).
        reinforce_weight, ce_weight: weights of the policy-gradient and cross-entropy terms.
        l2: λ on the representation network's weights; l2_location: ν on the location network's.
    """

    samples: int = 2
    reinforce_weight: float = 1.0
    ce_weight: float = 1.0
    l2: float = 0.0
    l2_location: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_settings(self, ("samples",), ("reinforce_weight", "ce_weight", "l2", "l2_location"))


@ALGORITHMS.register("saccader-reinforce", config=SaccaderReinforceConfig)
class SaccaderReinforce(PolicyEvaluation):
    """Saccader stage 3, Eq. 6: everything trained by REINFORCE and cross-entropy (saccader).

    See the module docstring."""

    def __init__(self, config: SaccaderReinforceConfig = SaccaderReinforceConfig()) -> None:
        self.config = config

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        cfg = self.config
        S, B = cfg.samples, batch["image"].shape[0]
        images = batch["image"].repeat(S, 1, 1, 1)  # [S * B, C, H, W], sample s of image b at s * B + b
        labels = batch["label"].repeat(S)
        ro = model.rollout(images, cfg.num_glimpses)  # policy=None: cells sampled from the cell's policy
        final = ro.logits[:, -1]  # [S * B, K]: logits averaged over the T glimpses
        ce = F.cross_entropy(final, labels)
        reward = (final.argmax(-1) == labels).float()  # [S * B]
        # the minibatch's accuracy: a number, no gradient; the global batch's under data parallelism (equal shards)
        baseline = distributed.all_reduce_mean(reward.mean())
        policy_gradient = -(ro.log_prob.sum(1) * (reward - baseline)).sum() / B
        l2 = (l2_penalty([model.representation], cfg.l2) + l2_penalty(_location_modules(model), cfg.l2_location)).to(ce)
        loss = cfg.ce_weight * ce + cfg.reinforce_weight * policy_gradient + l2
        return LossOutput(loss, {"ce": ce.detach(), "accuracy": baseline.detach(), "reinforce": policy_gradient.detach(),
                                 "l2": l2.detach(), "entropy": ro.entropy.sum(1).mean().detach()})
