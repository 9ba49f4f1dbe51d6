"""Glimpse-sequence files: round trips, the retina convention, lookup, merging, validation, released text format."""

import json

import pytest
import torch

from foveal.data import DataError
from foveal.retina import LocationGrid, top_left
from foveal.sequences import FORMAT, VERSION, GlimpseSequences, export_official, import_official, sequence_paths

GRID = LocationGrid.from_stride((12, 10), 4, 2)  # rows 0..8, cols 0..6


class Split:
    """A split with image ids, as folder datasets have."""

    name, split, image_shape = "toy", "train", (1, 12, 10)

    def __init__(self, n=20):
        self.n = n

    def __len__(self):
        return self.n

    def image_id(self, i):
        return f"img{i:03d}.jpg"


def maps_for(n, T, g):
    """Random maps, some steps NaN (not computed)."""
    maps = torch.rand(n, T, *GRID.shape, generator=g)
    return maps.masked_fill(torch.rand(n, T, 1, 1, generator=g) < 0.3, float("nan"))


def make(n=5, T=3, maps=True, ids=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(len(GRID), (n, T), generator=g)
    indices = torch.randperm(20, generator=g)[:n]
    return GlimpseSequences(
        "toy", "train", (12, 10), 4, indices, GRID.corners()[cells], grid=GRID,
        ids=[f"img{i:03d}.jpg" for i in indices.tolist()] if ids else None, task="attr", method="nogs",
        epe_maps=maps_for(n, T, g) if maps else None, provenance={"seed": seed, "nested": {"a": [1, 2]}})


def test_save_load_round_trip_and_header(tmp_path):
    seqs = make()
    seqs.save(tmp_path / "s")
    header = json.loads((tmp_path / "s.json").read_text())
    assert header["format"] == FORMAT and header["version"] == VERSION == 1
    assert (header["num_sequences"], header["num_glimpses"], header["tensors_file"]) == (5, 3, "s.safetensors")
    for name in ("s", "s.json", "s.safetensors"):
        again = GlimpseSequences.load(tmp_path / name, dataset=Split())
        assert again == seqs and again.grid == GRID and again.source == str(tmp_path / "s.json")
    assert torch.isnan(again.epe_maps).any()  # NaN survives and compares equal
    assert again != make(seed=1)
    plain = make(maps=False, ids=False)
    plain.save(tmp_path / "p.json")
    assert GlimpseSequences.load(tmp_path / "p") == plain and not list(tmp_path.glob(".*tmp*"))


def test_locations_match_retina_top_left():
    seqs = make(n=7, T=4)
    loc = seqs.locations()
    assert loc.dtype == torch.float32 and loc.shape == (7, 4, 2) and loc.abs().max() <= 1
    assert torch.equal(top_left(loc, (12, 10), 4), seqs.corners)
    cells = GRID.corner_to_index(seqs.corners)
    assert torch.equal(loc, GRID.index_to_location(cells))


def test_lookup_gives_nan_rows_for_missing_images():
    seqs = make(n=4, T=2)
    query = torch.tensor([seqs.indices[2].item(), 99, seqs.indices[0].item(), -1, seqs.indices[2].item()])
    loc, has = seqs.lookup(query)
    assert has.tolist() == [True, False, True, False, True] and loc.shape == (5, 2, 2)
    assert torch.equal(loc[0], seqs.locations()[2]) and torch.equal(loc[2], seqs.locations()[0])
    assert torch.isnan(loc[[1, 3]]).all() and not torch.isnan(loc[has]).any()
    empty = make(n=4).subset(0)
    loc, has = empty.lookup(torch.tensor([1, 2]))
    assert len(empty) == 0 and not has.any() and torch.isnan(loc).all()


def test_subset_and_merge_of_shards():
    seqs = make(n=6)
    even = torch.arange(6) % 2 == 0
    a, b = seqs.subset(even), seqs.subset(~even)
    assert len(a) == 3 and a.ids == [seqs.ids[i] for i in (0, 2, 4)]
    assert torch.allclose(a.epe_maps, seqs.epe_maps[even], rtol=0, atol=0, equal_nan=True)
    merged = GlimpseSequences.merge([b, a])
    order = torch.argsort(seqs.indices)
    assert merged == seqs.subset(order) and torch.equal(merged.indices, seqs.indices.sort().values)
    assert seqs.subset(2) == seqs.subset(torch.tensor([0, 1]))
    with pytest.raises(DataError, match="disjoint parts"):
        GlimpseSequences.merge([a, a])
    other = seqs.subset(~even)
    other.method = "random"
    with pytest.raises(DataError, match="field 'method': expected 'nogs'.*found 'random'"):
        GlimpseSequences.merge([a, other])
    with pytest.raises(DataError, match="field 'epe_maps'"):
        GlimpseSequences.merge([a, make(n=3, maps=False, seed=5)])


def test_construction_errors_name_the_field():
    c = GRID.corners()[:2][None]  # [1, 2, 2]
    with pytest.raises(DataError, match=r"field 'corners': expected top-left pixels in \[0, 8\] x \[0, 6\]"):
        GlimpseSequences("toy", "train", (12, 10), 4, torch.tensor([0]), torch.tensor([[[9, 0]]]))
    with pytest.raises(DataError, match="field 'corners': expected top-left pixels on the grid"):
        GlimpseSequences("toy", "train", (12, 10), 4, torch.tensor([0]), torch.tensor([[[1, 0]]]), grid=GRID)
    with pytest.raises(DataError, match="field 'indices': expected unique"):
        GlimpseSequences("toy", "train", (12, 10), 4, torch.tensor([3, 3]), c.expand(2, 2, 2))
    with pytest.raises(DataError, match="field 'epe_maps': expected a grid"):
        GlimpseSequences("toy", "train", (12, 10), 4, torch.tensor([0]), c, epe_maps=torch.zeros(1, 2, 5, 4))
    with pytest.raises(DataError, match=r"field 'epe_maps': expected shape \[1, 2, 5, 4\]"):
        GlimpseSequences("toy", "train", (12, 10), 4, torch.tensor([0]), c, grid=GRID, epe_maps=torch.zeros(1, 2, 4, 5))
    with pytest.raises(DataError, match="field 'corners': expected an integer tensor"):
        GlimpseSequences("toy", "train", (12, 10), 4, torch.tensor([0]), c.float())


def test_validate_against_dataset_and_bad_files(tmp_path):
    seqs = make()
    seqs.validate(Split())
    with pytest.raises(DataError, match=r"field 'indices': expected positions < 10 .* found 1\d"):
        make(n=12).validate(Split(10))
    wrong_size = Split()
    wrong_size.image_shape = (1, 12, 12)
    with pytest.raises(DataError, match=r"field 'image_size': expected \(12, 12\).*found \(12, 10\)"):
        seqs.validate(wrong_size)
    bad_ids = make()
    bad_ids.ids[1] = "other.jpg"
    with pytest.raises(DataError, match="field 'ids': expected 'img.*found 'other.jpg'"):
        bad_ids.validate(Split())
    other_split = Split()
    other_split.split = "test"
    with pytest.raises(DataError, match="field 'split': expected 'test'"):
        seqs.validate(other_split)

    seqs.save(tmp_path / "s")
    json_path, st_path = sequence_paths(tmp_path / "s")
    header = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**header, "version": 2}))
    with pytest.raises(DataError, match=r"s.json: field 'version': expected 1.*found 2"):
        GlimpseSequences.load(tmp_path / "s")
    json_path.write_text(json.dumps({**header, "format": "foveal-checkpoint"}))
    with pytest.raises(DataError, match="field 'format'"):
        GlimpseSequences.load(tmp_path / "s")
    json_path.write_text(json.dumps({**header, "num_glimpses": 4}))
    with pytest.raises(DataError, match=r"tensor 'corners': expected shape \[5, 4, 2\]"):
        GlimpseSequences.load(tmp_path / "s")
    json_path.write_text(json.dumps(header))
    with pytest.raises(DataError, match="field 'ids'"):
        GlimpseSequences.load(tmp_path / "s", dataset=bad_ids_dataset())
    st_path.write_bytes(st_path.read_bytes()[:-1] + b" ")
    with pytest.raises(DataError, match="tensors_sha256"):
        GlimpseSequences.load(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        GlimpseSequences.load(tmp_path / "missing")


def bad_ids_dataset():
    d = Split()
    d.image_id = lambda i: f"x{i}.png"
    return d


def test_official_export_import_round_trip(tmp_path):
    seqs = make(n=4, T=3, maps=False)
    paths = export_official(seqs, tmp_path / "txt")
    assert [p.name for p in paths] == [f"img{i:03d}.txt" for i in seqs.indices.tolist()]
    r, c = seqs.corners[0, 0].tolist()
    assert paths[0].read_text().splitlines()[0] == f"{r}, {c}" and len(paths[0].read_text().splitlines()) == 3
    back = import_official(tmp_path / "txt", dataset_name="toy", split="train", image_size=(12, 10), glimpse_size=4,
                           dataset=Split(), grid=GRID)
    order = torch.argsort(seqs.indices)
    assert torch.equal(back.indices, seqs.indices[order]) and torch.equal(back.corners, seqs.corners[order])
    assert back.ids == [seqs.ids[i] for i in order.tolist()] and back.method == "imported"

    # no ids: files named by index; blank lines, spaces and a CUB-style path line are tolerated
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "3.txt").write_text("\n  0, 2\n\n4 ,6  \n")
    (folder / "11.txt").write_text("birds/001.jpg\n8,0\n0, 0\n")
    plain = import_official(folder, dataset_name="toy", split="train", image_size=(12, 10), glimpse_size=4)
    assert plain.indices.tolist() == [3, 11] and plain.corners.tolist() == [[[0, 2], [4, 6]], [[8, 0], [0, 0]]]
    (folder / "5.txt").write_text("0, 2\n4; 6\n")
    with pytest.raises(DataError, match=r"5.txt line 2: expected 'r, c'.*found '4; 6'"):
        import_official(folder, dataset_name="toy", split="train", image_size=(12, 10), glimpse_size=4)
    (folder / "5.txt").write_text("0, 2\n")
    with pytest.raises(DataError, match="5.txt: expected 2 glimpses"):
        import_official(folder, dataset_name="toy", split="train", image_size=(12, 10), glimpse_size=4)
    (folder / "5.txt").write_text("0, 2\n1, 1\n")
    with pytest.raises(DataError, match="on the grid"):
        import_official(folder, dataset_name="toy", split="train", image_size=(12, 10), glimpse_size=4, grid=GRID)
    (folder / "5.txt").unlink()
    (folder / "x.txt").write_text("0, 2\n1, 1\n")
    with pytest.raises(DataError, match="x.txt: expected a file named <index>.txt"):
        import_official(folder, dataset_name="toy", split="train", image_size=(12, 10), glimpse_size=4)


def test_spread_counts_places_and_their_entropy_per_step(tmp_path, capsys):
    from foveal.cli import main

    # Step 1: one place for all four images; step 2: two places, 3 + 1 images.
    cells = torch.tensor([[0, 1], [0, 1], [0, 1], [0, 5]])
    seqs = GlimpseSequences("toy", "train", (12, 10), 4, torch.arange(4), GRID.corners()[cells], grid=GRID)
    (n1, h1), (n2, h2) = seqs.spread()
    assert (n1, h1) == (1, 0.0) and n2 == 2
    assert h2 == pytest.approx(-(0.75 * torch.log(torch.tensor(0.75)) + 0.25 * torch.log(torch.tensor(0.25))).item())
    seqs.save(tmp_path / "s")
    assert main(["sequences", "info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert f"uniform over the grid = {torch.log(torch.tensor(float(len(GRID)))).item():.2f}): t1 1 (0.00)  t2 2 (0.56)" in out
