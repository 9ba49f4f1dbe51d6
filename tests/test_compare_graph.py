"""``foveal compare``'s steps as a task graph, here in one process: each step after what it needs, a failed
run reported by its folder while the others finish, a stopped or skipped step settling what needs it, the
worker / device / Ray options checked before anything starts, and no Ray without --workers or --ray.
(On Ray: tests/test_ray_compare.py.)"""

import os
import subprocess
import sys

import pytest
import torch

from foveal.cli import main
from foveal.recipes.compare.config import load_compare_config, plan_runs
from foveal.recipes.compare.run import run_comparison
from foveal.recipes.compare.steps import plan_steps
from tiny_compare import METHODS, make_images, write_config  # tests/tiny_compare.py


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("compare-graph") / "images")


def test_each_step_comes_after_what_it_needs(images, tmp_path):
    cfg = load_compare_config(write_config(tmp_path / "c.yaml", images, seeds=(0, 1)))
    steps = plan_steps(cfg, plan_runs(cfg, tmp_path))
    names = [s.name for s in steps]
    assert names[:7] == ["ram-seed-0", "ram-seed-0-sampled", "input-salience", "ram-plus-seed-0-pretrain",
                         "ram-plus-seed-0", "ram-plus-seed-0-sampled", "input-ps-ram-seed0"]
    by_name = {s.name: s for s in steps}
    assert by_name["ps-ram-seed-1-sampled"].after == ("ps-ram-seed-1",)  # nothing waits for a sampled evaluation
    assert by_name["ps-ram-seed-1"].after == ("input-ps-ram-seed1",)
    assert by_name["input-ps-ram-seed1"].after == ("ram-seed-1",)
    assert by_name["ram-plus-seed-1"].after == ("ram-plus-seed-1-pretrain",)
    assert by_name["ram-plus-seed-1-pretrain"].after == ("input-salience",)
    for k, step in enumerate(steps):  # plan order is an order of the graph
        assert all(d in names[:k] for d in step.after), step.name


def test_a_failed_run_is_reported_by_its_folder_and_the_others_finish(images, tmp_path, capfd, one_thread):
    methods = [{"name": "RAM", "kind": "ram", "algorithm": {"no_such_setting": 1}}, METHODS[2], METHODS[3]]
    config = write_config(tmp_path / "broken.yaml", images, methods)
    out = tmp_path / "out"
    assert main(["compare", "--config", str(config), "--out", str(out), "--quiet"]) == 1
    err = capfd.readouterr().err
    folder = out / "runs" / "ram" / "seed-0"
    assert f"FAILED RAM seed 0 in {folder}:" in err and "no_such_setting" in err
    assert f"foveal compare: error: 1 step(s) failed, every other run went on: RAM seed 0 in {folder}" in err
    assert "not started: input ps-ram (seed 0): it needs RAM seed 0, which failed" in err
    assert "not started: PS-RAM seed 0: it needs input ps-ram (seed 0), which was not started" in err
    assert ("not started, as they need a failed step: RAM seed 0 (sampled evaluation, M=5), input ps-ram (seed 0), "
            "PS-RAM seed 0, PS-RAM seed 0 (sampled evaluation, M=5)") in err
    status = (out / "status" / "ram-seed-0.txt").read_text()
    assert status.startswith("failed\n") and "Traceback" in status and "no_such_setting" in status
    assert (out / "status" / "ps-ram-seed-0.txt").read_text().startswith("blocked\n")
    assert (out / "runs" / "ps-nogs" / "seed-0" / "results.json").exists()  # the run that does not need it
    assert (out / "runs" / "ps-nogs" / "seed-0" / "sampled" / "results.json").exists()
    assert not (out / "runs" / "ps-ram" / "seed-0").exists()
    assert not (out / "status" / "ps-nogs-seed-0.txt").exists()
    assert "| PS-NOGS | 1/1 |" in (out / "table.md").read_text()  # the report of what finished


def test_a_stopped_run_blocks_what_needs_it_and_leaves_its_status(images, tmp_path, one_thread):
    config = write_config(tmp_path / "c.yaml", images, [METHODS[0], METHODS[2]])
    out, lines = tmp_path / "out", []
    assert run_comparison(load_compare_config(config), out, log=lines.append, stop_after=2) == {}
    assert "not started: input ps-ram (seed 0): it needs RAM seed 0, which stopped" in lines
    assert (out / "status" / "ram-seed-0.txt").read_text().startswith("stopped\nstopped after iteration 2")
    assert (out / "status" / "input-ps-ram-seed0.txt").read_text().startswith("blocked\n")
    # The same call without the stop: the run continues and what needed it runs; old status files go.
    lines.clear()
    assert run_comparison(load_compare_config(config), out, log=lines.append) == {}
    assert any(line.startswith("finished PS-RAM seed 0: test accuracy") for line in lines)
    assert not list((out / "status").iterdir())


def test_options_are_checked_before_anything_starts(images, tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path / "c.yaml", images)
    out = tmp_path / "x"
    base = ["compare", "--config", str(config), "--out", str(out), "--quiet"]
    for extra, message in (
            (["--workers", "0"], "--workers: expected a positive number of runs at once, found 0"),
            (["--devices", "gpu0"], "--devices: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'gpu0'"),
            (["--workers", "3", "--devices", "cpu,cpu"], "--workers 3 with --devices cpu,cpu: one run at a time per "
                                                         "listed device"),
            (["--workers", "2", "--ray", "127.0.0.1:6379"], "--workers 2: sizes a local Ray instance; the cluster at "
                                                            "--ray 127.0.0.1:6379 runs as many tasks"),
            # a cluster's GPUs are its nodes', not necessarily this machine's: only the name is checked here
            (["--ray", "127.0.0.1:6379", "--devices", "gpu0"], "--devices: expected 'cpu', 'cuda' or 'cuda:N', "
                                                               "found 'gpu0'")):
        assert main([*base, *extra]) == 2
        assert f"foveal compare: error: {message}" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base, "--devices", "cuda:0,cuda:1"]) == 2
        assert "--devices: 'cuda:0' requested but CUDA is not available" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    assert main(base) == 2
    assert ("foveal compare: error: foveal compare does not run under torchrun (WORLD_SIZE=2): to spread a "
            "comparison's runs use --workers N (one machine) or --ray ADDRESS") in capsys.readouterr().err
    assert not out.exists()


def test_one_process_does_not_import_ray(images, tmp_path):
    config = write_config(tmp_path / "c.yaml", images, [METHODS[0]])
    code = ("import sys; from foveal.cli import main; "
            f"code = main(['compare', '--config', {str(config)!r}, '--out', {str(tmp_path / 'out')!r}, '--quiet', "
            "'evaluate_repeats=0']); print(code, 'ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr[-2000:]
