r"""Early exit: stop an image's rollout once its prediction is sure enough (budgeted inference).

An *exit rule* looks at the prediction after each glimpse and says, per image, whether to stop there::

    rule(glimpses, logits, stop_logit) -> done      # glimpses: n taken so far (1-based); logits [b, K]; done [b] bool

Built-in rules (:func:`make_exit_rule`, names in :data:`EXIT_RULES`), with ``p = softmax(logits)``:

* ``confidence``: stop when ``max_k p_k >= threshold`` (GFNet's rule); a threshold above 1 never fires.
* ``entropy``: stop when ``H[p] = -sum_k p_k log p_k <= threshold`` (nats); a negative threshold never fires.
* ``learned``: stop when the model's own stop head says so, ``sigmoid(stop_logit) >= threshold`` (0.5: the
  more likely action of the DT-RAM stop policy, :mod:`foveal.training.reinforce`); needs a model with one.

Models that support it take ``exit_rule=`` in ``rollout`` (RAM and its variants, DRAM, the grid models) and
continue **only the undecided subset** of the batch: after glimpse n the rule is applied to the rows still
looking, the finished rows are dropped from the recurrent state, the images and the policy's view, and the
next glimpse is computed for the others alone; nothing is computed for a stopped image again. So that the
result keeps the fixed ``[B, T, ...]`` shapes of :class:`~foveal.models.base.Rollout`, a stopped image's
remaining steps are padded: its last location, grid cell and class logits are repeated (so ``logits[:, -1]``
is its prediction at the stop, and the union of its glimpse patches is exactly what it saw), its
``log_prob``, ``entropy`` and ``baseline`` are 0, and ``Rollout.glimpses [B]`` says how many it took.

:func:`truncate_rollout` gives the same record from a full fixed-T rollout (the prediction after n glimpses
depends on the first n only): the reference the tests compare the subset rollouts with, and the fallback
for a model of one's own whose ``rollout`` has no ``exit_rule`` (its accounting and result are then exactly
as if it had stopped, though its compute was spent).
"""

from __future__ import annotations

import inspect
import math
from typing import Optional, Protocol

import torch
from torch import Tensor

from foveal.models.base import Rollout

__all__ = ["ExitRule", "ConfidenceExit", "EntropyExit", "LearnedExit", "EXIT_RULES", "make_exit_rule",
           "StepRecorder", "truncate_rollout", "supports_early_exit"]


class ExitRule(Protocol):
    """``rule(glimpses, logits [b, K], stop_logit [b] or None) -> [b] bool``: True = stop after these glimpses."""

    def __call__(self, glimpses: int, logits: Tensor, stop_logit: Optional[Tensor]) -> Tensor: ...


class ConfidenceExit:
    """Stop when the top class probability reaches ``threshold``."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, glimpses: int, logits: Tensor, stop_logit: Optional[Tensor]) -> Tensor:
        return logits.detach().float().softmax(-1).amax(-1) >= self.threshold


class EntropyExit:
    """Stop when the entropy (nats) of the class distribution falls to ``threshold`` or below."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, glimpses: int, logits: Tensor, stop_logit: Optional[Tensor]) -> Tensor:
        log_p = logits.detach().float().log_softmax(-1)
        return -(log_p.exp() * log_p).sum(-1) <= self.threshold


