"""benchmarks/ps-nogs/bank_fidelity.py: an exact match dominates a low-ESS completion, and the log-linear fit
reads a known slope."""

import math

import torch


def test_an_exact_match_of_the_true_class_dominates_a_low_ess_completion(benchmark_script):
    bf = benchmark_script("ps-nogs/bank_fidelity.py")
    distances = torch.cat([torch.zeros(1), torch.full((2000,), 40.0) + torch.rand(2000)])
    labels = torch.cat([torch.tensor([3]), torch.full((2000,), 5)])
    out = bf.completion_fidelity(distances, labels, label=3, seen=100, target=1 / 1000)
    assert out["same_class"] > 99 and out["rmse"] < 0.01
    spread = bf.completion_fidelity(distances, labels, label=3, seen=100, target=0.5)
    assert spread["same_class"] < 5 and spread["rmse"] > 0.5  # 500 of the far images count too


def test_the_fit_reads_a_slope_per_doubling_and_extrapolates(benchmark_script):
    bf = benchmark_script("ps-nogs/bank_fidelity.py")
    rows = [{"annotator": name, "glimpses_seen": 1, "bank": n, "rmse": 1 - 0.01 * math.log2(n),
             "same_class": 2 * math.log2(n)} for name in bf.TARGETS for n in (1000, 2000, 4000, 8000)]
    fit = bf.fits(rows, 8000, paper=16000)[0]
    assert abs(fit["rmse_per_doubling"] + 0.01) < 1e-9 and abs(fit["same_class_per_doubling"] - 2) < 1e-9
    assert abs(fit["same_class_at_1.5M"] - 2 * math.log2(16000)) < 1e-3
