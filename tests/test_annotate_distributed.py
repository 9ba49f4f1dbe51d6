"""The annotator across processes: workers from torchrun's / Slurm's environment, chunks claimed on a shared
folder (dead workers' claims taken over, late workers welcome), shared files prepared once, one merge."""

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from foveal.boed.annotate import AnnotateConfig, annotate, merge_chunks, merge_folder
from foveal.boed.bank import ImageBank
from foveal.boed.completion import BankSampler
from foveal.boed.workers import HOST, ClaimBoard, Worker, worker_from_environment
from foveal.checkpoint import save_checkpoint
from foveal.models import create_model, model_spec
from foveal.sequences import GlimpseSequences, sequence_paths
from toys import ToySplit, toy_config  # tests/toys.py

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
REPO = Path(__file__).resolve().parents[1]
annotate_module = importlib.import_module("foveal.boed.annotate")  # foveal.boed.annotate is also the function


# ------------------------------------------------------------------------------------ environment
def test_worker_from_torchrun_and_slurm_environments():
    torchrun = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}  # torchrun inside srun: torchrun's ranks count nodes
    assert worker_from_environment(torchrun) == Worker(5, 8, 1, "torchrun")
    array = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert worker_from_environment(array) == Worker(2, 4, None, "slurm-array")
    stepped = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "3",
               "SLURM_ARRAY_TASK_STEP": "2"}  # --array=0-4:2
    assert worker_from_environment(stepped) == Worker(2, 3, None, "slurm-array")
    srun = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}
    assert worker_from_environment(srun) == Worker(3, 4, 1, "srun")
    both = {**array, "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}  # array element 2 of 4, task 1 of 2 in it
    assert worker_from_environment(both) == Worker(5, 8, None, "slurm-array+srun")

    cases = [({}, "found none of them"),
             ({"RANK": "0"}, "torchrun's environment is incomplete: found RANK, expected WORLD_SIZE"),
             ({"RANK": "2", "WORLD_SIZE": "2"}, "expected 0 <= rank < number of workers, found RANK=2, WORLD_SIZE=2"),
             ({"RANK": "x", "WORLD_SIZE": "2"}, "expected integers in torchrun's environment, found RANK='x'"),
             ({"SLURM_ARRAY_TASK_ID": "3"}, "Slurm job array's environment is incomplete"),
             ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"},
              "without gaps"),  # --array=1,5,7
             ({"SLURM_PROCID": "4", "SLURM_NTASKS": "4"}, "found SLURM_PROCID=4, SLURM_NTASKS=4")]
    for env, message in cases:
        with pytest.raises(ValueError, match=message):
            worker_from_environment(env)


