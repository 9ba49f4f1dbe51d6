"""A run folder as a user meets it: failed starts leave it byte for byte as it was, Ctrl-C says how to
resume (and that command resumes), and one process writes it at a time (an OS lock that dies with it)."""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import foveal.cli.common as common
from foveal.cli import main
from foveal.retina import LocationGrid
from foveal.runfolder import LOCK_NAME
from foveal.sequences import GlimpseSequences

from test_errors import TINY, refused, train

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path):
    """Every path under ``folder`` and every file's bytes; None if it does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "dir") for p in sorted(folder.rglob("*"))}


def image_folder(root: Path) -> Path:
    """Two classes of 12 grey 16x16 PNGs (the one-folder layout)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate("ab"):
        (root / name).mkdir(parents=True)
        for k in range(12):
            pixels = (rng.random((16, 16)) * 100 + 100 * c).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{k:03d}.png")
    return root


IMAGEFOLDER_RUN = ["model.glimpse_size=4", "model.num_scales=1", "train.batch_size=20"]


@pytest.mark.parametrize("before", ["missing", "empty", "finished"])
def test_a_corrupt_training_image_leaves_the_folder_as_it_was(tmp_path, capsys, before):
    images = image_folder(tmp_path / "images")
    run = tmp_path / "runs" / "r"
    if before == "empty":
        run.mkdir(parents=True)
    if before == "finished":  # a finished run, continued for longer on a folder that has since been damaged
        assert main(train(run, f"data.root={images}", "data.name=imagefolder", *IMAGEFOLDER_RUN,
                          "train.lr_schedule=constant")) == 0
        capsys.readouterr()
    (images / "a" / "001.png").write_bytes(b"this is not a png")  # not 000.png, which fixes the image size
    was = snapshot(run)
    line = refused(capsys, train(run, f"data.root={images}", "data.name=imagefolder", *IMAGEFOLDER_RUN,
                                 "train.lr_schedule=constant", "train.iterations=4"), "001.png")
    assert snapshot(run) == was, line
    assert (tmp_path / "runs").exists() == (before != "missing")  # no parent folder made either


def test_an_off_grid_sequence_file_leaves_the_folder_as_it_was_and_names_the_record(tmp_path, capsys):
    corners = torch.tensor([[[0, 0], [4, 4]], [[8, 8], [5, 3]]])  # record 1, glimpse 2: off the stride-4 grid
    GlimpseSequences("mnist5k", "train", (28, 28), 4, torch.tensor([0, 1]), corners,
                     grid=LocationGrid.from_stride((28, 28), 4, 1), method="random").save(tmp_path / "seqs")
    run = tmp_path / "r"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    was = snapshot(run)
    refused(capsys, train(run, "model.name=ram-grid", "model.glimpse_size=4", "model.grid_stride=4",
                          "model.num_scales=1", "algorithm.name=partial-supervision",
                          f"algorithm.sequences={tmp_path / 'seqs'}"),
            "seqs.json", "record 1 (image index 1), glimpse 1", "[5, 3]")
    assert snapshot(run) == was


def test_a_corrupt_last_checkpoint_is_named_with_a_way_forward_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(train(run, "train.lr_schedule=constant")) == 0
    capsys.readouterr()
    last = run / "checkpoints" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:100])
    was = snapshot(run)
    line = refused(capsys, train(run, "train.lr_schedule=constant", "train.iterations=4"),
                   "last.safetensors", "best.* (iteration 2) is intact", "remove last.json and last.safetensors")
    assert snapshot(run) == was, line


# ----------------------------------------------------------------------------- Ctrl-C


def interrupt_at(monkeypatch, iteration):
    """Make the progress bar raise KeyboardInterrupt at ``iteration`` (as Ctrl-C during training)."""

    def bar(quiet, *args, **kwargs):
        def update(done, total, logs=None, label=None):
            if done == iteration:
                raise KeyboardInterrupt

        return update, lambda: None

    monkeypatch.setattr(common, "progress_bar", bar)


def test_the_interrupt_message_prints_a_command_that_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", "demo", *TINY, "train.iterations=6"]  # no --run-dir: a timestamped folder
    interrupt_at(monkeypatch, 3)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "iteration 2) is intact; to resume, run: foveal train --run-dir runs/demo-" in err, err
    command = shlex.split(err.strip().splitlines()[-1].split("to resume, run: ", 1)[1])
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert command[0] == "foveal" and main(command[1:]) == 0
    out = capsys.readouterr()
    assert "resuming from iteration 2" in out.err, out.err
    assert len(list((tmp_path / "runs").iterdir())) == 1  # the same folder, not a new one


def test_an_interrupt_before_the_first_checkpoint_does_not_promise_a_resume(tmp_path, capsys, monkeypatch):
    run = tmp_path / "r"
    interrupt_at(monkeypatch, 1)  # checkpoints come at iteration 2
    assert main(train(run, "train.iterations=6")) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first checkpoint" in err and "to resume, run" not in err, err


# ----------------------------------------------------------------------------- one writer


def start_training(run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-m", "foveal", *train(run, *extra)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_a_second_writer_is_refused_while_the_first_runs_and_accepted_once_it_is_killed(tmp_path):
    run = tmp_path / "r"
    first = start_training(run, "train.iterations=100000", "train.val_every=100000")
    try:
        deadline = time.time() + 120
        while not (run / LOCK_NAME).exists() or "pid" not in (run / LOCK_NAME).read_text():
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.2)
        second = start_training(run, "train.iterations=100000", "train.val_every=100000")
        try:
            _, err = second.communicate(timeout=120)
        finally:
            if second.poll() is None:  # not refused: training side by side
                os.killpg(second.pid, signal.SIGKILL)
                second.communicate()
        assert second.returncode == 2, err
        assert f"pid {first.pid}" in err and "in use by another foveal process" in err, err
        assert len(err.strip().splitlines()) == 1, err
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # no clean-up code runs: the OS releases the lock
        first.communicate()
    third = start_training(run)
    _, err = third.communicate(timeout=300)
    assert third.returncode == 0, err


def test_an_undone_start_keeps_what_another_process_made_beside_it(tmp_path):
    from foveal.runfolder import FolderStart

    # a compare worker's run runs/ram/seed-0 fails to start while another worker has begun runs/ps-nogs/seed-0
    # in the runs/ folder the first start made: only the failed run's own folder goes
    start = FolderStart(tmp_path / "out" / "runs" / "ram" / "seed-0")
    (tmp_path / "out" / "runs" / "ram" / "seed-0").mkdir(parents=True)
    (tmp_path / "out" / "runs" / "ram" / "seed-0" / "config.yaml").write_text("x")
    other = tmp_path / "out" / "runs" / "ps-nogs" / "seed-0"
    other.mkdir(parents=True)
    (other / "config.yaml").write_text("mine")
    start.undo()
    assert (other / "config.yaml").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == ["ps-nogs"]  # the empty ram/ went too
    # alone, a failed start leaves nothing, parents included
    alone = FolderStart(tmp_path / "new" / "a" / "b")
    (tmp_path / "new" / "a" / "b").mkdir(parents=True)
    alone.undo()
    assert not (tmp_path / "new").exists()
