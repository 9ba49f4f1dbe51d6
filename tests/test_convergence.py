"""Iterations to converge (the paper's Table 1 criteria) on synthetic validation curves."""

import math

import numpy as np
import pytest

from foveal.recipes.compare.convergence import (iterations_to_converge, iterations_to_reach, mean_and_spread, mean_interval,
                                          run_convergence, t_quantile)


def write_metrics(path, val_rows, train_rows=()):
    lines = ["iteration,split,name,value"]
    lines += [f"{i},train,{n},{float(v)!r}" for i, n, v in train_rows]
    lines += [f"{i},val,{n},{float(v)!r}" for i, n, v in val_rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ce_criterion_first_validation_within_tolerance_of_the_minimum():
    its = [100, 200, 300, 400, 500, 600]
    ce = [2.0, 0.9, 0.515, 0.509, 0.50, 0.52]  # best 0.50 at 500; 0.509 is the first within 0.01
    assert iterations_to_converge(its, ce, tolerance=0.01, mode="min") == 400
    assert iterations_to_converge(its, ce, tolerance=0.02, mode="min") == 300
    assert iterations_to_converge(its, ce, tolerance=0.0, mode="min") == 500


def test_accuracy_criterion_and_an_exact_tie_at_the_tolerance():
    its = [10, 20, 30, 40]
    acc = [0.50, 0.80, 0.82, 0.81]  # best 0.82 at 30; 0.80 is two points below, 0.81 (one below) comes later
    assert iterations_to_converge(its, acc, tolerance=0.01, mode="max") == 30
    assert iterations_to_converge(its, [0.5, 0.81, 0.82, 0.6], tolerance=0.01, mode="max") == 20  # tie counts


def test_nan_is_skipped_and_empty_or_all_nan_is_none():
    assert iterations_to_converge([1, 2, 3], [float("nan"), 0.3, 0.31], tolerance=0.01, mode="max") == 2
    assert iterations_to_converge([], [], tolerance=0.01, mode="min") is None
    assert iterations_to_converge([5], [float("nan")], tolerance=0.01, mode="min") is None


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="mode"):
        iterations_to_converge([1], [1.0], tolerance=0.01, mode="best")
    with pytest.raises(ValueError, match="increasing"):
        iterations_to_converge([2, 1], [1.0, 2.0], tolerance=0.01, mode="min")
    with pytest.raises(ValueError, match="equal length"):
        iterations_to_converge([1, 2], [1.0], tolerance=0.01, mode="min")


def test_run_convergence_reads_metrics_csv(tmp_path):
    its = np.arange(1, 21) * 100
    ce = 0.3 + 2.0 * np.exp(-its / 400.0)  # decreasing towards 0.3: best at 2000
    acc = 0.9 - 0.6 * np.exp(-its / 300.0)
    rows = [(i, "ce", c) for i, c in zip(its, ce)] + [(i, "accuracy", a) for i, a in zip(its, acc)]
    path = write_metrics(tmp_path / "metrics.csv", rows, train_rows=[(50, "loss", 3.0)])
    conv = run_convergence(path)
    # exact answers: first i with 2 exp(-i/400) - 2 exp(-5) <= 0.01, and 0.6 (exp(-i/300) - exp(-20/3)) <= 0.01
    expect_ce = int(its[np.argmax(ce - ce.min() <= 0.01)])
    expect_acc = int(its[np.argmax(acc.max() - acc <= 0.01)])
    assert conv.ce_iterations == expect_ce == 1800
    assert conv.accuracy_iterations == expect_acc == 1300
    assert conv.best_ce == pytest.approx(ce.min()) and conv.best_accuracy == pytest.approx(acc.max())
    assert conv.last_iteration == 2000
    loose = run_convergence(path, ce_tolerance=0.1, accuracy_tolerance=0.05)
    assert loose.ce_iterations < conv.ce_iterations and loose.accuracy_iterations < conv.accuracy_iterations


def test_fixed_target_first_validation_at_or_above_it():
    its, acc = [100, 200, 300, 400], [0.2, float("nan"), 0.45, 0.40]
    assert iterations_to_reach(its, acc, target=0.4) == 300  # NaN skipped; the first at or above counts
    assert iterations_to_reach(its, acc, target=0.45) == 300 and iterations_to_reach(its, acc, target=0.2) == 100
    assert iterations_to_reach(its, acc, target=0.5) is None
    with pytest.raises(ValueError, match="equal length"):
        iterations_to_reach([1, 2], [0.1], target=0.5)


def test_run_convergence_counts_a_target_only_when_given(tmp_path):
    its = np.arange(1, 11) * 100
    acc = 0.9 - 0.6 * np.exp(-its / 300.0)  # 0.9 - 0.6 e^{-i/300} >= 0.8 first at i = 300 ln 6 = 537.5 -> 600
    path = write_metrics(tmp_path / "metrics.csv", [(i, "accuracy", a) for i, a in zip(its, acc)])
    assert run_convergence(path).target_iterations is None
    conv = run_convergence(path, target_accuracy=0.8)
    assert conv.target_iterations == 600 and conv.target_accuracy == 0.8
    assert run_convergence(path, target_accuracy=0.95).target_iterations is None


def test_run_without_validation_rows_gives_none(tmp_path):
    conv = run_convergence(write_metrics(tmp_path / "metrics.csv", [], train_rows=[(1, "loss", 1.0)]))
    assert conv.ce_iterations is None and conv.accuracy_iterations is None and conv.last_iteration is None


def test_mean_and_spread():
    assert mean_and_spread([1.0, 3.0, None, float("nan")]) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert mean_and_spread([4]) == (4.0, 0.0, 1)
    m, s, n = mean_and_spread([None])
    assert math.isnan(m) and math.isnan(s) and n == 0


@pytest.mark.parametrize("p, df, expected", [(0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 4, 2.7764),
                                             (0.975, 30, 2.0423), (0.95, 5, 2.0150), (0.995, 4, 4.6041)])
def test_t_quantile_matches_the_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_rejects_what_it_cannot_compute():
    for p, df in ((0.4, 3), (1.0, 3), (0.975, 0), (0.975, 2.5)):
        with pytest.raises(ValueError, match="t_quantile"):
            t_quantile(p, df)


def test_mean_interval_over_three_seeds():
    mean, low, high, n = mean_interval([1.0, 2.0, None, 3.0])  # sd 1, n 3: half-width 4.303 / sqrt(3)
    assert (mean, n) == (2.0, 3)
    half = 4.3027 / math.sqrt(3)
    assert (low, high) == (pytest.approx(2 - half, abs=1e-3), pytest.approx(2 + half, abs=1e-3))
    assert mean_interval([5.0, 5.0])[1:3] == (5.0, 5.0)
    mean, low, high, n = mean_interval([7.0])  # one seed: no interval
    assert mean == 7.0 and n == 1 and math.isnan(low) and math.isnan(high)