def test_cli_shard_auto_without_a_launcher_is_one_line_error(monkeypatch, capsys):
    from foveal.cli import main

    for name in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert main(["annotate", "--dataset", "mnist5k", "--posterior", "p", "--bank", "b.npy", "--shard", "auto"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shard auto: expected torchrun's RANK and WORLD_SIZE" in err


# ------------------------------------------------------------------------------------------ claims
def test_claims_stale_after_timeout_or_when_the_holder_died_here(tmp_path):
    board = ClaimBoard(tmp_path, timeout=60)
    claim = board.try_claim("part-00000")
    assert claim is not None and board.try_claim("part-00000") is None  # held by a live worker (this one)
    record = json.loads((tmp_path / "part-00000.0").read_text())
    assert record["host"] == HOST and record["pid"] == os.getpid()
    claim.release()
    assert not (tmp_path / "part-00000.0").exists()

    def plant(name, **record):
        (tmp_path / name).write_text(json.dumps({"host": HOST, "pid_namespace": os.readlink("/proc/self/ns/pid"),
                                                 "time": time.time(), **record}))

    plant("part-00001.0", host="elsewhere", pid=os.getpid())  # another host, touched just now: alive
    assert board.try_claim("part-00001") is None
    old = time.time() - 61
    os.utime(tmp_path / "part-00001.0", (old, old))  # not touched for longer than the timeout: dead
    with board.try_claim("part-00001") as taken:
        assert taken.path.name == "part-00001.1"
        assert json.loads(taken.path.read_text())["took_over"]["host"] == "elsewhere"
        assert board.try_claim("part-00001") is None  # the new claim is live

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    plant("part-00002.0", pid=int(done.stdout))  # this host, a process that has exited: dead at once
    plant("part-00003.0", pid=os.getppid())  # this host, a live process
    assert board.holder("part-00002")["stale"] and not board.holder("part-00003")["stale"]
    with board.try_claim("part-00002") as taken:
        assert taken.path.name == "part-00002.1"
    assert board.try_claim("part-00003") is None


# --------------------------------------------------------------------------------- in one process
@pytest.fixture(scope="module")
def toy_files(annotation_inputs):
    root = annotation_inputs  # tests/conftest.py
    reference = annotate(claim_config(root), root / "reference", dataset=ToySplit())  # fixed share, one worker
    return root, sequence_paths(reference)[1].read_bytes()


def claim_config(root, **changes):
    return toy_config(root, **{"keep_maps": True, **changes})


def test_claiming_workers_killed_and_joining_late_give_the_unsharded_result(toy_files, tmp_path):
    root, reference = toy_files
    out = tmp_path / "claimed"
    worker = lambda i, n=2, **kw: claim_config(root, shard_mode="claim", shard_index=i, num_shards=n, chunk_size=2, **kw)
    assert annotate(worker(0), out, dataset=ToySplit(), prepare_only=True) is None
    assert annotate(worker(0), out, dataset=ToySplit(), stop_after=1) is None  # "killed" after one chunk
    assert annotate(worker(1), out, dataset=ToySplit(), stop_after=1) is None  # starts at chunk 2 of 4
    assert sorted(p.name for p in (out / "parts" / "all").iterdir()) == ["part-00000", "part-00002"]
    with pytest.raises(FileNotFoundError, match=r"found 2 missing: chunk\(s\) 1 \(images 2..3\), 3 \(images 6..7\)"):
        merge_chunks(out)
    path = annotate(worker(2, n=3, threads=1), out, dataset=ToySplit())  # a third worker, joining late, finishes
    assert path == out / "sequences" and sequence_paths(path)[1].read_bytes() == reference
    prov = GlimpseSequences.load(path).provenance
    assert prov["config"]["shard_index"] is None and prov["timing"]["images"] == 8 and prov["timing"]["hosts"] == [HOST]

    assert annotate(worker(0), out, dataset=ToySplit()) == path  # a restarted worker finds everything done
    sequence_paths(path)[0].unlink()
    assert merge_folder(out) == path and sequence_paths(path)[1].read_bytes() == reference
    with pytest.raises(ValueError, match="config.shard_mode: 'claim' vs 'round-robin'"):
        annotate(claim_config(root, chunk_size=2), out, dataset=ToySplit())  # a fixed share in a claiming folder


def test_shared_files_are_prepared_once_and_read_by_the_other_workers(toy_files, tmp_path, monkeypatch):
    root, reference = toy_files
    out = tmp_path / "prepared"
    assert annotate(claim_config(root, shard_mode="claim"), out, dataset=ToySplit(), prepare_only=True) is None
    first = json.loads((out / "first-glimpse.json").read_text())
    assert [p.name for p in (out / "pca").iterdir()] == [f"cell-{first['cell']:05d}.safetensors"]
    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("first-glimpse.*"), *(out / "pca").iterdir()]}

    def no_first_glimpse(*args, **kwargs):
        raise AssertionError("the first glimpse was recomputed")

    fitted = []
    original_fit = BankSampler.fit_cell_pca
    monkeypatch.setattr(annotate_module, "first_glimpse", no_first_glimpse)
    monkeypatch.setattr(BankSampler, "fit_cell_pca", lambda self, cell: fitted.append(cell) or original_fit(self, cell))
    path = annotate(claim_config(root, shard_mode="claim", share_pca_cells=True), out, dataset=ToySplit())
    assert sequence_paths(path)[1].read_bytes() == reference
    assert first["cell"] not in fitted and len(fitted) == len(set(fitted))  # read from pca/, never refitted
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert len(list((out / "pca").iterdir())) == 1 + len(fitted)  # share_pca_cells: every fitted cell published


def test_a_live_claim_is_waited_for_and_taken_over_once_stale(toy_files, tmp_path):
    root, reference = toy_files
    out = tmp_path / "stale"
    cfg = claim_config(root, shard_mode="claim", claim_timeout=1.0)
    (out / "claims").mkdir(parents=True)
    (out / "claims" / "part-00001.0").write_text(json.dumps({"host": "gone-node", "pid": 1, "time": time.time()}))
    tic = time.perf_counter()
    path = annotate(cfg, out, dataset=ToySplit())  # chunks 0 and 2 at once; chunk 1 once the claim is 1 s old
    assert time.perf_counter() - tic > 0.5 and sequence_paths(path)[1].read_bytes() == reference
    assert sorted(p.name for p in (out / "claims").iterdir()) == ["part-00001.0"]  # the dead worker's, left as found


