"""The annotator on a tiny problem: resumption, sharding, equality with greedy_sequence, kept EPE maps."""

import json
import re

import pytest
import torch

from foveal.boed import first_glimpse, greedy_sequence
from foveal.boed.annotate import AnnotateConfig, annotate, image_generator, load_posterior, merge_shards, select_indices
from foveal.boed.bank import ImageBank
from foveal.boed.completion import BankSampler
from foveal.boed.epe import SearchConfig
from foveal.checkpoint import save_checkpoint
from foveal.data import build_dataset
from foveal.models import create_model, model_spec
from foveal.retina import LocationGrid
from foveal.sequences import MAKERS, GlimpseSequences, Target, sequence_paths
from toys import ToySplit, toy_config  # tests/toys.py

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def files(annotation_inputs):
    return annotation_inputs  # tests/conftest.py


def read(prefix):
    json_path, st_path = sequence_paths(prefix)
    header = json.loads(json_path.read_text())
    header["provenance"].pop("timing")
    return header, st_path.read_bytes()


def test_resume_after_a_kill_is_identical_and_recomputes_nothing(files, tmp_path):
    data = ToySplit()
    cfg = toy_config(files)
    assert annotate(cfg, tmp_path / "a", dataset=data, stop_after=1) is None
    parts = tmp_path / "a" / "parts" / "shard-0-of-1"
    assert sorted(p.name for p in parts.iterdir()) == ["part-00000.json", "part-00000.safetensors"]
    assert data.reads == 3 and (tmp_path / "a" / "first-glimpse.json").exists()
    stamp = (parts / "part-00000.json").stat().st_mtime_ns
    first_stamp = (tmp_path / "a" / "first-glimpse.json").stat().st_mtime_ns
    seen = []
    path = annotate(cfg, tmp_path / "a", dataset=data, progress=lambda done, total, logs: seen.append((done, total)))
    assert data.reads == 8 and (parts / "part-00000.json").stat().st_mtime_ns == stamp  # chunk 0 not redone
    assert (tmp_path / "a" / "first-glimpse.json").stat().st_mtime_ns == first_stamp  # cached, reused
    assert seen == [(4, 8), (5, 8), (6, 8), (7, 8), (8, 8)]
    assert path == tmp_path / "a" / "sequences"

    whole = annotate(cfg, tmp_path / "b", dataset=ToySplit())
    assert read(path) == read(whole)  # byte-identical tensors, same header apart from timing
    seqs = GlimpseSequences.load(path, dataset=data)
    assert seqs.indices.tolist() == list(range(8)) and seqs.corners.shape == (8, 2, 2) and seqs.method == "nogs"
    timing = seqs.provenance["timing"]
    assert timing["images"] == 8 and timing["seconds"] > 0 and timing["sequences_per_min"] > 0
    assert seqs.provenance["posterior"]["sha256"] and seqs.provenance["config"]["n_completions"] == 4
    assert (seqs.corners[:, 0] == seqs.corners[0, 0]).all()  # the task's first glimpse, shared

    with pytest.raises(ValueError, match="other settings; differing: config.n_completions: 4 vs 5"):
        annotate(toy_config(files, n_completions=5), tmp_path / "a", dataset=data)

    # a folder made before a field existed (here: shifts) still resumes: the field had its default
    record_path = tmp_path / "a" / "config.json"
    record = json.loads(record_path.read_text())
    del record["config"]["shifts"]
    record_path.write_text(json.dumps(record))
    assert annotate(cfg, tmp_path / "a", dataset=data) == path
    with pytest.raises(ValueError, match="config.shifts: 0 vs 1"):
        annotate(toy_config(files, shifts=1), tmp_path / "a", dataset=data)


