"""The command line and a whole run, end to end, on the built-in MNIST digits (tiny settings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from foveal.cli import main
from foveal.config import apply_overrides, load_config

TINY = ["train.iterations=12", "train.val_every=6", "train.batch_size=16", "train.val_batches=2",
        "model.hidden_size=16", "model.glimpse_hidden=8", "model.location_hidden=8", "model.feature_size=16",
        "algorithm.num_glimpses=3", "evaluate.batch_size=250", "evaluate.examples=4", "train.tensorboard=false"]


def test_help_and_argument_errors_do_not_import_torch():
    code = ("import sys; from foveal.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_list_shows_every_registered_name_with_its_summary(capsys):
    from foveal.data import DATASETS
    from foveal.models import MODELS
    from foveal.policies import POLICIES
    from foveal.training.algorithms import ALGORITHMS

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for heading, registry in (("models (model.name):", MODELS), ("algorithms (algorithm.name):", ALGORITHMS),
                              ("datasets (data.name", DATASETS), ("policies (", POLICIES)):
        start = next(i for i, line in enumerate(lines) if line.startswith(heading))
        rows = [line.split(maxsplit=1) for line in lines[start + 1:] if line.startswith("  ")
                and not line.startswith("   ")]
        for name, summary in registry.describe():
            assert [name, summary] in rows, (name, heading)


def test_list_shows_the_sequence_makers_the_annotator_included(capsys):
    """nogs and hindsight register when foveal.boed is imported (foveal.sequences may not name the annotator)."""
    from foveal.sequences import MAKERS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    listed = out[out.index("sequence makers:\n"):]
    for name, summary in MAKERS.describe():
        assert f"  {name:<24} {summary}" in listed
    assert {"salient", "random", "ps-ram", "nogs", "hindsight"} <= set(MAKERS.names())


def test_overrides_and_config_errors(tmp_path):
    cfg = apply_overrides(load_config("demo"), ["train.iterations=7", "data.canvas=100", "model.core=lstm"])
    assert cfg["train"]["iterations"] == 7 and cfg["data"]["canvas"] == 100 and cfg["model"]["core"] == "lstm"
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides(cfg, ["iterations=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: mnist5k}\nmodel: {name: ram}\nalgorithm: {name: reinforce}\noptimiser: {}\n")
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['optimiser'\]"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="expected a YAML file or one of"):
        load_config("no-such-config")


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["train", "--config", "demo", "--run-dir", str(tmp_path / "r"), "--quiet", "model.core=transformer"]) == 2
    err = capsys.readouterr().err
    assert "model.core" in err and "transformer" in err


@pytest.mark.slow
def test_demo_trains_evaluates_resumes_and_draws(tmp_path, capsys):
    run = tmp_path / "run"
    # a killed run: stop after 6 iterations, then the same command resumes it
    from foveal.recipes.run import train_run
    cfg = apply_overrides(load_config("demo"), TINY)
    assert train_run(cfg, run, stop_after=6) is None
    assert main(["demo", "--run-dir", str(run), "--quiet", *TINY]) == 0
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "figure:" in out
    results = json.loads((run / "results.json").read_text())
    assert results["num_images"] == 500 and len(results["accuracy_per_glimpse"]) == 3
    assert 0 <= results["test_accuracy"] <= 1
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["iterations"] == 12
    for fig in results["figures"]:
        assert Path(fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a resumed run folder with another config is refused
    assert main(["demo", "--run-dir", str(run), "--quiet", *TINY, "train.lr=0.5"]) == 2
    assert "train.lr" in capsys.readouterr().err
    # evaluate a checkpoint with Monte-Carlo averaging and another policy
    assert main(["evaluate", str(run / "checkpoints" / "best"), "--test-samples", "2", "--policy", "sample",
                 "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert ev["test_samples"] == 2 and ev["eval_policy"] == "sample"
