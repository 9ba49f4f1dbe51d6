"""benchmarks/budgeted/run.py: a seed's numbers are kept and not made again, a changed setting is refused, the PS-NOGS
study's checkpoints are evaluated when they appear, and seeds with different methods average per method."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "budgeted" / "run.py"


def run(tmp_path, *extra):
    cmd = [sys.executable, str(SCRIPT), "--scale", "smoke", "--seeds", "0", "--thresholds", "0.5", "0.9",
           "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--study", str(tmp_path / "study"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs dataset-fashion-mnist")
def test_seeds_are_kept_settings_checked_and_study_models_added(tmp_path):
    first = run(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    seed = json.loads((tmp_path / "out" / "seed-0.json").read_text())
    assert [m["label"] for m in seed["methods"]] == ["RAM", "RAM + learned stop", "RAM + learned stop (its stop rule)",
                                                     "DRAM", "Saccader"]
    assert (tmp_path / "out" / "report.md").exists()
    assert "not included" in (tmp_path / "out" / "report.md").read_text()

    changed = run(tmp_path, "--limit", "30")
    assert changed.returncode != 0
    assert "seed-0.json: field 'limit' is 40 but this call asks for 30" in changed.stderr

    # a study checkpoint appears (here: the RAM just trained, standing in for the study's): only it is evaluated
    study = tmp_path / "study" / "runs" / "ram" / "seed-0" / "checkpoints"
    study.mkdir(parents=True)
    for suffix in (".json", ".safetensors"):
        shutil.copy(tmp_path / "runs" / "seed0" / "ram" / "checkpoints" / f"best{suffix}", study / f"best{suffix}")
    again = run(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "training" not in again.stderr
    assert "evaluating RAM-grid, PS-NOGS study" in again.stderr
    seed = json.loads((tmp_path / "out" / "seed-0.json").read_text())
    added = seed["methods"][-1]
    assert added["label"] == "RAM-grid, PS-NOGS study"
    assert added["fixed"] == seed["methods"][0]["fixed"]  # the same network on the same images
    assert "RAM-grid, PS-NOGS study (seeds [0])" in (tmp_path / "out" / "report.md").read_text()


def test_mean_over_seeds_is_per_method_over_the_seeds_that_have_it(benchmark_script):
    script = benchmark_script("budgeted/run.py")

    def method(label, accuracy):
        entry = {"accuracy": accuracy, "mean_glimpses": 1.0, "area": 0.1, "glimpse_histogram": [1, 0]}
        return {"label": label, "fixed": [dict(entry)], "exit": [dict(entry)]}

    per_seed = [{"seed": 0, "methods": [method("A", 0.5)]},
                {"seed": 1, "methods": [method("A", 0.7), method("B", 0.9)]}]
    mean = {m["label"]: m for m in script.mean_methods(per_seed)}
    assert mean["A"]["seeds"] == [0, 1] and mean["B"]["seeds"] == [1]
    assert mean["A"]["fixed"][0]["accuracy"] == pytest.approx(0.6)
    assert mean["A"]["exit"][0]["glimpse_histogram"] == [2, 0]
    assert mean["B"]["exit"][0]["accuracy"] == pytest.approx(0.9) and mean["B"]["exit"][0]["accuracy_sd"] == 0.0