def test_shards_merged_equal_the_unsharded_run(files, tmp_path):
    whole = annotate(toy_config(files), tmp_path / "one", dataset=ToySplit())
    for mode in ("round-robin", "contiguous"):
        out = tmp_path / mode
        for i in (1, 0):
            path = annotate(toy_config(files, num_shards=2, shard_index=i, shard_mode=mode, chunk_size=2), out,
                            dataset=ToySplit())
            assert path.name == f"sequences-shard-{i}-of-2"
        shard0 = GlimpseSequences.load(out / "sequences-shard-0-of-2")
        assert shard0.indices.tolist() == ([0, 2, 4, 6] if mode == "round-robin" else [0, 1, 2, 3])
        merged = merge_shards(out)
        assert sequence_paths(merged)[1].read_bytes() == sequence_paths(whole)[1].read_bytes()
        prov = GlimpseSequences.load(merged).provenance
        assert prov["timing"]["images"] == 8 and prov["shards"] == ["sequences-shard-0-of-2.json",
                                                                    "sequences-shard-1-of-2.json"]
    sequence_paths(tmp_path / "contiguous" / "sequences-shard-1-of-2")[0].unlink()
    with pytest.raises(FileNotFoundError, match=r"shard\(s\) \[1\]"):
        merge_shards(tmp_path / "contiguous")


@pytest.mark.parametrize("search", [{}, {"local_updates": True, "screen_completions": 2, "screen_top_k": 3},
                                    {"first_completions": 9}])
def test_equals_greedy_sequence_with_the_same_generators_and_keeps_maps(files, tmp_path, search):
    data = ToySplit()
    search = dict(search)
    first_completions = search.pop("first_completions", None)
    cfg = toy_config(files, keep_maps=True, start=2, count=4, first_completions=first_completions, **search)
    assert cfg.search() == SearchConfig(**search)
    seqs = GlimpseSequences.load(annotate(cfg, tmp_path, dataset=data))

    posterior, _ = load_posterior(cfg.posterior, torch.device("cpu"))
    grid = cfg.make_grid((8, 8))
    sampler = BankSampler(ImageBank.open(cfg.bank), grid, pca_components=4, n_proposals=10)
    first = first_glimpse(posterior, sampler, grid, 1, n_completions=first_completions or 4,
                          generator=image_generator(7, None))
    for row, i in enumerate(range(2, 6)):
        cells, maps = greedy_sequence(data.images[i], posterior, sampler, grid, 2, n_completions=4,
                                      first_location=first, keep_maps=True, search=SearchConfig(**search),
                                      generator=image_generator(7, i))
        assert torch.equal(seqs.corners[row], grid.corners()[cells])
        assert torch.equal(seqs.epe_maps[row].flatten(1), maps)
    maps = seqs.epe_maps  # [4, 2, 3, 3]
    assert maps.shape == (4, 2, 3, 3) and not torch.isnan(maps).any()
    assert torch.equal(grid.corner_to_index(seqs.corners), maps.flatten(2).argmin(-1))  # the chosen cell is the arg-min
    assert torch.equal(maps[:, 0], first.epe_map.view(1, 3, 3).expand(4, 3, 3))
    assert maps[:, 1].flatten(1).std(1).gt(0).all()  # the second step's maps are informative


