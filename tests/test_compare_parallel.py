"""``foveal compare`` side by side: two worker processes give the serial run's results, in the order the
runs need (PS-RAM after its RAM run, RAM+ after its pretraining, each input made once), resume what
another call left, report a failed run by its folder and keep going; torchrun ranks share the runs.

The data is a tiny image folder (the built-in ``imagefolder`` dataset), so that spawned workers and
torchrun ranks, which import nothing from this file, read it too.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from foveal.cli import main
from foveal.recipes.compare.config import load_compare_config, plan_runs
from foveal.recipes.compare.steps import assign, plan_steps

SIZE = 16
METHODS = [{"name": "RAM", "kind": "ram"}, {"name": "RAM+", "kind": "ram+"},
           {"name": "PS-RAM", "kind": "ps", "sequences": "ps-ram"}, {"name": "PS-NOGS", "kind": "ps", "sequences": "nogs"}]
RUNS = [f"{m}/seed-{s}{stage}" for s in (0, 1) for m, stage in (("ram", ""), ("ram-plus", "/pretrain"), ("ram-plus", ""),
                                                                    ("ps-ram", ""), ("ps-nogs", ""))]


def make_images(root: Path) -> None:
    """4 classes x 20 grey 16x16 images: a bright 4x4 square in the quadrant of the class."""
    rng = np.random.default_rng(0)
    for label in range(4):
        (root / f"q{label}").mkdir(parents=True)
        for i in range(20):
            image = rng.integers(0, 25, (SIZE, SIZE), dtype=np.uint8)
            r, c = divmod(label, 2)
            dr, dc = rng.integers(0, 4, 2)
            image[8 * r + dr:8 * r + dr + 4, 8 * c + dc:8 * c + dc + 4] = 255
            Image.fromarray(image, mode="L").save(root / f"q{label}" / f"{i:02d}.png")


def write_config(path: Path, images: Path, methods=METHODS, seeds=(0, 1)) -> Path:
    run = {"data": {"name": "imagefolder", "root": str(images), "grayscale": True},
           "model": {"name": "ram-grid", "glimpse_size": 4, "grid_stride": 4, "hidden_size": 16, "glimpse_hidden": 8,
                     "location_hidden": 8, "feature_size": 16},
           "algorithm": {"name": "reinforce", "num_glimpses": 2},
           "train": {"iterations": 6, "batch_size": 8, "lr": 0.01, "val_every": 3, "tensorboard": False},
           "evaluate": {"examples": 4, "figures": False, "batch_size": 16}}
    config = {"run": run, "seeds": list(seeds), "methods": methods,
              "inputs": {"stand_ins": True, "num_sequences": 8, "pretrain_iterations": 3}}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare-parallel")
    make_images(root / "images")
    return root, write_config(root / "compare.yaml", root / "images")


@pytest.fixture(scope="module")
def serial(toy, one_thread):
    """The comparison trained one run after the other, here, with one torch thread (as a worker has)."""
    root, config = toy
    assert main(["compare", "--config", str(config), "--out", str(root / "serial"), "--quiet"]) == 0
    return root / "serial"


def numbers(out: Path, run: str) -> dict:
    """A run's test numbers and its training curves (metrics.csv holds no timings)."""
    results = json.loads((out / "runs" / run / "results.json").read_text())
    return {k: results[k] for k in ("test_accuracy", "test_ce", "accuracy_per_glimpse", "num_images")} | {
        "best_validation": results["training"]["best_validation"],
        "metrics.csv": (out / "runs" / run / "metrics.csv").read_text()}


def sampled(out: Path, run: str) -> dict:
    """A run's sampled test numbers (``sampled/results.json``)."""
    results = json.loads((out / "runs" / run / "sampled" / "results.json").read_text())
    return {k: results[k] for k in ("test_accuracy", "test_ce", "accuracy_per_glimpse", "repeats", "eval_policy")}