class LearnedExit:
    """Stop when the model's stop head gives the stop action probability ``threshold`` or more."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)

    def __call__(self, glimpses: int, logits: Tensor, stop_logit: Optional[Tensor]) -> Tensor:
        if stop_logit is None:
            raise ValueError("exit rule 'learned': expected a model with a stop head (model.stop_head=true, trained "
                             "with algorithm.stop_cost), found a model without one")
        return torch.sigmoid(stop_logit.detach().float()) >= self.threshold


EXIT_RULES = {"confidence": ConfidenceExit, "entropy": EntropyExit, "learned": LearnedExit}


def make_exit_rule(name: str, threshold: float) -> ExitRule:
    """The rule called ``name`` (:data:`EXIT_RULES`) at ``threshold``; errors name the option and the value."""
    if name not in EXIT_RULES:
        raise ValueError(f"exit rule: expected one of {sorted(EXIT_RULES)}, found {name!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"exit rule {name!r}: threshold expected a finite number, found {threshold!r}")
    return EXIT_RULES[name](threshold)


def supports_early_exit(model) -> bool:
    """Whether ``model.rollout`` takes ``exit_rule`` (and so continues only the undecided images)."""
    return "exit_rule" in inspect.signature(model.rollout).parameters


# what a stopped image's padded steps hold: its last value repeated, or zero
_CARRIED = ("locations", "logits", "indices", "stop_logits")


class StepRecorder:
    """Collects a rollout step by step; under an exit rule, tracks which images are still looking.

    Without a rule every step covers the whole batch and :meth:`rollout` stacks the steps, exactly as a
    fixed-T loop does. With one, ``rows`` holds the batch indices of the images still looking; a model
    computes step t for those rows only, calls :meth:`record` with them, then :meth:`stop`, which applies the
    rule and returns the mask of rows to keep (``None``: keep all), by which the model shrinks its state.

    Args:
        batch: B.
        num_glimpses: T, the most glimpses an image may take.
        rule: an :class:`ExitRule`, or None for a fixed-T rollout.
        device: where the row indices live.
    """

    def __init__(self, batch: int, num_glimpses: int, rule: Optional[ExitRule], device: torch.device) -> None:
        self.batch, self.num_glimpses, self.rule = batch, num_glimpses, rule
        self.rows = torch.arange(batch, device=device)  # [b] batch indices of the images still looking
        self.steps: list[tuple[Tensor, dict[str, Optional[Tensor]]]] = []

    @property
    def subset(self) -> Optional[Tensor]:
        """``rows`` once some image has stopped, else None (the whole batch): what :class:`PolicyState` shows."""
        return None if len(self.rows) == self.batch else self.rows

    @property
    def finished(self) -> bool:
        """Every image has stopped (the model may leave its loop)."""
        return len(self.rows) == 0

    def record(self, **values: Optional[Tensor]) -> None:
        """One step's outputs over ``rows`` (``[b, ...]`` each; None for one the model does not make)."""
        self.steps.append((self.rows, values))

    def stop(self, logits: Tensor, stop_logit: Optional[Tensor] = None) -> Optional[Tensor]:
        """Apply the rule after the step just recorded; ``[b]`` bool mask of the rows that go on, or None if all do."""
        glimpses = len(self.steps)
        if self.rule is None or glimpses >= self.num_glimpses:
            return None
        done = self.rule(glimpses, logits, stop_logit)
        if not bool(done.any()):
            return None
        keep = ~done
        self.rows = self.rows[keep]
        return keep

    def rollout(self) -> Rollout:
        """The :class:`Rollout` ``[B, T, ...]``, stopped images padded (module docstring), ``glimpses`` set."""
        keys = self.steps[0][1].keys()
        if self.rule is None:  # every step covered the whole batch
            out = {k: None if self.steps[0][1][k] is None else torch.stack([v[k] for _, v in self.steps], 1)
                   for k in keys}
            return Rollout(**out)
        full: dict[str, list[Tensor]] = {k: [] for k in keys if self.steps[0][1][k] is not None}
        taken = torch.zeros(self.batch, dtype=torch.long, device=self.rows.device)
        for t in range(self.num_glimpses):
            rows, values = self.steps[min(t, len(self.steps) - 1)]
            for key, seq in full.items():
                if t == 0:
                    seq.append(values[key])  # step 0 covers every image
                elif t >= len(self.steps):  # every image had stopped
                    seq.append(seq[-1] if key in _CARRIED else torch.zeros_like(seq[-1]))
                else:
                    base = seq[-1] if key in _CARRIED else torch.zeros_like(seq[-1])
                    seq.append(base.index_copy(0, rows, values[key]))
            if t < len(self.steps):
                taken[rows] += 1
        out = {k: torch.stack(v, 1) if k in full else None for k, v in full.items()}
        out.update({k: None for k in keys if k not in full})
        return Rollout(**out, glimpses=taken)


def truncate_rollout(ro: Rollout, rule: ExitRule) -> Rollout:
    """A fixed-T rollout as if each image had stopped where ``rule`` first fires (padded as in the module docstring).

    Exact for any causal model (the prediction after n glimpses depends on the first n only); the compute of the
    untaken glimpses was spent all the same.
    """
    B, T = ro.log_prob.shape
    done = torch.zeros(B, dtype=torch.bool, device=ro.logits.device)
    taken = torch.full((B,), T, dtype=torch.long, device=ro.logits.device)
    for t in range(T - 1):
        stop_logit = None if ro.stop_logits is None else ro.stop_logits[:, t]
        fires = rule(t + 1, ro.logits[:, t], stop_logit) & ~done
        taken = torch.where(fires, torch.full_like(taken, t + 1), taken)
        done |= fires
    steps = torch.arange(T, device=taken.device)
    last = torch.minimum(steps[None, :], (taken - 1)[:, None])  # [B, T] the step each padded step repeats
    live = (steps[None, :] < taken[:, None])

    def carried(x: Optional[Tensor]) -> Optional[Tensor]:
        if x is None:
            return None
        index = last.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
        return x.gather(1, index)

    def zeroed(x: Optional[Tensor]) -> Optional[Tensor]:
        return None if x is None else x * live.to(x.dtype)

    return Rollout(locations=carried(ro.locations), log_prob=zeroed(ro.log_prob), logits=carried(ro.logits),
                   baseline=zeroed(ro.baseline), indices=carried(ro.indices), entropy=zeroed(ro.entropy),
                   stop_logits=carried(ro.stop_logits), glimpses=taken)
