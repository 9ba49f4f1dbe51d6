"""Bad input from a new user: every mistake is one line on stderr naming the file or ``section.key``,
exit status 2, no traceback, and a start refused before anything is built leaves no run folder behind.

Each case goes through ``foveal.cli.main`` exactly as typed on the command line (tiny settings,
built-in ``mnist5k``); the table of bad inputs and their messages in docs/errors.md is made from these.
"""

import json
import shutil

from pathlib import Path

import pytest
import torch
import yaml

from foveal.cli import main

MNIST28 = Path(__file__).parent / "mnist28.yaml"  # the plain 28x28 digits (the demo moved to a 60x60 canvas)
TINY = ["train.iterations=2", "train.val_every=2", "train.batch_size=16", "train.val_batches=1",
        "train.tensorboard=false", "model.hidden_size=16", "model.glimpse_hidden=8", "model.location_hidden=8",
        "model.feature_size=16", "algorithm.num_glimpses=2", "evaluate.batch_size=250", "evaluate.examples=2",
        "evaluate.figures=false"]


def refused(capsys, argv, *expected):
    """Run ``foveal argv``: exit 2, one error line on stderr holding every ``expected`` text; returns it."""
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse's errors
        status = stop.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def train(run_dir, *overrides, config=MNIST28):
    return ["train", "--config", str(config), "--run-dir", str(run_dir), "--quiet", *TINY, *overrides]