def test_selection_and_config_errors(files):
    cfg = toy_config(files, start=1, count=7, num_shards=3, shard_index=2)
    assert select_indices(cfg, 10).tolist() == [3, 6]
    assert select_indices(toy_config(files, start=1, count=7, num_shards=3, shard_index=0, shard_mode="contiguous"),
                          10).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="shard_mode: expected one of 'round-robin', 'contiguous', found 'x'$"):
        toy_config(files, shard_mode="x")
    with pytest.raises(ValueError, match="found 'claim' \\(claiming chunks on a shared folder was replaced by "
                                         "foveal annotate --ray\\)"):
        toy_config(files, shard_mode="claim")  # the retired claiming workers' mode, in an old YAML
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['claim_timeout'\] \(claim_timeout belonged to"):
        AnnotateConfig.from_dict({"dataset": "x", "posterior": "p", "bank": "b", "claim_timeout": 300})
    with pytest.raises(ValueError, match=r"threads: expected None \(leave as is\) or an integer >= 1, found 0"):
        toy_config(files, threads=0)
    with pytest.raises(ValueError, match="first_completions: expected None or an integer >= 1, found 0"):
        toy_config(files, first_completions=0)
    with pytest.raises(ValueError, match="within the split's 10 images, found 5..12"):
        select_indices(toy_config(files, start=5), 10)
    with pytest.raises(ValueError, match="shard_index: expected 0 <= shard_index < num_shards = 2.*found 2"):
        toy_config(files, num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match="at most one of grid, grid_stride"):
        toy_config(files, grid=3)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['glimpses'\]"):
        AnnotateConfig.from_dict({"dataset": "x", "posterior": "p", "bank": "b", "glimpses": 3})
    seeds = [image_generator(0, i).initial_seed() for i in (5, 5, 6)] + [image_generator(0, None).initial_seed()]
    assert seeds[0] == seeds[1] and len(set(seeds)) == 3


def test_cli_build_bank_annotate_and_sequences_commands(files, tmp_path, capsys):
    from foveal.cli import main

    bank = tmp_path / "bank.npy"
    assert main(["build-bank", "mnist5k", "--split", "val", "--limit", "40", "--no-flips", "--out", str(bank),
                 "--quiet"]) == 0
    assert f"bank: {bank}" in capsys.readouterr().out and ImageBank.open(bank).image_shape == (1, 28, 28)
    later = tmp_path / "later.npy"  # a bank past the images to annotate: positions 490.. of val
    assert main(["build-bank", "mnist5k", "--split", "val", "--start", "490", "--no-flips", "--out", str(later),
                 "--quiet"]) == 0
    assert "mnist5k/val[490:]" in capsys.readouterr().out and len(ImageBank.open(later)) == 10
    image = build_dataset("mnist5k", "val")[490]["image"][None]
    assert torch.equal(ImageBank.open(later).images(torch.tensor([0])),
                       ImageBank.from_tensor(image, dtype="uint8").images(torch.tensor([0])))
    torch.manual_seed(3)
    net = create_model("posterior-cnn", in_channels=1, num_classes=10, image_size=(28, 28), widths=(4,), strides=(2,))
    save_checkpoint(tmp_path / "post", model=net, info={"model": model_spec(net)}, rng=False)
    config_file = tmp_path / "annotate.yaml"
    config_file.write_text("dataset: mnist5k\nsplit: test\nglimpse_size: 8\ngrid: 3\nnum_glimpses: 2\n")
    command = ["annotate", "--config", str(config_file), "--posterior", str(tmp_path / "post"), "--bank", str(bank),
               "--count", "3", "--completions", "4", "--proposals", "10", "--pca-components", "4", "--chunk-size", "2",
               "--out", str(tmp_path / "run"), "--quiet", "seed=1"]
    assert main(command) == 0
    out = capsys.readouterr().out
    result = tmp_path / "run" / "sequences"
    assert f"sequences: {result}.json" in out and "sequences/min" in out
    seqs = GlimpseSequences.load(result)
    assert seqs.indices.tolist() == [0, 1, 2] and seqs.grid.rows == (0, 10, 20)
    assert seqs.provenance["config"]["seed"] == 1
    assert main(command) == 0  # a rerun of a finished annotation only rewrites the result
    assert GlimpseSequences.load(result).corners.equal(seqs.corners)
    capsys.readouterr()

    assert main(["sequences", "validate", str(result)]) == 0
    assert "valid for mnist5k/test (3 of 500 images)" in capsys.readouterr().out
    assert main(["sequences", "info", str(result) + ".json"]) == 0
    out = capsys.readouterr().out
    assert "3 sequences of 2 glimpses (8 px) on mnist5k/test 28x28, method nogs" in out
    assert re.search(r"completions per step \(mean distinct images .*\): t2 \d/\d\.\d/\d+", out), out
    assert main(["sequences", "export", str(result), str(tmp_path / "txt")]) == 0
    assert sorted(p.name for p in (tmp_path / "txt").iterdir()) == ["0.txt", "1.txt", "2.txt"]
    assert main(["sequences", "import", str(tmp_path / "txt"), str(tmp_path / "imported"), "--dataset", "mnist5k",
                 "--split", "test", "--glimpse-size", "8", "--grid", "3"]) == 0
    assert GlimpseSequences.load(tmp_path / "imported").corners.equal(seqs.corners)
    assert main(["sequences", "merge", str(tmp_path / "run")]) == 2  # no shard results there
    assert "expected shard results" in capsys.readouterr().err

    assert main(command[:-1] + ["--shard", "2/2"]) == 2
    assert "shard_index: expected 0 <= shard_index < num_shards = 2" in capsys.readouterr().err
    assert main(command[:-1] + ["--shard", "first"]) == 2
    assert "--shard: expected I/N" in capsys.readouterr().err
    assert main(command[:-1] + ["n_completions=5"]) == 2  # another setting into the same folder
    assert "other settings" in capsys.readouterr().err


def test_precision_and_layout_settings_are_checked():
    from foveal.boed import AnnotateConfig

    base = dict(dataset="mnist5k", posterior="p", bank="b")
    assert AnnotateConfig(**base, precision="bf16", channels_last=True).precision == "bf16"
    with pytest.raises(ValueError, match=r"AnnotateConfig.precision: expected one of \('fp32', 'bf16'\), found 'fp8'"):
        AnnotateConfig(**base, precision="fp8")
    with pytest.raises(ValueError, match="AnnotateConfig.channels_last: expected true or false"):
        AnnotateConfig(**base, channels_last="yes")


def test_completion_ess_per_step_is_recorded_and_summarised(files, tmp_path):
    # 6 proposals at target ESS 0.5: the importance weights are worth 3 candidates at every step, and
    # N = 4 completions resampled from them come back as 1-4 distinct images whose ESS is at most that
    cfg = toy_config(files, num_glimpses=3, n_proposals=6, target_ess=0.5, chunk_size=4)
    seqs = GlimpseSequences.load(annotate(cfg, tmp_path / "bank", dataset=ToySplit()))
    summary = seqs.provenance["completions"]
    assert summary["steps"] == [2, 3]
    assert summary["proposal_ess"] == pytest.approx([3.0, 3.0], abs=1e-3)
    assert all(1 <= d <= 4 for d in summary["distinct"])
    assert all(1 <= m <= e <= d + 1e-9 for m, e, d in zip(summary["completion_ess_min"], summary["completion_ess"],
                                                          summary["distinct"]))
    part = GlimpseSequences.load(tmp_path / "bank" / "parts" / "shard-0-of-1" / "part-00000")
    rows = part.provenance["completion_stats"]["distinct"]
    assert len(rows) == 4 and all(len(row) == 2 for row in rows)  # one row per image, one value per step


def test_hindsight_annotation_sees_the_true_image_alone(files, tmp_path):
    data = ToySplit()
    cfg = toy_config(files, completions="hindsight", keep_maps=True)
    assert cfg.method == "hindsight"
    seqs = GlimpseSequences.load(annotate(cfg, tmp_path, dataset=data))
    summary = seqs.provenance["completions"]
    assert summary["distinct"] == [1.0] and summary["completion_ess"] == [1.0] and summary["proposal_ess"] == [1.0]
    assert seqs.method == "hindsight" and seqs.provenance["config"]["completions"] == "hindsight"
    # step 2's map is the posterior's entropy on the true image seen through the first cell and each cell
    posterior, _ = load_posterior(cfg.posterior, torch.device("cpu"))
    grid = cfg.make_grid((8, 8))
    from foveal.boed.epe import cell_masks
    from foveal.logits import posterior_entropy

    cells = cell_masks(grid)  # [G, 1, 8, 8]
    first = int(grid.corner_to_index(seqs.corners[0, :1])[0])
    for row, i in enumerate(range(8)):
        seen = torch.maximum(cells[first][None], cells)  # [G, 1, 8, 8]
        image = data.images[i][None].expand(len(grid), -1, -1, -1)
        entropy = posterior_entropy(posterior.logits(image * seen, seen), multilabel=False)
        assert seqs.epe_maps[row, 1].flatten() == pytest.approx(entropy.tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="AnnotateConfig.completions: expected one of 'bank', 'hindsight', found 'x'"):
        toy_config(files, completions="x")


def test_the_annotator_is_the_nogs_and_hindsight_maker(files, tmp_path):
    """MAKERS.build("nogs" | "hindsight", target) runs the annotator on the target's images, T and grid."""
    settings = dict(n_completions=4, n_proposals=10, pca_components=4, chunk_size=3, seed=7)
    grid = LocationGrid.from_stride((8, 8), 4, 2)
    target = Target(ToySplit(), range(8), 2, grid)
    paths = {"posterior": str(files / "posterior"), "bank": str(files / "bank.npy")}
    for name, completions in (("nogs", "bank"), ("hindsight", "hindsight")):
        made = MAKERS.build(name, target, out_dir=tmp_path / name, **paths, **settings)
        direct = annotate(toy_config(files, completions=completions), tmp_path / f"{name}-direct", dataset=ToySplit())
        assert made.method == name and read(made.source) == read(direct)
    counted = Target(ToySplit(), range(8), 2, LocationGrid.from_count((8, 8), 4, (2, 3)))  # no stride: 0, 4 x 0, 2, 4
    made = MAKERS.build("nogs", counted, out_dir=tmp_path / "count", **paths, **settings)
    assert made.grid == counted.grid and made.provenance["config"]["grid"] == [2, 3]
    with pytest.raises(ValueError, match=r"nogs: expected the target's images to be a range of positions"):
        MAKERS.build("nogs", Target(ToySplit(), [0, 2], 2, grid), out_dir=tmp_path / "x", **paths)
    with pytest.raises(ValueError, match=r"hindsight: \['grid_stride', 'start'\] are not settings"):
        MAKERS.build("hindsight", target, out_dir=tmp_path / "x", start=2, grid_stride=4, **paths)
    uneven = LocationGrid((8, 8), 4, (0, 1, 4), (0, 1, 4))
    with pytest.raises(ValueError, match="nogs: the target's grid is neither every S pixels nor N cells"):
        MAKERS.build("nogs", Target(ToySplit(), range(8), 2, uneven), out_dir=tmp_path / "x", **paths)


def test_annotate_takes_the_posteriors_glimpse_settings_or_refuses_others(tmp_path, capsys):
    from foveal.cli import main

    bank = tmp_path / "bank.npy"
    assert main(["build-bank", "mnist5k", "--split", "val", "--limit", "20", "--no-flips", "--out", str(bank),
                 "--quiet"]) == 0
    torch.manual_seed(3)
    net = create_model("posterior-cnn", in_channels=1, num_classes=10, image_size=(28, 28), widths=(4,), strides=(2,))
    trained_for = {"name": "posterior", "glimpse_size": 6, "grid_stride": 2, "num_glimpses": 3}  # as train-posterior saves it
    save_checkpoint(tmp_path / "post", model=net, info={"model": model_spec(net), "config": {"algorithm": trained_for}},
                    rng=False)
    capsys.readouterr()
    command = ["annotate", "--dataset", "mnist5k", "--split", "test", "--posterior", str(tmp_path / "post"),
               "--bank", str(bank), "--count", "1", "--completions", "4", "--proposals", "10", "--pca-components", "4",
               "--out", str(tmp_path / "run"), "--quiet"]
    assert main(command) == 0
    assert f"from the posterior {tmp_path / 'post'}: glimpse_size 6, grid_stride 2, num_glimpses 3" in \
        capsys.readouterr().err
    seqs = GlimpseSequences.load(tmp_path / "run" / "sequences")
    assert (seqs.glimpse_size, seqs.num_glimpses, seqs.grid.rows[:3]) == (6, 3, (0, 2, 4))

    for flags, expected in ((["--glimpse-size", "8"], ("glimpse_size: 8 given", "6 px")),
                            (["--grid", "3"], ("grid 3 (cells per axis) given", "grid_stride 2")),
                            (["--grid-stride", "1"], ("grid_stride 1 given", "grid_stride 2")),
                            (["--num-glimpses", "5"], ("num_glimpses: 5 given", "at most T = 3"))):
        assert main([*command[:-3], "--out", str(tmp_path / "other"), "--quiet", *flags]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and all(e in err for e in expected), err
    assert not (tmp_path / "other").exists()
    fewer = [*command[:-3], "--out", str(tmp_path / "fewer"), "--glimpse-size", "6", "--num-glimpses", "2"]
    assert main(fewer) == 0  # the posterior was trained on every t up to 3
    assert GlimpseSequences.load(tmp_path / "fewer" / "sequences").num_glimpses == 2

    cfg = AnnotateConfig(dataset="mnist5k", split="test", posterior=str(tmp_path / "post"), bank=str(bank), count=1,
                         n_completions=4, n_proposals=10, pca_components=4)  # Python: the defaults, 8 px
    with pytest.raises(ValueError, match="glimpse_size: 8 given, but the posterior"):
        annotate(cfg, tmp_path / "python")
