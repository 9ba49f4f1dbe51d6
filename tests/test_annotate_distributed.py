"""The annotator split without coordination: fixed shards computed at once on one folder and merged, the
retired claim mode refused with a pointer to --ray, and folders the claiming workers made still merged.
(Ray: tests/test_ray_annotate.py.)"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from foveal.boed.annotate import AnnotateConfig, annotate, merge_chunks, merge_folder
from foveal.boed.annotate_folder import FREE_FIELDS
from foveal.boed.bank import ImageBank
from foveal.checkpoint import save_checkpoint
from foveal.models import create_model, model_spec
from foveal.sequences import GlimpseSequences, sequence_paths
from toys import ToySplit, toy_config  # tests/toys.py

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
REPO = Path(__file__).resolve().parents[1]
ANNOTATIONS = REPO / "benchmarks" / "ps-nogs" / "annotations"


def test_cli_shard_auto_and_claim_mode_are_refused_naming_ray(capsys):
    from foveal.cli import main

    assert main(["annotate", "--dataset", "mnist5k", "--posterior", "p", "--bank", "b.npy", "--shard", "auto"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shard: expected I/N with 0 <= I < N (e.g. 0/4), found 'auto' (--shard auto, " \
                                    "claiming chunks, was replaced by --ray)" in err
    with pytest.raises(SystemExit):  # argparse: not a choice any more
        main(["annotate", "--dataset", "mnist5k", "--shard-mode", "claim"])
    assert "invalid choice: 'claim'" in capsys.readouterr().err
    assert main(["annotate", "--dataset", "mnist5k", "--posterior", "p", "--bank", "b.npy", "--workers", "2"]) == 2
    assert "--workers 2: sizes the local Ray instance of --ray; add --ray" in capsys.readouterr().err
    assert main(["annotate", "--dataset", "mnist5k", "--ray", "--prepare-only"]) == 2
    assert "--prepare-only: with --ray the driver prepares the folder itself" in capsys.readouterr().err


def test_ray_workers_size_only_a_local_instance(annotation_inputs, tmp_path):
    from foveal.boed.annotate_ray import annotate_on_ray

    cfg = toy_config(annotation_inputs)
    with pytest.raises(ValueError, match="--workers: sizes a local Ray instance, but --ray auto names a cluster"):
        annotate_on_ray(cfg, tmp_path, address="auto", workers=2)
    with pytest.raises(ValueError, match="--workers: expected a positive number of chunks at once, found 0"):
        annotate_on_ray(cfg, tmp_path, workers=0)
    with pytest.raises(ValueError, match="--tasks-per-gpu 4: chunks share a GPU only with --device cuda, found "
                                         "device 'cpu'"):
        annotate_on_ray(cfg, tmp_path, tasks_per_gpu=4)
    with pytest.raises(ValueError, match="--tasks-per-gpu: expected a positive number .*found 0"):
        annotate_on_ray(cfg, tmp_path, tasks_per_gpu=0)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_chunks_ask_for_a_share_of_a_gpu(annotation_inputs, tmp_path):
    from foveal.boed.annotate import open_annotation
    from foveal.boed.annotate_ray import chunk_tasks

    run = open_annotation(dataclasses.replace(toy_config(annotation_inputs), device="cuda:1", threads=2), tmp_path,
                          dataset=ToySplit())
    tasks = chunk_tasks(run, [0, 1], tasks_per_gpu=8)
    assert [(t.cpus, t.gpus) for t in tasks] == [(2, 0.125), (2, 0.125)]
    assert tasks[0].args[0]["device"] == "cuda"  # the GPU Ray gives the task, whichever it is
    assert [(t.cpus, t.gpus) for t in chunk_tasks(run, [0])] == [(2, 1.0)]


# ------------------------------------------------------------------------ folders of claiming workers
def _as_claimed_folder(src: Path, dst: Path, cfg: AnnotateConfig) -> None:
    """``src`` (a one-process annotation of images 0..n-1) in the layout the retired claiming workers wrote."""
    record = json.loads((src / "config.json").read_text())
    worker = {**cfg.to_dict(), "shard_mode": "claim", "claim_timeout": 300.0}
    record = {**record, "config": {k: v for k, v in worker.items() if k not in FREE_FIELDS + ("num_shards",)},
              "images": [cfg.start, cfg.start + cfg.count], "worker_config": worker}
    dst.mkdir()
    (dst / "config.json").write_text(json.dumps(record))
    for name in ("first-glimpse.json", "first-glimpse.safetensors"):
        shutil.copy(src / name, dst / name)
    for part in sorted((src / "parts" / "shard-0-of-1").glob("part-*.json")):
        folder = dst / "parts" / "all" / part.stem
        folder.mkdir(parents=True)
        for path in sequence_paths(part.with_suffix("")):
            shutil.copy(path, folder / ("part" + path.suffix))


def test_a_folder_of_claiming_workers_still_merges_to_the_same_result(annotation_inputs, tmp_path, capsys):
    cfg = toy_config(annotation_inputs, chunk_size=2)
    reference = annotate(cfg, tmp_path / "one", dataset=ToySplit())
    old = tmp_path / "claimed"
    _as_claimed_folder(tmp_path / "one", old, cfg)
    assert merge_folder(old) == old / "sequences"
    assert sequence_paths(old / "sequences")[1].read_bytes() == sequence_paths(reference)[1].read_bytes()
    assert GlimpseSequences.load(old / "sequences").provenance["config"]["shard_mode"] == "claim"  # as it was made

    from foveal.cli import main

    shutil.rmtree(old / "parts" / "all" / "part-00002")
    assert main(["sequences", "merge", str(old)]) == 2
    assert "found 1 missing: chunk(s) 2 (images 4..5) (parts/all/part-00002)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"config.shard_mode: 'claim' vs 'round-robin'"):
        annotate(cfg, old, dataset=ToySplit())  # such a folder is merged, not resumed


@pytest.mark.skipif(not ANNOTATIONS.is_dir(), reason="benchmarks/ps-nogs/annotations not in this checkout")
def test_the_ps_nogs_annotations_load_and_the_claimed_one_merges_as_saved(tmp_path):
    folders = sorted(p for p in ANNOTATIONS.iterdir() if (p / "sequences.json").exists())
    assert {p.name for p in folders} >= {"nogs", "nogs-strong", "hindsight"}
    for folder in folders:
        seqs = GlimpseSequences.load(folder / "sequences")
        assert len(seqs) == len(seqs.indices) > 0
    claimed = ANNOTATIONS / "nogs-strong"
    assert "images" in json.loads((claimed / "config.json").read_text())
    copy = tmp_path / "nogs-strong"  # merged beside the original, which is left as it is (read only)
    copy.mkdir()
    for name in ("config.json", "first-glimpse.json", "first-glimpse.safetensors"):
        shutil.copy(claimed / name, copy / name)
    (copy / "parts").symlink_to(claimed / "parts")
    stamp = sequence_paths(claimed / "sequences")[1].stat().st_mtime_ns
    merged = merge_chunks(copy)
    assert sequence_paths(merged)[1].read_bytes() == sequence_paths(claimed / "sequences")[1].read_bytes()
    assert sequence_paths(claimed / "sequences")[1].stat().st_mtime_ns == stamp


# -------------------------------------------------------------- fixed shards at once, then one merge
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
             "--quiet"]
    return flags, sequence_paths(reference)[1].read_bytes()


def test_two_fixed_shard_processes_at_once_on_one_folder_then_merge(mnist_files, tmp_path, capsys):
    """Split by hand: both processes prepare the same shared files (the same bytes, atomically) with no
    coordination, each computes its share, and the merge equals one process's result."""
    flags, reference = mnist_files
    out = tmp_path / "shards"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    shards = [subprocess.Popen([sys.executable, "-m", "foveal", "annotate", *flags, "--out", str(out),
                                "--shard", f"{i}/2", "--shard-mode", "contiguous"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for shard in shards:
        stdout, stderr = shard.communicate(timeout=120)
        assert shard.returncode == 0 and "foveal sequences merge FOLDER" in stdout, stderr
    assert sorted(p.name for p in out.glob("sequences-*.json")) == ["sequences-shard-0-of-2.json",
                                                                     "sequences-shard-1-of-2.json"]
    assert not list(out.rglob(".tmp-*"))  # no temporary left behind

    from foveal.cli import main

    assert main(["sequences", "merge", str(out)]) == 0
    assert sequence_paths(out / "sequences")[1].read_bytes() == reference