def write_config(path, **sections):
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run of the demo config."""
    run = tmp_path_factory.mktemp("errors") / "run"
    assert main(train(run)) == 0
    return run


# ----------------------------------------------------------------------------- config sections


def test_misspelt_train_key_is_named_with_the_closest_one(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "train.iteratons=10"), "train.iteratons: unknown setting",
            "did you mean train.iterations?")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_missing_required_train_key(tmp_path, capsys):
    cfg = write_config(tmp_path / "nolr.yaml", data={"name": "mnist5k"}, model={"name": "ram"},
                       algorithm={"name": "reinforce"}, train={"iterations": 2, "batch_size": 16})
    refused(capsys, ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r")], "train.lr: missing",
            "expected a number", "train.lr=VALUE")
    assert not (tmp_path / "r").exists()


def test_exponent_without_a_dot_is_text_and_says_so(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "train.lr=1e-3"), "train.lr: expected a number, found '1e-3'",
            "write 0.001")


def test_misspelt_evaluate_key_is_not_ignored(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "evaluate.exampels=4"), "evaluate.exampels: unknown setting",
            "did you mean evaluate.examples?")


def test_unknown_evaluate_split(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "evaluate.split=bogus"), "evaluate.split", "'bogus'")


def test_wrong_types_in_data_model_and_algorithm(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "data.seed=abc"), "data.seed: expected an integer, found 'abc'")
    refused(capsys, train(tmp_path / "r", "model.glimpse_size=2.5"),
            "model.glimpse_size: expected an integer, found 2.5")
    refused(capsys, train(tmp_path / "r", "model.location_std=abc"), "model.location_std: expected a number")
    refused(capsys, train(tmp_path / "r", "algorithm.ce_weight=abc"), "algorithm.ce_weight: expected a number")
    assert not (tmp_path / "r").exists()


def test_unknown_keys_in_data_model_and_algorithm(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "data.sed=3"), "data.sed: unknown option of dataset mnist5k",
            "did you mean data.seed?")
    refused(capsys, train(tmp_path / "r", "model.nme=3"), "model.nme: unknown setting of model 'ram'")
    refused(capsys, train(tmp_path / "r", "algorithm.num_glimpse=3"), "algorithm.num_glimpse: unknown setting of "
            "algorithm 'reinforce'", "did you mean algorithm.num_glimpses?")


def test_config_file_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  name: mnist5k\n model: {name: ram}\n")
    refused(capsys, ["train", "--config", str(bad)], "bad.yaml: not valid YAML", "line 3")
    write_config(bad, data={"name": "mnist5k"}, model={"name": "ram"}, algorithm={"name": "reinforce"}, optimiser={})
    refused(capsys, ["train", "--config", str(bad)], "bad.yaml: unknown section(s) ['optimiser']")
    write_config(bad, data={"name": "mnist5k"}, model={"name": "ram"}, algorithm={"name": "reinforce"}, train=[1, 2])
    refused(capsys, ["train", "--config", str(bad)], "bad.yaml: section train: expected a mapping")
    refused(capsys, ["train", "--config", str(tmp_path / "none.yaml")], "none.yaml does not exist")
    refused(capsys, ["train", "--config", "demo", "model.glimpse_size.x=1"], "model.glimpse_size is 8, not a mapping")


# ----------------------------------------------------------------------------- geometry against the data


def test_glimpse_larger_than_the_image(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "model.glimpse_size=100"), "model.glimpse_size",
            "28x28", "found 100")
    assert not (tmp_path / "r").exists()


def test_dram_glimpse_larger_than_the_image(tmp_path, capsys):
    cfg = write_config(tmp_path / "dram.yaml", data={"name": "mnist5k"}, model={"name": "dram", "glimpse_size": 30},
                       algorithm={"name": "reinforce"}, train={"iterations": 2, "batch_size": 16, "lr": 1.0e-3})
    refused(capsys, ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r")], "model.glimpse_size",
            "28x28", "found 30")


def test_grid_with_more_cells_than_positions(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "model.name=ram-grid", "model.grid=30"), "model.grid",
            "21 distinct positions", "8 px glimpses", "28x28", "found 30")


def test_bagnet_layout_larger_than_the_image_and_too_many_glimpses(tmp_path, capsys):
    sections = dict(data={"name": "mnist5k"}, algorithm={"name": "saccader-representation", "num_glimpses": 2},
                    train={"iterations": 2, "batch_size": 16, "lr": 1.0e-3})
    cfg = write_config(tmp_path / "b.yaml", model={"name": "bagnet", "layout": "bagnet-77"}, **sections)
    refused(capsys, ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r")], "model.layout",
            "receptive field 77 px", "28x28")
    cfg = write_config(tmp_path / "b.yaml", model={"name": "bagnet"},
                       **{**sections, "algorithm": {"name": "saccader-representation", "num_glimpses": 1000}})
    refused(capsys, ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r")], "algorithm.num_glimpses",
            "28x28", "found 1000")
    assert not (tmp_path / "r").exists()


def test_batch_larger_than_the_train_split(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "train.batch_size=100000"), "train.batch_size", "found 100000")


def test_values_out_of_range(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "train.iterations=0"), "train.iterations: expected a positive integer")
    refused(capsys, train(tmp_path / "r", "model.core=transformer"), "model.core", "'transformer'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "train.device=cuda"),
            "train.device: 'cuda' requested but CUDA is not available")
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- the run folder


def test_a_failed_start_leaves_the_folder_usable(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()  # e.g. made by the user beforehand
    refused(capsys, train(run, "model.glimpse_size=100"), "model.glimpse_size")
    assert list(run.iterdir()) == []
    # a run that died before its first checkpoint left a config.yaml: it holds nothing to resume
    (run / "config.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.5}}))
    assert main(train(run)) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["iterations"] == 2


def test_a_folder_with_a_run_still_refuses_another_config(trained, capsys):
    refused(capsys, train(trained, "train.lr=0.5"), "config.yaml: this run folder was made with another config",
            "train.lr")


# ----------------------------------------------------------------------------- the command line


def test_overrides_are_read_wherever_they_stand(tmp_path, capsys):
    # a second group of overrides, after options: read, in order (here the misspelt one is named)
    refused(capsys, ["train", "--config", "demo", "--quiet", "train.iterations=2", "--run-dir", str(tmp_path / "r"),
                     "train.iteratons=3"], "train.iteratons: unknown setting")


def test_an_override_where_an_option_value_belongs(capsys):
    refused(capsys, ["train", "--config", "demo", "--run-dir", "train.iterations=5"],
            "--run-dir got 'train.iterations=5', which is an override", "write --run-dir VALUE")


def test_overrides_to_a_command_without_them_and_unknown_options(capsys):
    refused(capsys, ["evaluate", "runs/x/checkpoints/best", "evaluate.examples=4"],
            "foveal evaluate: error: takes no key=value overrides")
    refused(capsys, ["train", "--iterations", "5"], "unrecognized arguments: --iterations",
            "e.g. train.iterations=500")
    refused(capsys, ["train", "--quiet=yes"], "--quiet")


# ----------------------------------------------------------------------------- weight files and checkpoints


class _Payload:
    def __reduce__(self):  # what a malicious .pth would run on unpickling
        return (print, ("this must never run",))


def test_a_pickle_posing_as_weights_is_refused_in_one_line(tmp_path, capsys):
    weights = tmp_path / "densenet121.pth"
    torch.save({"features.conv0.weight": torch.zeros(1), "x": _Payload()}, weights)
    cfg = write_config(tmp_path / "p.yaml", data={"name": "translated-mnist5k", "canvas": 32},
                       model={"name": "posterior-densenet121", "weights": str(weights)},
                       algorithm={"name": "posterior", "num_glimpses": 2, "glimpse_size": 8, "grid": 3},
                       train={"iterations": 1, "batch_size": 4, "lr": 1.0e-4})
    line = refused(capsys, ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r")],
                   "densenet121.pth: refused", "(print)")
    assert "this must never run" not in line and not (tmp_path / "r").exists()


def test_a_pytorch_file_as_init_from(tmp_path, capsys):
    weights = tmp_path / "bagnet.pth"
    torch.save({}, weights)
    cfg = write_config(tmp_path / "s.yaml", data={"name": "mnist5k"},
                       model={"name": "saccader", "init_from": str(weights)},
                       algorithm={"name": "saccader-location", "num_glimpses": 2},
                       train={"iterations": 1, "batch_size": 4, "lr": 1.0e-4})
    refused(capsys, ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r")],
            "model.init_from=", "bagnet.pth", "found a PyTorch file")


def copy_best(trained, to):
    to.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(trained / "checkpoints" / f"best{suffix}", to / f"best{suffix}")
    return to / "best"


def test_an_edited_checkpoint_json_is_refused(trained, tmp_path, capsys):
    best = copy_best(trained, tmp_path / "ck")
    header = json.loads(best.with_suffix(".json").read_text())
    header["info"]["model"]["config"]["scale_factor"] = 3  # the tensors' shapes still fit
    best.with_suffix(".json").write_text(json.dumps(header, indent=1))
    refused(capsys, ["evaluate", str(best), "--out", str(tmp_path / "ev")], "best.json: modified after it was written")


def test_a_checkpoint_from_before_the_json_hash_still_loads(trained, tmp_path, capsys):
    best = copy_best(trained, tmp_path / "ck")
    header = json.loads(best.with_suffix(".json").read_text())
    del header["json_sha256"]
    best.with_suffix(".json").write_text(json.dumps(header, indent=1))
    assert main(["evaluate", str(best), "--out", str(tmp_path / "ev")]) == 0
    assert "test accuracy:" in capsys.readouterr().out


def test_a_pytorch_file_given_as_a_checkpoint(tmp_path, capsys):
    torch.save({}, tmp_path / "model.pth")
    refused(capsys, ["evaluate", str(tmp_path / "model.pth")], "model.pth: a PyTorch pickle, not a foveal checkpoint")


def test_evaluate_settings_are_checked_too(trained, tmp_path, capsys):
    best = trained / "checkpoints" / "best"
    refused(capsys, ["evaluate", str(best), "--test-samples", "0", "--out", str(tmp_path / "ev")], "test_samples",
            "found 0")
    refused(capsys, ["evaluate", str(best), "--policy", "bogus", "--out", str(tmp_path / "ev")], "eval_policy",
            "'bogus'")


def test_truncated_and_missing_checkpoints(trained, tmp_path, capsys):
    best = copy_best(trained, tmp_path / "ck")
    data = best.with_suffix(".safetensors").read_bytes()
    best.with_suffix(".safetensors").write_bytes(data[: len(data) // 2])
    refused(capsys, ["evaluate", str(best)], "best.safetensors: does not match best.json")
    refused(capsys, ["evaluate", str(tmp_path / "nothing" / "best")], "best.json: checkpoint not found")