# ------------------------------------------------------------------------------ separate processes
@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("processes")
    g = torch.Generator().manual_seed(4)
    ImageBank.from_generator(lambda b: torch.rand(b, 1, 28, 28, generator=g), 60, root / "bank.npy")
    torch.manual_seed(3)
    net = create_model("posterior-cnn", in_channels=1, num_classes=10, image_size=(28, 28), widths=(4,), strides=(2,))
    save_checkpoint(root / "post", model=net, info={"model": model_spec(net)}, rng=False)
    settings = dict(dataset="mnist5k", split="test", posterior=str(root / "post"), bank=str(root / "bank.npy"),
                    count=12, glimpse_size=8, grid=3, num_glimpses=3, n_completions=8, n_proposals=20,
                    pca_components=4, chunk_size=2, seed=5)
    reference = annotate(AnnotateConfig(**settings), root / "reference")
    flags = ["--dataset", "mnist5k", "--split", "test", "--posterior", settings["posterior"],
             "--bank", settings["bank"],
             "--count", "12", "--glimpse-size", "8", "--grid", "3", "--num-glimpses", "3", "--completions", "8",
             "--proposals", "20", "--pca-components", "4", "--chunk-size", "2", "--seed", "5", "--threads", "1",
             "--claim-timeout", "4", "--quiet"]  # waiting workers look every 0.5 s
    return flags, sequence_paths(reference)[1].read_bytes(), settings


def _environment(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_"))}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src"), **extra}


def test_two_slurm_array_processes_one_killed_and_restarted(mnist_files, tmp_path, capsys):
    flags, reference, settings = mnist_files
    out = tmp_path / "array"
    command = [sys.executable, "-m", "foveal", "annotate", *flags, "--out", str(out), "--shard", "auto"]
    array = lambda i: _environment(SLURM_ARRAY_TASK_ID=str(i), SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_COUNT="2")
    workers = [subprocess.Popen(command, env=array(i), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in (0, 1)]
    try:
        killed, deadline = None, time.time() + 60
        while killed is None and time.time() < deadline and all(w.poll() is None for w in workers):
            for claim in (out / "claims").glob("part-*"):  # the first worker seen holding a chunk is killed
                pid = json.loads(claim.read_text(errors="replace") or "{}").get("pid")
                killed = next((i for i, w in enumerate(workers) if w.pid == pid), None)
                if killed is not None:
                    workers[killed].send_signal(signal.SIGKILL)
                    assert workers[killed].wait() == -signal.SIGKILL  # reaped: its pid is gone
                    break
            time.sleep(0.01)
        assert killed is not None, [w.communicate() for w in workers]
        restarted = AnnotateConfig(**settings, shard_mode="claim", shard_index=killed, num_shards=2, claim_timeout=4,
                                   threads=1)
        assert annotate(restarted, out) == out / "sequences"  # restarted (here) beside the other one still running
        stdout, stderr = workers[1 - killed].communicate(timeout=90)
        assert workers[1 - killed].returncode == 0 and "sequences:" in stdout, stderr
        assert f"worker {1 - killed} of 2 (slurm-array), claim" in stderr
    finally:
        for w in workers:
            w.kill()
            w.wait()
    assert sequence_paths(out / "sequences")[1].read_bytes() == reference
    dead = [p for p in (out / "claims").iterdir() if f'"pid": {workers[killed].pid},' in p.read_text()]
    assert dead  # it died holding a claim, which was taken over, not removed

    from foveal.cli import main

    shutil.rmtree(out / "parts" / "all" / "part-00004")
    assert main(["sequences", "merge", str(out)]) == 2
    assert "chunk(s) 4 (images 8..9) (parts/all/part-00004)" in capsys.readouterr().err


def test_sigterm_releases_the_claims_held(mnist_files, tmp_path, monkeypatch):
    from foveal.cli import main

    flags, reference, _ = mnist_files
    out = tmp_path / "terminated"
    greedy_sequence = annotate_module.greedy_sequence

    def terminated_while_annotating(*args, **kwargs):  # as Slurm at the time limit, or torchrun when a peer failed
        assert [p.name for p in (out / "claims").iterdir()] == ["part-00000.0"]
        os.kill(os.getpid(), signal.SIGTERM)
        return greedy_sequence(*args, **kwargs)

    monkeypatch.setattr(annotate_module, "greedy_sequence", terminated_while_annotating)
    with pytest.raises(SystemExit) as stopped:
        main(["annotate", *flags, "--out", str(out), "--shard-mode", "claim"])
    assert stopped.value.code == 128 + signal.SIGTERM and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert list((out / "claims").iterdir()) == []  # released on the way out: nobody waits for it to go stale
    monkeypatch.setattr(annotate_module, "greedy_sequence", greedy_sequence)
    assert main(["annotate", *flags, "--out", str(out), "--shard-mode", "claim"]) == 0
    assert sequence_paths(out / "sequences")[1].read_bytes() == reference


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed")
def test_two_torchrun_workers(mnist_files, tmp_path):
    flags, reference, _ = mnist_files
    out = tmp_path / "torchrun"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node=2", "-m", "foveal", "annotate", *flags,
                           "--out", str(out), "--shard", "auto"], env=_environment(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worker 1 of 2 (torchrun, local rank 1), claim" in done.stderr
    assert sequence_paths(out / "sequences")[1].read_bytes() == reference
