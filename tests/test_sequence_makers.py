"""Sequence makers: the registry, salient and random baselines (exact choices on tiny images, files through the
sequence API) and a trained policy's sequences."""

import pytest
import torch

from foveal.models import create_model
from foveal.retina import LocationGrid
from foveal.sequences import (MAKERS, GlimpseSequences, Target, policy_sequences, random_cells, random_sequences,
                              salient_cells, salient_sequences)

GRID = LocationGrid.from_stride((8, 8), 4, 4)  # 4 disjoint cells: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right


class TinyDataset:
    name, split, image_shape = "tiny", "val", (1, 8, 8)

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": torch.tensor(0), "index": i}


def baseline(method, dataset, indices, grid, T, **settings):
    return MAKERS.build(method, Target(dataset, indices, T, grid), **settings)


def block_image(r, c, value=1.0):
    image = torch.zeros(1, 8, 8)
    image[:, r:r + 2, c:c + 2] = value
    return image


def test_salient_cells_take_the_most_unseen_saliency_then_move_on():
    images = torch.stack([block_image(5, 5), block_image(1, 1) + block_image(5, 1, 0.5)])
    cells = salient_cells(images, GRID, 3)
    # image 0: all edges in cell 3; then nothing unseen anywhere: ties -> lowest index (0), then 1
    # image 1: strongest block in cell 0, the weaker one in cell 2, then ties -> 1
    assert cells.tolist() == [[3, 0, 1], [0, 2, 1]]
    with pytest.raises(ValueError, match=r"saliency kind: expected one of \('edge', 'variance'\), found 'sobel'"):
        salient_cells(images, GRID, 3, kind="sobel")
    with pytest.raises(ValueError, match=r"expected \[B, C, 8, 8\] \(the grid's size\), found \[1, 1, 6, 6\]"):
        salient_cells(torch.zeros(1, 1, 6, 6), GRID, 2)


def test_random_cells_are_uniform_and_reproducible():
    a = random_cells(2000, GRID, 3, generator=torch.Generator().manual_seed(0))
    b = random_cells(2000, GRID, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (2000, 3)
    counts = torch.bincount(a.flatten(), minlength=4).float() / a.numel()
    assert (counts - 0.25).abs().max() < 0.03


def test_the_registry_names_each_maker_by_the_method_it_records():
    assert MAKERS.names()[:3] == ["salient", "random", "ps-ram"]
    assert MAKERS.get("salient") is salient_sequences and MAKERS.get("ps-ram") is policy_sequences
    assert all(summary for _, summary in MAKERS.describe())
    with pytest.raises(ValueError, match=r"method: expected one of \[.*'salient'.*\], found 'salinet'; did you mean "
                                         r"'salient'\?"):
        MAKERS.build("salinet", Target(TinyDataset([]), [], 2, GRID))


def test_the_annotators_makers_register_when_boed_is_imported():
    import foveal.boed  # noqa: F401  (registers nogs and hindsight)

    assert {"nogs", "hindsight"} <= set(MAKERS.names())
    assert "expected posterior entropy" in dict(MAKERS.describe())["nogs"]


def test_baseline_sequences_are_glimpse_sequence_files(tmp_path):
    data = TinyDataset([block_image(5, 5), block_image(1, 1), block_image(1, 5)])
    seqs = baseline("salient", data, [2, 0], GRID, 2)
    assert isinstance(seqs, GlimpseSequences) and seqs.method == "salient" and seqs.split == "val"
    assert seqs.indices.tolist() == [2, 0] and seqs.grid == GRID
    assert seqs.corners[:, 0].tolist() == [[0, 4], [4, 4]]  # top-right cell, bottom-right cell
    seqs.save(tmp_path / "salient")
    assert GlimpseSequences.load(tmp_path / "salient", dataset=data) == seqs
    r1 = baseline("random", data, torch.arange(3), GRID, 4, seed=5)
    r2 = random_sequences(Target(data, [0, 1, 2], 4, GRID), seed=5, batch_size=2)
    assert r1.method == "random" and torch.equal(r1.corners, r2.corners) and r1.provenance == {"method": "random",
                                                                                               "seed": 5}
    with pytest.raises(ValueError, match="random: expected a target with a grid"):
        baseline("random", data, [0], None, 2)
    with pytest.raises(ValueError, match="Target.num_glimpses: expected >= 1, found 0"):
        Target(data, [0], 0, GRID)


def test_sequences_make_gives_baselines_of_the_images_and_grid_of_another_file(tmp_path, capsys):
    from foveal.cli import main
    from foveal.data import build_dataset

    val = build_dataset("mnist5k", "val")
    grid = LocationGrid.from_stride((28, 28), 8, 4)
    like = baseline("random", val, [7, 3, 11], grid, 3, seed=1)
    like = GlimpseSequences(**{**like.__dict__, "method": "nogs", "provenance": {"config": {"data_options": {}}}})
    like.save(tmp_path / "nogs")
    assert main(["sequences", "make", "salient", "--like", str(tmp_path / "nogs"), "--out", str(tmp_path / "sal")]) == 0
    salient = GlimpseSequences.load(tmp_path / "sal", dataset=val)
    assert salient.method == "salient" and salient.indices.tolist() == [7, 3, 11] and salient.grid == grid
    assert salient.num_glimpses == 3 and salient.provenance["like"].endswith("nogs.json")
    expected = baseline("salient", val, [7, 3, 11], grid, 3)
    assert torch.equal(salient.corners, expected.corners)
    assert main(["sequences", "make", "random", "--like", str(tmp_path / "nogs"), "--out", str(tmp_path / "rnd"),
                 "--seed", "4"]) == 0
    assert torch.equal(GlimpseSequences.load(tmp_path / "rnd").corners,
                       baseline("random", val, [7, 3, 11], grid, 3, seed=4).corners)
    capsys.readouterr()
    assert main(["sequences", "make", "random", "--like", str(tmp_path / "nogs"), "--out", str(tmp_path / "rnd")]) == 2
    assert "rnd: exists; use --force to replace it" in capsys.readouterr().err


def test_policy_sequences_sample_the_model_and_restore_the_rng():
    data = TinyDataset([block_image(r, c) for r, c in ((0, 0), (5, 5), (1, 5), (5, 1))])
    torch.manual_seed(0)
    model = create_model("ram-grid", in_channels=1, num_classes=2, image_size=(8, 8), glimpse_size=4, grid_stride=2,
                         hidden_size=8)
    target = Target(data, [3, 1, 2], 4)
    state = torch.get_rng_state()
    a = policy_sequences(target, model=model, seed=5, batch_size=2)
    assert torch.equal(torch.get_rng_state(), state)
    b = MAKERS.build("ps-ram", target, model=model, seed=5, batch_size=2)
    assert a == b and a.method == "ps-ram" and a.grid == model.grid and a.corners.shape == (3, 4, 2)
    assert a.provenance == {"policy": "sample", "seed": 5, "num_glimpses": 4}
    greedy = policy_sequences(target, model=model, policy="greedy")
    assert (greedy.corners[:, 0] == greedy.corners[0, 0]).all()  # the first glimpse cannot depend on the image
    gauss = create_model("ram", in_channels=1, num_classes=2, image_size=(8, 8), glimpse_size=4, location_std=0.5,
                         hidden_size=8)
    g = policy_sequences(Target(data, [0, 1, 2, 3], 6), model=gauss)
    assert g.grid is None and g.corners.min() >= 0 and g.corners.max() <= 4
    with pytest.raises(ValueError, match="the target's grid is not the model's"):
        policy_sequences(Target(data, [0], 2, GRID), model=model)
