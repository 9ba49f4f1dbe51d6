"""foveal annotate --ray on a real two-node Ray cluster on this machine (tests/ray_cluster.py): the same bytes as
one process, a node killed mid-run changes nothing, and a chunk that fails is named while the others finish."""

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray")

from foveal.boed.annotate import AnnotateConfig, annotate  # noqa: E402
from foveal.boed.annotate_ray import ChunksFailed, annotate_on_ray  # noqa: E402
from foveal.sequences import sequence_paths  # noqa: E402
from ray_cluster import ray_cluster  # noqa: E402  (tests/ray_cluster.py)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
SRC = str(Path(__file__).resolve().parents[1] / "src")
IMAGES = 6  # per class folder, 3 classes: all 18 in the train split (positions k % 10 < 8)


@pytest.fixture(scope="module")
def cluster():
    before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # as the cluster's nodes (the driver runs in this process)
    try:
        with ray_cluster(nodes=2, cpus_per_node=1, pythonpath=(SRC,)) as c:
            yield c
    finally:
        if before is None:
            os.environ.pop("RAY_AUTH_MODE")
        else:
            os.environ["RAY_AUTH_MODE"] = before


def _write_image(path: Path, size: int, seed: int) -> None:
    from PIL import Image

    pixels = torch.randint(0, 256, (size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    Image.fromarray(pixels.numpy(), mode="L").save(path)


@pytest.fixture(scope="module")
def inputs(annotation_inputs, tmp_path_factory):
    """The tiny posterior and bank of tests/conftest.py, and a folder of 8x8 grayscale images in 3 classes
    (imagefolder: workers build the dataset from its path); the one-process result of its 18 train images."""
    photos = tmp_path_factory.mktemp("photos")
    for c in range(3):
        (photos / f"class{c}").mkdir()
        for i in range(IMAGES):
            _write_image(photos / f"class{c}" / f"{i}.png", 8, seed=10 * c + i)
    cfg = AnnotateConfig(dataset="imagefolder", split="train", data_root=str(photos),
                         data_options={"grayscale": True}, posterior=str(annotation_inputs / "posterior"),
                         bank=str(annotation_inputs / "bank.npy"), glimpse_size=4, grid_stride=2, num_glimpses=2,
                         n_completions=16, n_proposals=20, pca_components=4, chunk_size=1, seed=7, threads=1,
                         keep_maps=True)
    reference = annotate(cfg, tmp_path_factory.mktemp("one-process") / "out")
    return cfg, photos, read(reference)


def read(prefix):
    """The result as a comparison sees it: its header without the timing, and its tensors' bytes."""
    json_path, st_path = sequence_paths(prefix)
    header = json.loads(json_path.read_text())
    header["provenance"].pop("timing")
    return header, st_path.read_bytes()


def test_two_nodes_give_the_one_process_result(cluster, inputs, tmp_path):
    cfg, _, reference = inputs
    lines = []
    path = annotate_on_ray(cfg, tmp_path / "out", address=cluster.address, log=lines.append)
    assert path == tmp_path / "out" / "sequences" and read(path) == reference
    finished = [line for line in lines if line.startswith("finished chunk ")]
    assert len(finished) == 18 and any(" (2 CPUs, 2 node(s))" in line for line in lines)
    assert finished[-1].endswith("images/min so far") and "; 18/18 images, " in finished[-1]
    # rerun: every part is there, nothing is computed or sent to Ray
    lines.clear()
    assert annotate_on_ray(cfg, tmp_path / "out", address=cluster.address, log=lines.append) == path
    assert lines == [] and read(path) == reference


def _chunks_running_on(node) -> list[str]:
    """The chunk tasks a node's workers run now: processes titled ``ray::chunk-<k>`` (Ray names a worker by
    its task) whose parent, the node's raylet, is in the node's process group."""
    def stat(pid):
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2:].split()  # state, ppid, pgrp, ...

    running = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            if entry.name.isdigit() and title.startswith("ray::chunk-"):
                raylet = stat(entry.name)[1]
                if int(stat(raylet)[2]) == node.pid:
                    running.append(title)
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return running


def test_a_node_killed_mid_run_changes_nothing(cluster, inputs, tmp_path):
    cfg, _, reference = inputs
    lines, killed = [], []
    node = cluster.nodes[-1]
    stop = threading.Event()

    def watch():  # kill the second node the first time it is seen running a chunk
        while not stop.is_set():
            running = _chunks_running_on(node)
            if running:
                done = len([x for x in list(lines) if x.startswith("finished chunk ")])
                cluster.kill(node)
                killed.append((running, done))
                return
            time.sleep(0.002)

    # A watcher thread, not the driver's progress lines: a chunk on this tiny problem takes milliseconds, so
    # the node was rarely busy at the instant a line was printed (CI once saw it idle at every one of them).
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        path = annotate_on_ray(cfg, tmp_path / "out", address=cluster.address, log=lines.append)
        stop.set()
        watcher.join()
        assert killed and node.poll() is not None, lines  # it died in the middle of a chunk ...
        running, done = killed[0]
        assert running and done < 18  # ... with chunks left to do
        assert read(path) == reference
        assert len([x for x in lines if x.startswith("finished chunk ")]) == 18  # each chunk reported once
    finally:
        stop.set()
        cluster.nodes.remove(node)
        cluster.add_node(1)
        cluster.wait_for(2)


def test_a_failing_chunk_is_named_the_others_finish_and_a_rerun_continues(cluster, inputs, tmp_path, capsys):
    from foveal.cli import main

    cfg, photos, reference = inputs
    bad = photos / "class1" / "3.png"  # image 6 + 3 = 9 (items in class, then file order): chunk 9
    _write_image(bad, 9, seed=0)  # a 9x9 image among 8x8 ones: reading it raises
    out = tmp_path / "out"
    flags = ["annotate", "--dataset", "imagefolder", "--split", "train", "--data-root", str(photos),
             "--option", "grayscale=true", "--posterior", cfg.posterior, "--bank", cfg.bank, "--glimpse-size", "4",
             "--grid-stride", "2", "--num-glimpses", "2", "--completions", "16", "--proposals", "20",
             "--pca-components", "4", "--chunk-size", "1", "--seed", "7", "--threads", "1", "--keep-maps",
             "--out", str(out), "--ray", cluster.address]
    try:
        assert main(flags) == 1
        err = capsys.readouterr().err
        assert "FAILED chunk 9 (images 9..9):" in err and "3.png" in err  # the chunk, the error, its traceback
        assert "Traceback" in err
        assert "1 of 18 chunk(s) failed: chunk 9 (images 9..9): " in err
        assert "run the same command again to compute the failed ones" in err
        parts = sorted((out / "parts" / "shard-0-of-1").glob("*.json"))
        assert len(parts) == 17 and not (out / "sequences.json").exists()  # every other chunk finished
        stamps = {p: p.stat().st_mtime_ns for p in parts}
    finally:
        _write_image(bad, 8, seed=13)  # as it was
    assert main(flags) == 0
    err = capsys.readouterr().err
    assert "1 of 18 chunk(s) to compute" in err and err.count("finished chunk ") == 1
    assert "finished chunk 9 (images 9..9)" in err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the others were not computed again
    assert read(out / "sequences") == reference
