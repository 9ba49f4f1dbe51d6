r"""Wake-sleep training of a recurrent attention model (WSRAM; Ba, Grosse, Salakhutdinov & Frey 2015).

No public implementation of WSRAM exists; this one follows the paper's idea, *reweighted wake-sleep*
(Bornschein & Bengio 2015) with an inference network over glimpse locations, and documents its own
choices where the paper leaves room.

The model. Glimpse locations :math:`a = l_{1:T}` are latent variables: the attention policy is the
prior :math:`\pi(a \mid x) = \prod_t \pi(l_t \mid h_{t-1})` and the classifier after the last glimpse
the likelihood :math:`p(y \mid a, x)`. Training maximises the marginal log-likelihood
:math:`\log p(y \mid x) = \log \mathbb{E}_{\pi(a \mid x)}\, p(y \mid a, x)`, whose posterior over
locations :math:`p(a \mid x, y)` is approximated by an inference network :math:`q(a \mid x, y)`
(:class:`foveal.models.wsram.WakeSleepRAM`: it sees a coarse view of the whole image and the label).

One step, for each image: draw :math:`M` location sequences :math:`a^m \sim q(a \mid x, y)` (the
rollout runs with ``q`` as its policy, so the core and glimpse net see the sampled glimpses and the
rollout's ``log_prob`` is the prior's :math:`\log \pi(a^m \mid x)`), then

.. math::

    \log w_m = \log p(y \mid a^m, x) + \log \pi(a^m \mid x) - \log q(a^m \mid x, y),
    \qquad \tilde w_m = \frac{w_m}{\sum_k w_k} \quad (\text{no gradient through } \tilde w),

    L = -\sum_m \tilde w_m \big[ w_{ce} \log p(y \mid a^m, x) + w_\pi \log \pi(a^m \mid x) \big]
        - w_q \sum_m (\tilde w_m - \tfrac{1}{M}) \log q(a^m \mid x, y),

averaged over the batch. The first bracket is the self-normalised importance-sampling estimate of
:math:`\nabla \log p(y \mid x)` for the classifier / core / glimpse net (through
:math:`\log p(y \mid a^m)`) and for the policy (through :math:`\log \pi`, which pulls the prior
towards the posterior); the last term is the *wake* update of the inference network, an estimate of
:math:`-\nabla_q \mathrm{KL}(p(a \mid x, y) \,\|\, q)`.

Choices (ours, documented because the paper leaves them open or we could not check them):

* **Control variate for q.** :math:`\sum_m \tfrac{1}{M} \nabla \log q(a^m)` has expectation zero under
  q, so subtracting it (``control_variate=True``) keeps the estimator's mean and makes the q-gradient
  vanish exactly when q equals the posterior (all weights equal); without it that gradient is noise.
* **No sleep phase.** q is trained on data (wake), not on samples from the model (sleep): the
  classification model cannot generate images. This is the variant Bornschein & Bengio found best.
* **No REINFORCE, no baseline.** The learned baseline of the model is not used (it gets no
  gradient); the policy learns only through the weighted :math:`\log \pi` term.
* **Gradient paths.** ``q`` reads the detached recurrent state (as the policy does) and the
  locations are constants (RAM's stop-gradient 1), so :math:`\log q` trains only the inference
  network, :math:`\log \pi` only the location network, :math:`\log p(y \mid a)` the classifier, core
  and glimpse network.
* **Evaluation** uses the policy (the prior), as for every other method; q needs the label.

Logged: ``ce`` and ``accuracy`` of the prediction averaged over the M samples with the weights
:math:`\tilde w`, ``log_likelihood`` the importance-weighted bound
:math:`\log \frac1M \sum_m w_m \le \log p(y \mid x)`, and ``ess`` the effective sample size
:math:`1 / \sum_m \tilde w_m^2` divided by M (1: q matches the posterior's weights perfectly).

References: J. Ba, R. Grosse, R. Salakhutdinov, B. Frey, "Learning wake-sleep recurrent attention
models", NeurIPS 2015; J. Bornschein, Y. Bengio, "Reweighted wake-sleep", ICLR 2015.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foveal.models.base import PolicyState
from foveal.training.base import (ALGORITHMS, EvaluationSettings, LossOutput, PolicyEvaluation,
                                  check_positive_integers)

__all__ = ["WakeSleepConfig", "WakeSleep", "InferencePolicy"]


@dataclass(frozen=True)
class WakeSleepConfig(EvaluationSettings):
    """Settings of :class:`WakeSleep`, after the evaluation settings (``num_glimpses`` T, ``eval_policy``,
    ``test_samples``: as in :class:`~foveal.training.reinforce.ReinforceConfig`).

    Attributes:
        samples: M, location sequences drawn from q per image (the step costs M rollouts).
        ce_weight, prior_weight, inference_weight: :math:`w_{ce}, w_\\pi, w_q` of the module docstring.
        control_variate: subtract :math:`1/M` from the weights in the q-update.
    """

    samples: int = 5
    ce_weight: float = 1.0
    prior_weight: float = 1.0
    inference_weight: float = 1.0
    control_variate: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_integers("WakeSleepConfig", self, ("samples",))
        for name in ("ce_weight", "prior_weight", "inference_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"WakeSleepConfig.{name}: expected >= 0, found {getattr(self, name)!r}")


class InferencePolicy:
    """Samples each location from the model's inference network and records ``log q`` ``[B, T]``.

    A policy in the sense of :mod:`foveal.policies` (seam 3), for one rollout of one batch.
    """

    def __init__(self, model: nn.Module, images: Tensor, labels: Tensor) -> None:
        self.model = model
        self.context = model.inference.context(images, labels)  # [B, inference_hidden]
        self.log_q: list[Tensor] = []

    def __call__(self, state: PolicyState, images: Tensor) -> Tensor:
        q = self.model.inference_distribution(state.hidden, self.context)  # hidden is detached by the rollout
        sample = q.sample()  # no gradient: the log-probability carries it (score function)
        self.log_q.append(q.log_prob(sample))
        return sample if state.grid is None else self.model.grid_locations[sample]

    def log_prob(self) -> Tensor:
        return torch.stack(self.log_q, 1)


@ALGORITHMS.register("wake-sleep", config=WakeSleepConfig)
class WakeSleep(PolicyEvaluation):
    """Reweighted wake-sleep (WSRAM, Ba et al. 2015), for models with an inference network.

    The loss of the module docstring."""

    def __init__(self, config: WakeSleepConfig = WakeSleepConfig()) -> None:
        self.config = config

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        cfg = self.config
        if not hasattr(model, "inference_distribution"):
            raise ValueError(f"algorithm 'wake-sleep': the model {getattr(model, 'registry_name', type(model).__name__)!r} "
                             "has no inference network; use model.name ram-ws or ram-grid-ws")
        images, labels = batch["image"], batch["label"]
        B, M = images.shape[0], cfg.samples
        images_m, labels_m = images.repeat(M, 1, 1, 1), labels.repeat(M)  # [M * B, ...], sample-major
        proposal = InferencePolicy(model, images_m, labels_m)
        ro = model.rollout(images_m, cfg.num_glimpses, policy=proposal)
        log_py = -F.cross_entropy(ro.logits[:, -1], labels_m, reduction="none")  # [M * B]
        log_prior = ro.log_prob.sum(1)  # [M * B]
        log_q = proposal.log_prob().sum(1)  # [M * B]
        log_w = (log_py + log_prior - log_q).detach().view(M, B)  # stop-gradient: weights are constants
        w = log_w.softmax(0)  # [M, B]
        model_term = -(w * (cfg.ce_weight * log_py + cfg.prior_weight * log_prior).view(M, B)).sum(0).mean()
        q_weights = w - 1.0 / M if cfg.control_variate else w
        q_term = -(q_weights * log_q.view(M, B)).sum(0).mean()
        loss = model_term + cfg.inference_weight * q_term
        correct = (ro.logits[:, -1].argmax(-1) == labels_m).float().view(M, B)
        logs = {"ce": -(w * log_py.detach().view(M, B)).sum(0).mean().detach(),
                "accuracy": (w * correct).sum(0).mean().detach(),
                "log_likelihood": (torch.logsumexp(log_w, 0) - math.log(M)).mean().detach(),
                "ess": (1.0 / w.square().sum(0)).mean().detach() / M}
        return LossOutput(loss, logs)
