"""Sequence sources for the baselines: PS-RAM (a model's policy), PS-HGS (CUB parts), user points."""

import pytest
import torch

from foveal.data import DataError
from foveal.models import create_model
from foveal.recipes.sequence_sources import hgs_sequences, points_sequences, points_to_corners, policy_sequences
from foveal.retina import LocationGrid

CUB_PARTS = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat"]


class Birds:
    """A CUB-like split: 32 x 32 images, parts(i) -> [15, 3] (x, y, visible) in pixels."""

    name, split, image_shape = "cub", "train", (3, 32, 32)
    part_names = CUB_PARTS

    def __init__(self, table):
        self.table = table  # {index: {part name: (x, y)}}; absent parts are invisible

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"image": torch.full((3, 32, 32), i / 4), "label": torch.tensor(i % 2), "index": i}

    def image_id(self, i):
        return f"{i:03d}.jpg"

    def parts(self, i):
        out = torch.zeros(15, 3)
        for name, (x, y) in self.table.get(i, {}).items():
            out[CUB_PARTS.index(name)] = torch.tensor([x, y, 1.0])
        return out.numpy()


def test_hgs_order_visible_choice_and_replacement():
    full = {"beak": (10, 4), "left eye": (8, 6), "forehead": (12, 2), "belly": (16, 20), "left leg": (14, 28)}
    partial = {"beak": (10, 4), "right eye": (9, 7), "belly": (16, 20)}  # no forehead, no legs
    data = Birds({0: full, 2: partial})
    seqs = hgs_sequences(data, [0, 2, 3], glimpse_size=8, seed=0)
    assert seqs.method == "hgs" and seqs.num_glimpses == 5 and seqs.ids == ["000.jpg", "002.jpg", "003.jpg"]
    centres = seqs.corners + 4  # 8 px glimpses: centre = corner + 4 (inside the image)
    expected = torch.tensor([[4, 10], [6, 8], [4, 12], [20, 16], [28, 14]])  # (row, col) = (y, x); clamped below
    assert torch.equal(seqs.corners[0], points_to_corners(expected.double(), (32, 32), 8))
    assert torch.equal(centres[0, :4], expected[:4])  # glimpses fully inside; the leg's is clamped to row 24
    assert tuple(centres[1, 1].tolist()) == (7, 9)  # the visible (right) eye
    visible = {(4, 10), (7, 9), (20, 16)}
    assert tuple(centres[1, 2].tolist()) in visible and tuple(centres[1, 4].tolist()) in visible  # replaced
    assert (centres[2] == 16).all()  # no visible part at all: the image centre
    assert seqs.provenance["replaced_invisible"] == 2
    grid = LocationGrid.from_stride((32, 32), 8, 8)
    on_grid = hgs_sequences(data, [0], glimpse_size=8, grid=grid)
    grid.corner_to_index(on_grid.corners)  # every glimpse is a cell
    with pytest.raises(DataError, match="part annotations"):
        hgs_sequences(type("NoParts", (), {"name": "x", "part_names": []})(), [0], glimpse_size=8)


def test_policy_sequences_sample_the_model_and_restore_the_rng():
    data = Birds({})
    torch.manual_seed(0)
    model = create_model("ram-grid", in_channels=3, num_classes=2, image_size=(32, 32), glimpse_size=8, grid_stride=8,
                         hidden_size=8)
    state = torch.get_rng_state()
    a = policy_sequences(model, data, [3, 1, 2], 4, seed=5, batch_size=2)
    assert torch.equal(torch.get_rng_state(), state)
    b = policy_sequences(model, data, [3, 1, 2], 4, seed=5, batch_size=2)
    assert a == b and a.method == "ps-ram" and a.grid == model.grid and a.corners.shape == (3, 4, 2)
    greedy = policy_sequences(model, data, [3, 1, 2], 4, policy="greedy")
    assert (greedy.corners[:, 0] == greedy.corners[0, 0]).all()  # the first glimpse cannot depend on the image
    gauss = create_model("ram", in_channels=3, num_classes=2, image_size=(32, 32), glimpse_size=8, location_std=0.5,
                         hidden_size=8)
    g = policy_sequences(gauss, data, [0, 1, 2, 3], 6)
    assert g.grid is None and g.corners.min() >= 0 and g.corners.max() <= 24


def test_points_from_csv_and_json(tmp_path):
    data = Birds({})
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("index,t,row,col\n2,1,20,20\n2,0,4,4\n0,0,16,16\n0,1,31,0\n")
    seqs = points_sequences(csv_file, data, glimpse_size=8)
    assert seqs.indices.tolist() == [0, 2] and seqs.num_glimpses == 2
    assert seqs.corners.tolist() == [[[12, 12], [24, 0]], [[0, 0], [16, 16]]]
    js = tmp_path / "p.json"
    js.write_text('{"002.jpg": [[4, 4], [20, 20]], "0": [[16, 16], [31, 0]]}')
    assert points_sequences(js, data, glimpse_size=8).corners.tolist() == seqs.corners.tolist()
    bad = tmp_path / "bad.csv"
    bad.write_text("index,t,row,col\n0,0,1,1\n1,0,2,2\n1,1,3,3\n")
    with pytest.raises(DataError, match="same number of glimpses"):
        points_sequences(bad, data, glimpse_size=8)
    bad.write_text("image,t,y,x\n")
    with pytest.raises(DataError, match="header"):
        points_sequences(bad, data, glimpse_size=8)
    js.write_text('{"nope.jpg": [[1, 1]]}')
    with pytest.raises(DataError, match="nope.jpg"):
        points_sequences(js, data, glimpse_size=8)
