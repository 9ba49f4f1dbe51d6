"""Sequences given by hand: PS-HGS (CUB parts) and user points."""

import pytest
import torch

from foveal.data import DataError
from foveal.retina import LocationGrid
from foveal.sequences import hgs_sequences, points_sequences, points_to_corners

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
