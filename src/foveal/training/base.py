"""The algorithm protocol: what the engine and a run use of every training algorithm.

Seam 2 of foveal: an algorithm turns ``(model, batch)`` into a :class:`LossOutput`; the engine
(:mod:`foveal.training.engine`) runs the loop, validation, logging and checkpoints for every
algorithm and knows nothing about any model. A run (:func:`foveal.recipes.run.train_run`) also tests
the trained model through the algorithm: :class:`Algorithm` lists all of it.

A batch is a dict collated from dataset items: ``{"image": [B, C, H, W] float in [0, 1],
"label": [B] int64, "index": [B] int64}`` (dataset index, used to look up supervision sequences).

Algorithms are registered by name in :data:`ALGORITHMS` where the class is defined, with the frozen
dataclass of its settings (whose evaluation fields come from :class:`EvaluationSettings`)::

    @ALGORITHMS.register("reinforce", config=ReinforceConfig)
    class Reinforce(PolicyEvaluation):   # its docstring's first paragraph: the summary `foveal list` shows
        ...

    build_algorithm("reinforce", num_glimpses=6)   # = ALGORITHMS.build(...): Reinforce(ReinforceConfig(...))

:mod:`foveal.training.algorithms` imports every built-in algorithm, registering it.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foveal.policies import POLICIES, make_policy
from foveal.registry import Registry

__all__ = ["ALGORITHMS", "LossOutput", "EvaluationSettings", "Algorithm", "PolicyEvaluation", "build_algorithm",
           "check_algorithm", "check_positive_integers", "final_metrics"]


@dataclass
class LossOutput:
    """A scalar loss to minimise and the numbers worth logging for it (``{"ce": ce.detach(), ...}``).

    A log is a float or a 0-dim tensor; give tensors (``x.detach()``, not ``x.item()``): the engine sums
    them where they are and reads them back once per logged row, not once per iteration."""

    loss: Tensor
    logs: dict[str, float | Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationSettings:
    """The settings a run reads to test a model, the base of every algorithm's frozen config dataclass.

    Each is declared and checked here once; as fields of a base dataclass they stay top-level keys of the
    ``algorithm:`` section. A subclass adds its own fields after these, may give one of these another
    default by declaring it again (``eval_policy: str = "ordered-logits"``), and calls
    ``super().__post_init__()``; errors name ``<subclass>.<field>``.

    Attributes:
        num_glimpses: T, the glimpses of a test rollout.
        eval_policy: the policy of test rollouts, a :data:`foveal.policies.POLICIES` name.
        test_samples: M rollouts per test image whose class probabilities are averaged.
    """

    num_glimpses: int = 6
    eval_policy: str = "greedy"
    test_samples: int = 1

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_positive_integers(owner, self, ("num_glimpses", "test_samples"))
        POLICIES.check(self.eval_policy, f"{owner}.eval_policy")


def check_positive_integers(owner: str, config: Any, names: Iterable[str]) -> None:
    """``ValueError`` naming ``owner.<name>`` unless each of the ``names`` of ``config`` is an integer >= 1."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}.{name}: expected a positive integer, found {value!r}")


@runtime_checkable
class Algorithm(Protocol):
    """A training algorithm: everything a run uses of it.

    * ``loss`` is called in train mode with gradients enabled.
    * ``metrics`` is called in eval mode under ``torch.no_grad()`` on validation / test batches and
      returns per-batch means, which the engine averages weighted by batch size; it must contain
      ``"accuracy"`` and ``"ce"``.
    * ``predict`` gives the class probabilities ``[B, T, K]`` after each glimpse and the locations
      ``[B, T, 2]`` looked at: the test numbers and the glimpse record of a run come from one call.
    * ``config`` is the algorithm's frozen settings, with the fields of :class:`EvaluationSettings` (its
      subclass, or any object that has them).
    * Optional: ``prepare(train_set) -> train_set``, called once before training (validate a sequence
      file against the data, oversample it, compute salience maps); ``config.make_grid(image_size)``
      for algorithms whose model reads a grid of cells (posterior networks).

    :class:`PolicyEvaluation` implements ``predict`` and ``metrics`` for algorithms that test a glimpse
    model by rolling it out under ``config.eval_policy``.
    """

    config: Any

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput: ...

    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]: ...

    def predict(self, model: nn.Module, images: Tensor, num_glimpses: Optional[int] = None) -> tuple[Tensor, Tensor]: ...


