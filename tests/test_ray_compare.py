"""``foveal compare --ray ADDRESS`` on a real Ray cluster on this machine (a head and a second node, one CPU
each, started as ``ray start`` processes as on a Slurm allocation; :mod:`ray_cluster`): the one-process
results, each step after what it needs and once; the second node killed while it runs a step, and the work
still finishing with the same results; a failed run reported by its folder while the others finish."""

import os
import time
from pathlib import Path

import pytest

from foveal.cli import main
from ray_cluster import ray_cluster, session  # tests/ray_cluster.py
from tiny_compare import METHODS, make_images, runs, same_as, write_config  # tests/tiny_compare.py

pytest.importorskip("ray")
SRC = str(Path(__file__).resolve().parents[1] / "src")
LONG = ["train.val_every=10"]  # with iterations=120: a run lasts seconds, long enough to be killed in


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(nodes=2, cpus_per_node=1, pythonpath=(SRC,)) as c:
        yield c


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-compare")
    images = make_images(root / "images")
    return root, write_config(root / "compare.yaml", images), write_config(root / "long.yaml", images,
                                                                            [METHODS[0], METHODS[3]], (0, 1), 120)


@pytest.fixture(scope="module")
def serial(toy, one_thread):
    """Both comparisons trained one run after the other, here, with one torch thread (as a Ray task has)."""
    root, config, long = toy
    assert main(["compare", "--config", str(config), "--out", str(root / "serial"), "--quiet"]) == 0
    assert main(["compare", "--config", str(long), "--out", str(root / "serial-long"), "--quiet", *LONG]) == 0
    return root / "serial", root / "serial-long"


def test_a_two_node_cluster_gives_the_one_process_results(toy, serial, cluster, capfd):
    root, config, _ = toy
    out = root / "cluster"
    capfd.readouterr()
    assert main(["compare", "--config", str(config), "--out", str(out), "--ray", cluster.address, "--quiet"]) == 0
    err = capfd.readouterr().err
    assert f"task(s) on the Ray cluster at {cluster.address} (2 CPUs, 2 node(s))" in err
    same_as(out, serial[0])
    lines = err.splitlines()

    def at(text: str) -> int:
        found = [i for i, line in enumerate(lines) if line.startswith(text)]
        assert len(found) == 1, (text, found)  # once: no input is made twice, no run trained twice
        return found[0]

    # one line per finished step, in an order the graph allows
    assert at("finished RAM seed 0: test accuracy") < at("finished input ps-ram (seed 0)") \
        < at("finished PS-RAM seed 0: test accuracy")
    assert at("finished input salience") < at("finished RAM+ seed 0 (pretraining)") < at("finished RAM+ seed 0: ")
    assert at("finished PS-NOGS seed 0 (sampled evaluation, M=5)") > at("finished PS-NOGS seed 0: ")
    assert len([line for line in lines if line.startswith("finished ")]) == 11  # 5 runs, 4 sampled, 2 inputs
    ram, seqs = out / "runs" / "ram" / "seed-0", out / "inputs" / "ps-ram-seed0-n8.json"
    assert (ram / "results.json").stat().st_mtime_ns <= seqs.stat().st_mtime_ns \
        <= (out / "runs" / "ps-ram" / "seed-0" / "config.yaml").stat().st_mtime_ns
    assert "| PS-NOGS | 1/1 |" in (out / "table.md").read_text()
    # Again: nothing is left, so no task and no Ray.
    assert main(["compare", "--config", str(config), "--out", str(out), "--ray", cluster.address, "--quiet"]) == 0
    err = capfd.readouterr().err
    assert err.count("finished already") == len(runs()) and "task(s) on" not in err


def test_a_failed_run_is_reported_by_its_folder_and_the_others_finish(toy, cluster, tmp_path, capfd):
    root, _, _ = toy
    methods = [{"name": "RAM", "kind": "ram", "algorithm": {"no_such_setting": 1}}, METHODS[2], METHODS[3]]
    config = write_config(tmp_path / "broken.yaml", root / "images", methods)
    out = tmp_path / "out"
    assert main(["compare", "--config", str(config), "--out", str(out), "--ray", cluster.address, "--quiet"]) == 1
    err = capfd.readouterr().err
    folder = out / "runs" / "ram" / "seed-0"
    assert f"FAILED RAM seed 0 in {folder}:" in err and "no_such_setting" in err
    assert f"foveal compare: error: 1 step(s) failed, every other run went on: RAM seed 0 in {folder}" in err
    assert "not started: input ps-ram (seed 0): it needs RAM seed 0, which failed" in err
    blocked = err.partition("not started, as they need a failed step: ")[2].partition(". Fix the cause")[0]
    names = ["RAM seed 0 (sampled evaluation, M=5)", "input ps-ram (seed 0)", "PS-RAM seed 0",
             "PS-RAM seed 0 (sampled evaluation, M=5)"]  # in the order they ended
    assert all(name in blocked.split(", ") or name in blocked for name in names) and blocked.count("seed 0") == 4
    status = (out / "status" / "ram-seed-0.txt").read_text()
    assert status.startswith("failed\n") and "Traceback" in status and "no_such_setting" in status
    assert (out / "runs" / "ps-nogs" / "seed-0" / "sampled" / "results.json").exists()  # what does not need it
    assert not (out / "runs" / "ps-ram" / "seed-0").exists()
    assert "| PS-NOGS | 1/1 |" in (out / "table.md").read_text()


def _task_on(node) -> list[str]:
    """The steps Ray workers of ``node`` (in its session) are running: a busy worker's title is ``ray::<task>``,
    and compare names each task after its step."""
    steps = []
    for pid in session(node.pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if title.startswith("ray::") and "-seed-" in title:
            steps.append(title.removeprefix("ray::"))
    return steps


def test_the_second_node_killed_mid_run_and_the_work_still_finishes_alike(toy, serial, cluster, capfd):
    """Last in this module: the cluster has one node left."""
    import threading

    root, _, long = toy
    out = root / "killed"
    node, killed = cluster.nodes[0], []

    def kill_when_busy() -> None:  # once the node trains a run past its first checkpoint
        while not over.is_set():
            for step in _task_on(node):
                method, _, seed = step.partition("-seed-")
                run = out / "runs" / method / f"seed-{seed}"
                if seed.isdigit() and (run / "checkpoints" / "last.json").exists() and not (run / "results.json").exists():
                    cluster.kill(node)
                    killed.append(({"ram": "RAM", "ps-nogs": "PS-NOGS"}[method], seed))
                    return
            time.sleep(0.05)

    over = threading.Event()
    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        code = main(["compare", "--config", str(long), "--out", str(out), "--ray", cluster.address, "--quiet", *LONG])
    finally:
        over.set()
        killer.join()
    err = capfd.readouterr().err
    assert killed, "the second node never trained a run past its first checkpoint"
    assert code == 0, err[-3000:]
    assert node.poll() is not None and session(node.pid) == []  # the node and its workers are gone
    # (Ray's head may list the node as alive a while longer: its health checks take tens of seconds)
    same_as(out, serial[1], (0, 1), (("ram", ""), ("ps-nogs", "")))  # the killed run too, continued from its last checkpoint
    method, seed = killed[0]
    assert err.count(f"finished {method} seed {seed}: test accuracy") == 1
    assert "FAILED" not in err and "| RAM | 2/2 |" in (out / "table.md").read_text()
