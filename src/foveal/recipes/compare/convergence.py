r"""How fast a run converged: iterations until a validation curve first comes close to its best.

The near-optimal-glimpse-sequences paper (Harvey et al. 2021, section 6 and Table 1) counts the
training iterations until the first validation whose

* cross-entropy is within 0.01 (nats) of the lowest validation cross-entropy of the run (CelebA-HQ), or
* accuracy is within 1 percentage point of the highest validation accuracy of the run (CUB).

With a curve :math:`v_1, \dots, v_n` measured at iterations :math:`i_1 < \dots < i_n` and
:math:`v^\star` its best value,

.. math::

    \text{iterations to converge} = \min \{ i_k : |v_k - v^\star| \le \text{tolerance} \}.

A third criterion, for runs cut short before they converge (where "the best" is only the best so far),
counts the iterations until validation accuracy first reaches a fixed target, the same for every
method: :math:`\min \{ i_k : v_k \ge \text{target} \}` (None if the run never reaches it).

All criteria are read from a run's ``metrics.csv`` (the engine's long format, split ``val``,
names ``ce`` and ``accuracy``; accuracy is a fraction in [0, 1], so one point is ``0.01``).
Values that are NaN are ignored. The best is taken over the whole run, so the number depends on
how long the run was trained: compare runs of equal length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

import numpy as np

from foveal.evaluation.records import PathLike, read_metrics

__all__ = ["iterations_to_converge", "iterations_to_reach", "Convergence", "run_convergence", "mean_and_spread",
           "mean_interval", "t_quantile", "CE_TOLERANCE", "ACCURACY_TOLERANCE"]

CE_TOLERANCE = 0.01  # nats: the paper's CelebA-HQ criterion
ACCURACY_TOLERANCE = 0.01  # one percentage point: the paper's CUB criterion


def iterations_to_converge(iterations: Sequence[int], values: Sequence[float], *, tolerance: float,
                           mode: str) -> Optional[int]:
    """The first iteration whose value is within ``tolerance`` of the best value of the curve.

    Args:
        iterations: ``[n]`` iterations of the validations, increasing.
        values: ``[n]`` the metric at each; NaN entries are skipped.
        tolerance: how close to the best counts as converged (>= 0).
        mode: ``"min"`` (lower is better, e.g. cross-entropy) or ``"max"`` (e.g. accuracy).

    Returns:
        The iteration, or None when the curve has no finite value.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"iterations_to_converge: mode: expected 'min' or 'max', found {mode!r}")
    if not tolerance >= 0:
        raise ValueError(f"iterations_to_converge: tolerance: expected >= 0, found {tolerance!r}")
    its = np.asarray(iterations, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    if its.shape != vals.shape or its.ndim != 1:
        raise ValueError(f"iterations_to_converge: expected two 1-d sequences of equal length, found shapes "
                         f"{its.shape} and {vals.shape}")
    if len(its) > 1 and (np.diff(its) <= 0).any():
        raise ValueError("iterations_to_converge: iterations: expected increasing values, found "
                         f"{its[1:][np.diff(its) <= 0][0]} after a larger or equal one")
    finite = np.isfinite(vals)
    if not finite.any():
        return None
    its, vals = its[finite], vals[finite]
    best = vals.min() if mode == "min" else vals.max()
    close = np.abs(vals - best) <= tolerance + 1e-12  # the slack absorbs float noise in the CSV round trip
    return int(its[np.argmax(close)])


def iterations_to_reach(iterations: Sequence[int], values: Sequence[float], *, target: float) -> Optional[int]:
    """The first iteration whose value is at least ``target`` (NaN entries skipped); None if none is."""
    its = np.asarray(iterations, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    if its.shape != vals.shape or its.ndim != 1:
        raise ValueError(f"iterations_to_reach: expected two 1-d sequences of equal length, found shapes "
                         f"{its.shape} and {vals.shape}")
    reached = np.isfinite(vals) & (vals >= target - 1e-12)
    return int(its[np.argmax(reached)]) if reached.any() else None


@dataclass
class Convergence:
    """Convergence numbers of one run (None where the run has no such validation curve).

    Attributes:
        ce_iterations: first iteration with validation cross-entropy within ``ce_tolerance`` of its best.
        accuracy_iterations: first iteration with validation accuracy within ``accuracy_tolerance`` of its best.
        best_ce, best_accuracy: the best values of the curves.
        last_iteration: the last validated iteration (how long the curve is).
        target_iterations: first iteration with validation accuracy >= ``target_accuracy`` (None if never,
            or if no target was given).
    """

    ce_iterations: Optional[int]
    accuracy_iterations: Optional[int]
    best_ce: Optional[float]
    best_accuracy: Optional[float]
    last_iteration: Optional[int]
    ce_tolerance: float = CE_TOLERANCE
    accuracy_tolerance: float = ACCURACY_TOLERANCE
    target_iterations: Optional[int] = None
    target_accuracy: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)


def run_convergence(metrics: Union[PathLike, dict], *, ce_tolerance: float = CE_TOLERANCE,
                    accuracy_tolerance: float = ACCURACY_TOLERANCE, target_accuracy: Optional[float] = None,
                    split: str = "val") -> Convergence:
    """The criteria of the module docstring for one run.

    Args:
        metrics: a run's ``metrics.csv`` (or its :func:`foveal.evaluation.records.read_metrics` dict).
        target_accuracy: a validation accuracy (fraction) for the fixed-target criterion; None: not counted.
        split: the split of the curves (``"val"``).
    """
    data = metrics if isinstance(metrics, dict) else read_metrics(metrics)
    curves = data.get(split, {})
    out: dict = {}
    last, target_iterations = None, None
    for name, mode, tol in (("ce", "min", ce_tolerance), ("accuracy", "max", accuracy_tolerance)):
        if name not in curves:
            out[name] = (None, None)
            continue
        its, vals = curves[name]
        order = np.argsort(its, kind="stable")
        its, vals = its[order], vals[order]
        finite = vals[np.isfinite(vals)]
        best = None if not len(finite) else float(finite.min() if mode == "min" else finite.max())
        out[name] = (iterations_to_converge(its, vals, tolerance=tol, mode=mode), best)
        if name == "accuracy" and target_accuracy is not None:
            target_iterations = iterations_to_reach(its, vals, target=target_accuracy)
        if len(its):
            last = int(its[-1]) if last is None else max(last, int(its[-1]))
    return Convergence(ce_iterations=out["ce"][0], accuracy_iterations=out["accuracy"][0], best_ce=out["ce"][1],
                       best_accuracy=out["accuracy"][1], last_iteration=last, ce_tolerance=ce_tolerance,
                       accuracy_tolerance=accuracy_tolerance, target_iterations=target_iterations,
                       target_accuracy=target_accuracy)


def mean_and_spread(values: Sequence[Optional[float]]) -> tuple[float, float, int]:
    """``(mean, sample standard deviation, n)`` of the values that are not None / NaN (NaN, NaN, 0 if none;
    spread 0 for a single value)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return float("nan"), float("nan"), 0
    arr = np.asarray(xs)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, len(arr)


def t_quantile(p: float, df: int) -> float:
    """The ``p``-quantile of Student's t distribution with ``df`` degrees of freedom (``0.5 < p < 1``), by
    bisection on its distribution function, integrated numerically (no SciPy): ``t_quantile(0.975, 2)`` is
    4.303, ``t_quantile(0.975, 30)`` 2.042."""
    if not 0.5 < p < 1 or int(df) != df or df < 1:
        raise ValueError(f"t_quantile: expected 0.5 < p < 1 and a whole df >= 1, found p={p!r}, df={df!r}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    u = np.linspace(0.0, 1.0, 20_001)[1:]  # P(T > x) = integral over u in (0, 1] of f(x / u) x / u^2

    def upper_tail(x: float) -> float:
        t = x / u
        g = np.concatenate([[0.0], np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df)) * x / (u * u)])
        return float((g[1:] + g[:-1]).sum() / 2 * u[0])  # trapezoids; g(0) is its limit 0 (df > 1; df = 1: 1e-4 off)

    lo, hi = 0.0, 1.0
    while upper_tail(hi) > 1 - p:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if upper_tail(mid) > 1 - p else (lo, mid)
    return (lo + hi) / 2


def mean_interval(values: Sequence[Optional[float]], level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``: the mean of the values that are not None / NaN and its Student-t interval
    at ``level``, ``mean -/+ t_{(1+level)/2, n-1} sd / sqrt(n)``, the interval for a mean over a few seeds
    (or for a mean paired difference, given the per-seed differences). NaN bounds for fewer than 2 values."""
    mean, sd, n = mean_and_spread(values)
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half, n
