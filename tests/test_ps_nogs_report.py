"""benchmarks/ps-nogs/report.py: speed-up and test accuracy paired with a reference seed by seed, finished runs
only, and against a reference other than RAM only at its share."""


def row(method, seed, greedy, sampled, status="settled", share="25%", converged=1000):
    return {"method": method, "share": "-" if method == "RAM" else share, "seed": seed, "status": status,
            "test_accuracy": greedy, "test_accuracy_sampled": sampled, "ce_converged_at": converged}


def test_differences_are_paired_by_seed_and_skip_unfinished_runs(benchmark_script):
    report = benchmark_script("ps-nogs/report.py")
    rows = [row("RAM", 0, 0.70, 0.72), row("RAM", 1, 0.60, 0.62),
            row("PS-X", 0, 0.73, 0.72), row("PS-X", 1, 0.63, 0.66), row("PS-X", 2, 0.99, 0.99, status="running"),
            row("PS-Y", 0, None, None, status="pending")]
    lines = report.paired_table(rows)
    x = next(line for line in lines if line.startswith("| PS-X"))
    # +3 points on both seeds: mean +3.0, no spread, 2 seeds; the running seed 2 (no RAM pair either) is left out
    assert "| +3.0 [+3.0, +3.0] (2) |" in x
    assert "+2.0 [" in x  # sampled: +0 and +4 points
    assert next(line for line in lines if line.startswith("| PS-Y")).endswith("| - | - |")


def test_against_a_matched_control_only_methods_at_its_share_and_speed_up_by_seed(benchmark_script):
    report = benchmark_script("ps-nogs/report.py")
    rows = [row("RAM", 0, 0.70, 0.70), row("RAM", 1, 0.70, 0.70),
            row("PS-C", 0, 0.60, 0.61, share="natural", converged=2000),
            row("PS-C", 1, 0.62, 0.63, share="natural", converged=3000),
            row("PS-X", 0, 0.65, 0.61, share="natural", converged=1000),
            row("PS-X", 1, 0.67, 0.63, share="natural", converged=1000),
            row("PS-X-25", 0, 0.90, 0.90), row("PS-X-25", 1, 0.90, 0.90)]
    lines = report.paired_table(rows, reference="PS-C")
    assert "speed-up over PS-C" in lines[0]
    assert not any(line.startswith(("| RAM", "| PS-C", "| PS-X-25")) for line in lines)
    x = next(line for line in lines if line.startswith("| PS-X "))
    # speed-up 2x and 3x: mean 2.50x; greedy +5 points on both seeds; sampled level
    assert x.startswith("| PS-X | natural | 2.50x [") and "| +5.0 [+5.0, +5.0] (2) | +0.0 [+0.0, +0.0] (2) |" in x
