"""Salient and random baseline sequences: exact choices on tiny images, files through the sequence API."""

import pytest
import torch

from foveal.boed.salient import SalientConfig, baseline_sequences, random_cells, salient_cells
from foveal.data.sequences import GlimpseSequences
from foveal.retina import LocationGrid

GRID = LocationGrid.from_stride((8, 8), 4, 4)  # 4 disjoint cells: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right


class TinyDataset:
    name, split, image_shape = "tiny", "val", (1, 8, 8)

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": torch.tensor(0), "index": i}


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
    with pytest.raises(ValueError, match=r"SalientConfig.kind: expected one of \('edge', 'variance'\), found 'sobel'"):
        SalientConfig("sobel")
    with pytest.raises(ValueError, match=r"expected \[B, C, 8, 8\] \(the grid's size\), found \[1, 1, 6, 6\]"):
        salient_cells(torch.zeros(1, 1, 6, 6), GRID, 2)


def test_random_cells_are_uniform_and_reproducible():
    a = random_cells(2000, GRID, 3, generator=torch.Generator().manual_seed(0))
    b = random_cells(2000, GRID, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (2000, 3)
    counts = torch.bincount(a.flatten(), minlength=4).float() / a.numel()
    assert (counts - 0.25).abs().max() < 0.03


def test_baseline_sequences_are_glimpse_sequence_files(tmp_path):
    data = TinyDataset([block_image(5, 5), block_image(1, 1), block_image(1, 5)])
    seqs = baseline_sequences("salient", data, [2, 0], GRID, 2)
    assert isinstance(seqs, GlimpseSequences) and seqs.method == "salient" and seqs.split == "val"
    assert seqs.indices.tolist() == [2, 0] and seqs.grid == GRID
    assert seqs.corners[:, 0].tolist() == [[0, 4], [4, 4]]  # top-right cell, bottom-right cell
    seqs.save(tmp_path / "salient")
    assert GlimpseSequences.load(tmp_path / "salient", dataset=data) == seqs
    r1 = baseline_sequences("random", data, torch.arange(3), GRID, 4, seed=5)
    r2 = baseline_sequences("random", data, torch.arange(3), GRID, 4, seed=5, batch_size=2)
    assert r1.method == "random" and torch.equal(r1.corners, r2.corners) and r1.provenance["seed"] == 5
    with pytest.raises(ValueError, match="method: expected 'salient' or 'random', found 'nogs'"):
        baseline_sequences("nogs", data, [0], GRID, 2)


def test_sequences_make_gives_baselines_of_the_images_and_grid_of_another_file(tmp_path, capsys):
    from foveal.cli import main
    from foveal.data import build_dataset

    val = build_dataset("mnist5k", "val")
    grid = LocationGrid.from_stride((28, 28), 8, 4)
    like = baseline_sequences("random", val, [7, 3, 11], grid, 3, seed=1)
    like = GlimpseSequences(**{**like.__dict__, "method": "nogs", "provenance": {"config": {"data_options": {}}}})
    like.save(tmp_path / "nogs")
    assert main(["sequences", "make", "salient", "--like", str(tmp_path / "nogs"), "--out", str(tmp_path / "sal")]) == 0
    salient = GlimpseSequences.load(tmp_path / "sal", dataset=val)
    assert salient.method == "salient" and salient.indices.tolist() == [7, 3, 11] and salient.grid == grid
    assert salient.num_glimpses == 3 and salient.provenance["like"].endswith("nogs.json")
    expected = baseline_sequences("salient", val, [7, 3, 11], grid, 3)
    assert torch.equal(salient.corners, expected.corners)
    assert main(["sequences", "make", "random", "--like", str(tmp_path / "nogs"), "--out", str(tmp_path / "rnd"),
                 "--seed", "4"]) == 0
    assert torch.equal(GlimpseSequences.load(tmp_path / "rnd").corners,
                       baseline_sequences("random", val, [7, 3, 11], grid, 3, seed=4).corners)
    capsys.readouterr()
    assert main(["sequences", "make", "random", "--like", str(tmp_path / "nogs"), "--out", str(tmp_path / "rnd")]) == 2
    assert "rnd: exists; use --force to replace it" in capsys.readouterr().err