def check_algorithm(algorithm: Any, name: str = "algorithm") -> None:
    """Raise a ``TypeError`` naming what ``algorithm`` lacks of :class:`Algorithm`."""
    missing = [m for m in ("loss", "metrics", "predict") if not callable(getattr(algorithm, m, None))]
    config = getattr(algorithm, "config", None)
    if config is None:
        missing.append("config")
    else:
        missing += [f"config.{f}" for f in ("num_glimpses", "eval_policy", "test_samples") if not hasattr(config, f)]
    if missing:
        raise TypeError(f"{name} ({type(algorithm).__name__}): not a foveal training algorithm, it lacks "
                        f"{', '.join(missing)} (see foveal.training.base.Algorithm)")


def build_algorithm(name: str, **settings: Any) -> Algorithm:
    """An algorithm from its name and settings (``ALGORITHMS.build`` is this function): the registered class
    built on its config dataclass; unknown settings are an error naming them."""
    entry = ALGORITHMS.entry(name)
    cls, config_cls = entry.load(), entry.meta["config"]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(fields), n=1)
        hint = f"did you mean algorithm.{close[0]}? " if close else ""
        raise ValueError(f"algorithm.{unknown[0]}: unknown setting of algorithm {name!r}; {hint}"
                         f"expected some of {sorted(fields)}")
    algorithm = cls(config_cls(**settings))
    check_algorithm(algorithm, f"algorithm {name!r}")
    return algorithm


def _config_is_a_dataclass(name: str, cls: Any, meta: dict[str, Any]) -> None:
    if not dataclasses.is_dataclass(meta.get("config")):
        raise TypeError(f"algorithm registry: {name!r}: config= expected the dataclass of its settings, "
                        f"found {meta.get('config')!r}")


ALGORITHMS = Registry("algorithm", field="algorithm.name", build=build_algorithm, validate=_config_is_a_dataclass)


def final_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """Accuracy and cross-entropy of the class probabilities ``[B, T, K]`` after the last glimpse."""
    final = probs[:, -1]
    return {"accuracy": (final.argmax(-1) == labels).float().mean().item(),
            "ce": F.nll_loss(final.clamp_min(1e-12).log(), labels).item()}


class PolicyEvaluation:
    """``predict`` and ``metrics`` for an algorithm that tests a glimpse model by its rollout under
    ``config.eval_policy`` (:mod:`foveal.policies`, built for the model at each call), averaging the
    class probabilities of ``config.test_samples`` rollouts: RAM's evaluation, and the Saccader's."""

    config: EvaluationSettings

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Tensor, num_glimpses: Optional[int] = None) -> tuple[Tensor, Tensor]:
        """Class probabilities ``[B, T, K]`` after each glimpse (mean over ``test_samples`` rollouts) and
        the locations ``[B, T, 2]`` of the first rollout."""
        T = num_glimpses or self.config.num_glimpses
        M, B = self.config.test_samples, images.shape[0]
        policy = make_policy(self.config.eval_policy, model=model)
        ro = model.rollout(images.repeat(M, 1, 1, 1) if M > 1 else images, T, policy=policy)
        probs = ro.logits.softmax(-1).view(M, B, T, -1).mean(0)
        return probs, ro.locations[:B]

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        probs, _ = self.predict(model, batch["image"])
        return final_metrics(probs, batch["label"])