def test_two_workers_give_the_serial_results_in_dependency_order(toy, serial, capfd, monkeypatch):
    from foveal.recipes.compare.run import train_task

    root, config = toy
    out = root / "two"
    # A run killed on another device: RAM seed 1 stopped after 3 iterations, on an explicit cpu.
    cfg = load_compare_config(config)
    killed = next(t for t in plan_runs(cfg, out) if t.method == "RAM" and t.seed == 1)
    killed.config["train"]["device"] = "cpu"
    assert train_task(killed, stop_after=3) is None and (killed.run_dir / "checkpoints" / "last.json").exists()
    capfd.readouterr()

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a worker has one thread whatever this process has
    assert main(["compare", "--config", str(config), "--out", str(out), "--workers", "2", "--quiet"]) == 0
    err = capfd.readouterr().err
    for k in (0, 1):
        assert f"[worker {k}] started: pid " in err
    assert err.count("1 torch thread(s), OMP_NUM_THREADS=1") == 2
    for run in RUNS:  # every run finished, with the numbers of the serial run (every run is seeded)
        assert numbers(out, run) == numbers(serial, run), run
        if not run.endswith("pretrain"):  # and its sampled evaluation too
            assert sampled(out, run) == sampled(serial, run), run
    assert "(worker 0)" in err and "(worker 1)" in err
    lines = err.splitlines()

    def at(text: str) -> int:
        found = [i for i, line in enumerate(lines) if text in line]
        assert len(found) == 1, (text, found)  # once: no input is made twice, no run trained twice
        return found[0]

    for s in (0, 1):
        assert at(f"finished RAM seed {s}:") < at(f"making input ps-ram (seed {s})") < at(f"finished input ps-ram (seed {s})") \
            < at(f"training PS-RAM seed {s} in") < at(f"finished PS-RAM seed {s}:")
        assert at(f"finished RAM+ seed {s} (pretraining)") < at(f"training RAM+ seed {s} in")
        assert at("finished input salience") < at(f"training RAM+ seed {s} (pretraining) in")
        # the files agree: PS-RAM's sequences come from the finished RAM run, before PS-RAM started
        ram = out / "runs" / "ram" / f"seed-{s}"
        seqs = json.loads((out / "inputs" / f"ps-ram-seed{s}-n8.json").read_text())
        assert seqs["provenance"]["source"] == str(ram / "checkpoints" / "best")
        assert (ram / "results.json").stat().st_mtime_ns <= (out / "inputs" / f"ps-ram-seed{s}-n8.json").stat().st_mtime_ns \
            <= (out / "runs" / "ps-ram" / f"seed-{s}" / "config.yaml").stat().st_mtime_ns
    assert sum("stand-in: random sequences in place of NOGS" in line for line in lines) == 1  # here, before the workers
    assert "device" not in yaml.safe_load((killed.run_dir / "config.yaml").read_text())["train"]  # it moved on
    # Again with three workers: nothing left to train.
    assert main(["compare", "--config", str(config), "--out", str(out), "--workers", "3", "--quiet"]) == 0
    err = capfd.readouterr().err
    assert err.count("finished already") == len(RUNS) and not any(line.startswith(("training", "making"))
                                                                  for line in err.splitlines())


@pytest.mark.parametrize("workers", [["--workers", "1"], ["--devices", "cpu,cpu"]], ids=["here", "two-devices"])
def test_a_failed_run_is_reported_by_its_folder_and_the_others_finish(toy, tmp_path, capfd, workers):
    root, _ = toy
    methods = [{"name": "RAM", "kind": "ram", "algorithm": {"no_such_setting": 1}}, METHODS[2], METHODS[3]]
    config = write_config(tmp_path / "broken.yaml", root / "images", methods, seeds=(0,))
    out = tmp_path / "out"
    assert main(["compare", "--config", str(config), "--out", str(out), *workers, "--quiet"]) == 1
    err = capfd.readouterr().err
    if "--devices" in workers:  # a worker per device, which its runs train on
        assert err.count(", device cpu") == 2
        assert yaml.safe_load((out / "runs" / "ps-nogs" / "seed-0" / "config.yaml").read_text())["train"]["device"] == "cpu"
    folder = out / "runs" / "ram" / "seed-0"
    assert f"FAILED RAM seed 0 in {folder}:" in err and "no_such_setting" in err
    assert f"foveal compare: error: 1 step(s) failed, every other run went on: RAM seed 0 in {folder}" in err
    assert "not started: input ps-ram (seed 0): it needs RAM seed 0, which failed" in err
    assert ("not started, as they need a failed step: RAM seed 0 (sampled evaluation, M=5), input ps-ram (seed 0), "
            "PS-RAM seed 0, PS-RAM seed 0 (sampled evaluation, M=5)") in err
    status = (out / "status" / "ram-seed-0.txt").read_text()
    assert status.startswith("failed\n") and "Traceback" in status
    assert (out / "runs" / "ps-nogs" / "seed-0" / "results.json").exists()  # the run that does not need it
    assert not (out / "runs" / "ps-ram" / "seed-0").exists()
    assert "| PS-NOGS | 1/1 |" in (out / "table.md").read_text()  # the report of what finished


def test_worker_and_device_options_are_checked_before_anything_starts(toy, tmp_path, capsys, monkeypatch):
    _, config = toy
    out = tmp_path / "x"
    base = ["compare", "--config", str(config), "--out", str(out), "--quiet"]
    for extra, message in ((["--workers", "0"], "--workers: expected a positive number of worker processes, found 0"),
                           (["--devices", "gpu0"], "--devices: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'gpu0'"),
                           (["--workers", "3", "--devices", "cpu,cpu"], "--workers 3 with --devices cpu,cpu: one worker per "
                                                                       "device")):
        assert main([*base, *extra]) == 2
        assert f"foveal compare: error: {message}" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base, "--devices", "cuda:0,cuda:1"]) == 2
        assert "--devices: 'cuda:0' requested but CUDA is not available" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: each rank is one worker
    assert main([*base, "--workers", "2"]) == 2
    assert "--workers: under torchrun every rank is one worker" in capsys.readouterr().err
    assert not out.exists()


