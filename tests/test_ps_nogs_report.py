"""benchmarks/ps-nogs/report.py: test accuracy paired with RAM's seed by seed, finished runs only."""


def row(method, seed, greedy, sampled, status="settled"):
    return {"method": method, "share": "-" if method == "RAM" else "25%", "seed": seed, "status": status,
            "test_accuracy": greedy, "test_accuracy_sampled": sampled}


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
