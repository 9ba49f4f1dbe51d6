"""``--device`` on every command that runs a model or a search, and one answer for a device this machine lacks."""

import argparse
import shutil

import pytest
import torch

from foveal.cli import _parser, main

# Commands that run a model or a search, with the arguments each needs to start.
MODEL_COMMANDS = {
    "train": [], "demo": [], "train-posterior": [], "train-saccader": [], "compare": [],
    "evaluate": ["runs/none/checkpoints/best"], "evaluate-policies": ["--out", "policy-eval"], "annotate": [],
}
# Commands that read or write files only (plots from records, banks, sequence files, the registries); of
# `sequences`, only `sequences score` runs a network, and it takes --device (test below).
NO_MODEL_COMMANDS = {"list", "plot-epe", "build-bank", "sequences"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_is_classified():
    assert set(_commands()) == set(MODEL_COMMANDS) | NO_MODEL_COMMANDS, \
        "a new command: add it to MODEL_COMMANDS (and give it --device) or to NO_MODEL_COMMANDS"


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_model_commands_take_device(command):
    options = {o: a for a in _commands()[command]._actions for o in a.option_strings}
    assert "--device" in options, f"foveal {command} runs a model but has no --device"
    action = options["--device"]
    assert action.default is None, "the default is said in the help; None means that default"
    for word in ("cpu", "cuda:N", "auto", "default:"):
        assert word in action.help, (command, action.help)


def test_annotate_takes_the_gpu_options():
    options = {o for a in _commands()["annotate"]._actions for o in a.option_strings}
    assert {"--compile", "--precision", "--channels-last"} <= options


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without CUDA")
@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_cuda_without_a_gpu_is_refused_at_once(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([command, *MODEL_COMMANDS[command], "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert f"foveal {command}: error: --device: 'cuda' requested but CUDA is not available; use 'auto' or 'cpu'" \
        in err, err
    assert list(tmp_path.iterdir()) == [], "refused before anything is written"


@pytest.mark.parametrize("command", ["train", "evaluate-policies", "annotate"])
def test_a_misspelt_device_is_refused(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([command, *MODEL_COMMANDS[command], "--device", "gpu"]) == 2
    assert "--device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'gpu'" in capsys.readouterr().err


def test_device_sets_train_device_for_training_commands(tmp_path):
    from foveal.cli.common import config_and_run_dir

    args = _parser().parse_args(["train", "--config", "demo", "--device", "cpu", "--run-dir", str(tmp_path)])
    cfg, _ = config_and_run_dir(args)
    assert cfg["train"]["device"] == "cpu"


def test_compare_refuses_device_with_devices(capsys):
    assert main(["compare", "--device", "cpu", "--devices", "cpu,cpu"]) == 2
    assert "expected one of them" in capsys.readouterr().err


def test_annotate_gpu_options_reach_the_config():
    from foveal.cli.boed import _annotate_config

    base = ["annotate", "--dataset", "mnist5k", "--posterior", "p", "--bank", "b.npy"]
    cfg = _annotate_config(_parser().parse_args(base))
    assert (cfg.device, cfg.precision, cfg.channels_last, cfg.compile) == ("cpu", "fp32", False, False)
    cfg = _annotate_config(_parser().parse_args([*base, "--device", "cpu", "--precision", "bf16",
                                                 "--channels-last", "--compile"]))
    assert (cfg.device, cfg.precision, cfg.channels_last, cfg.compile) == ("cpu", "bf16", True, True)


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile on the CPU builds C++")
def test_compiled_posterior_gives_the_eager_logits():
    """``NetworkPosterior(compile=True)``: the same logits as eager, for two batch shapes (a recompile)."""
    from foveal.boed.posterior import NetworkPosterior
    from foveal.models import create_model

    torch.manual_seed(0)
    net = create_model("posterior-cnn", in_channels=1, num_classes=3, image_size=(8, 8), widths=(4,), strides=(1,))
    eager, compiled = NetworkPosterior(net), NetworkPosterior(net, compile=True)
    images, masks = torch.rand(5, 1, 8, 8), (torch.rand(5, 1, 8, 8) > 0.5).float()
    for b in (5, 3):
        assert torch.allclose(compiled.logits(images[:b], masks[:b]), eager.logits(images[:b], masks[:b]), atol=1e-5)
    assert net.training, "the network's train/eval mode is restored"


@pytest.mark.parametrize("command", ["evaluate", "evaluate-policies"])
def test_a_gpu_index_beyond_the_machines_is_refused(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    count = torch.cuda.device_count()
    assert main([command, *MODEL_COMMANDS[command], "--device", f"cuda:{count}"]) == 2
    err = capsys.readouterr().err
    assert "--device: " in err and ("CUDA is not available" in err or f"has {count} CUDA device(s)" in err), err


def test_sequences_score_takes_device_and_refuses_a_missing_gpu(capsys):
    sequences = _commands()["sequences"]
    actions = next(a for a in sequences._actions if isinstance(a, argparse._SubParsersAction)).choices
    options = {o: a for a in actions["score"]._actions for o in a.option_strings}
    assert "--device" in options and options["--device"].default is None
    if not torch.cuda.is_available():
        assert main(["sequences", "score", "none", "--scorer", "none", "--device", "cuda"]) == 2
        assert "--device: 'cuda' requested but CUDA is not available" in capsys.readouterr().err