def test_assignment_to_ranks_respects_the_graph_and_shares_the_work(toy, tmp_path):
    _, config = toy
    cfg = load_compare_config(config)
    steps = plan_steps(cfg, plan_runs(cfg, tmp_path))
    names = [s.name for s in steps]
    assert names[:7] == ["ram-seed-0", "ram-seed-0-sampled", "input-salience", "ram-plus-seed-0-pretrain",
                         "ram-plus-seed-0", "ram-plus-seed-0-sampled", "input-ps-ram-seed0"]
    by_name = {s.name: s for s in steps}
    assert by_name["ps-ram-seed-1-sampled"].after == ("ps-ram-seed-1",)  # nothing waits for a sampled evaluation
    assert by_name["ps-ram-seed-1"].after == ("input-ps-ram-seed1",)
    assert by_name["input-ps-ram-seed1"].after == ("ram-seed-1",)
    assert by_name["ram-plus-seed-1"].after == ("ram-plus-seed-1-pretrain",)
    for world in (1, 2, 3):
        order, rank = assign(steps, world)
        assert (order, rank) == assign(steps, world)  # every rank computes the same
        assert sorted(order) == sorted(names) and set(rank.values()) == set(range(world))
        for step in steps:
            assert all(order.index(d) < order.index(step.name) for d in step.after)
    order, rank = assign(steps, 2)
    work = [sum(s.cost for s in steps if rank[s.name] == r) for r in (0, 1)]
    assert abs(work[0] - work[1]) <= 6  # the cost of one run
    # Finished steps cost nothing: the rest is shared again.
    done = frozenset(n for n in names if n.endswith("seed-0") or "seed0" in n or n.endswith("seed-0-pretrain"))
    _, rank = assign(steps, 2, done)
    left = [sum(s.cost for s in steps if rank[s.name] == r and s.name not in done) for r in (0, 1)]
    assert abs(left[0] - left[1]) <= 6


@pytest.mark.slow
def test_torchrun_ranks_share_the_runs(toy, serial, tmp_path):
    _, config = toy
    out = tmp_path / "ranks"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "foveal",
               "compare", "--config", str(config), "--out", str(out), "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for run in RUNS:
        assert numbers(out, run) == numbers(serial, run), run
    assert "[rank 0] training" in done.stderr and "[rank 1] training" in done.stderr
    assert "[rank 1] its share of the runs is done; rank 0 writes the report" in done.stderr
    assert "| PS-NOGS | 2/2 |" in (out / "table.md").read_text()
    for s in (0, 1):
        ram, seqs = out / "runs" / "ram" / f"seed-{s}", out / "inputs" / f"ps-ram-seed{s}-n8.json"
        assert (ram / "results.json").stat().st_mtime_ns <= seqs.stat().st_mtime_ns \
            <= (out / "runs" / "ps-ram" / f"seed-{s}" / "config.yaml").stat().st_mtime_ns
    assert done.stderr.count("making input ps-ram (seed 0)") == 1 and done.stderr.count("making input salience") == 1


def _group(pgid: int) -> list[int]:
    """The processes still in a process group."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_the_same_command_resumes(toy, tmp_path, one_thread):
    root, _ = toy
    config = write_config(tmp_path / "long.yaml", root / "images", [METHODS[0]])
    args = ["compare", "--config", str(config), "--quiet", "train.iterations=150", "train.val_every=10"]
    out = tmp_path / "out"
    lasts = [out / "runs" / "ram" / f"seed-{s}" / "checkpoints" / "last.json" for s in (0, 1)]
    worker = subprocess.Popen([sys.executable, "-m", "foveal", *args, "--out", str(out), "--workers", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"},
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not all(p.exists() for p in lasts) and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGINT)  # Ctrl-C at a terminal: the whole group
    err = worker.communicate(timeout=120)[1]
    assert worker.returncode == 130 and "interrupted: the last checkpoint is intact" in err, err[-2000:]
    deadline = time.monotonic() + 10
    while _group(worker.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group(worker.pid) == []  # no worker left behind
    assert not any((p.parent.parent / "results.json").exists() for p in lasts)
    # The same command, here in one process, continues both runs; they end as runs never interrupted.
    assert main([*args, "--out", str(out)]) == 0
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    for s in (0, 1):
        assert numbers(out, f"ram/seed-{s}") == numbers(tmp_path / "straight", f"ram/seed-{s}")
