"""The sequences released with Harvey et al. (2021), in their exact layouts: import, validate, export byte for
byte, the release's grid, the CelebA-HQ split they supervise, the task they were made for, and training."""

import csv
from pathlib import Path

import pytest
import torch

from foveal.cli import main
from foveal.config import apply_overrides, load_config
from foveal.data import CELEBA_ATTRIBUTES, DataError, build_dataset
from foveal.retina import LocationGrid
from foveal.sequences import CUB_LAYOUT, GlimpseSequences, export_official, import_official, read_image_map
from foveal.training.partial_supervision import PartialSupervision, PartialSupervisionConfig
from toys import RELEASE_GRID, RELEASE_VALUES, celeba_corners, cub_release_file, make_celebhq, make_cub, \
    write_celeba_release  # tests/toys.py: the release's layouts

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

MALE = CELEBA_ATTRIBUTES.index("Male")


# ------------------------------------------------------------------------------------------------ helpers
def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------------------------------- grid
def test_the_release_grid_is_numpys_linspace_and_the_cli_can_say_it():
    grid = LocationGrid.from_linspace((224, 224), 16, 0, 207, 50)
    assert list(grid.rows) == list(grid.cols) == RELEASE_VALUES
    assert grid.rows[:6] == (0, 4, 8, 12, 16, 21) and grid.rows[-2:] == (202, 207)
    assert LocationGrid.from_spec(RELEASE_GRID, (224, 224), 16) == grid
    spread = LocationGrid.from_count((224, 224), 16, 50)
    assert spread.rows[-1] == 208 and spread != grid  # not the release's ...
    # ... but within 2 px of it: a model on the 50 x 50 count grid (off_grid: snap) moves a released glimpse by
    # at most 2 px; 185 and 202 lie halfway between two cells and snap to the lower one (183, 200)
    snapped = spread.corners()[spread.nearest_index(grid.locations())]
    assert int((snapped - grid.corners()).abs().max()) == 2
    assert {r: s for (r, _), (s, _) in zip(grid.corners().tolist(), snapped.tolist()) if s < r} == {185: 183, 202: 200}
    assert LocationGrid.from_spec("0,4,8", (16, 16), 4) == LocationGrid((16, 16), 4, (0, 4, 8), (0, 4, 8))
    assert LocationGrid.from_spec("rows=0,4;cols=0,8,12", (16, 16), 4).shape == (2, 3)
    assert LocationGrid.from_spec("stride:4", (16, 16), 4) == LocationGrid.from_stride((16, 16), 4, 4)
    assert LocationGrid.from_spec("3x2", (28, 28), 8) == LocationGrid.from_count((28, 28), 8, (3, 2))
    with pytest.raises(ValueError, match=r"grid 'linspace:0:3:10'.*10 distinct pixels in 0..3"):
        LocationGrid.from_spec("linspace:0:3:10", (16, 16), 4)
    with pytest.raises(ValueError, match=r"grid 'every4': expected N, RxC, stride:S, linspace:START:STOP:NUM"):
        LocationGrid.from_spec("every4", (16, 16), 4)
    with pytest.raises(ValueError, match=r"grid '0,8,4'.*LocationGrid.rows: expected strictly increasing"):
        LocationGrid.from_spec("0,8,4", (16, 16), 4)
    with pytest.raises(ValueError, match=r"grid '0,4,20'.*top-left pixels in \[0, 12\]"):
        LocationGrid.from_spec("0,4,20", (16, 16), 4)


# ------------------------------------------------------------------------------------------------ CelebA-HQ
def test_celeba_release_imports_by_row_validates_and_exports_byte_for_byte(tmp_path, capsys):
    make_celebhq(tmp_path / "celebhq")
    released = write_celeba_release(tmp_path / "Male")
    out = tmp_path / "seqs" / "male"
    command = ["sequences", "import", str(tmp_path / "Male"), str(out), "--dataset", "celeba-hq", "--split",
               "annotate", "--data-root", str(tmp_path / "celebhq"), "--option", "attribute=Male", "--option",
               "image_size=224", "--glimpse-size", "16", "--grid", RELEASE_GRID]
    assert main(command) == 0, capsys.readouterr().err
    seqs = GlimpseSequences.load(out)
    assert seqs.split == "annotate" and seqs.indices.tolist() == [0, 1, 2] and seqs.task == "Male"
    assert seqs.ids == ["000000.png", "000001.png", "000002.png"] and seqs.image_size == (224, 224)
    assert seqs.corners.tolist() == [celeba_corners(r) for r in range(3)]
    assert list(seqs.grid.rows) == RELEASE_VALUES and seqs.provenance["match"] == "row"
    assert seqs.provenance["released"]["verbatim"] is True
    assert main(["sequences", "validate", str(out)]) == 0  # rebuilds the dataset from the recorded options
    assert "valid for celeba-hq/annotate (3 of 3 images)" in capsys.readouterr().out
    assert main(["sequences", "export", str(out), str(tmp_path / "back")]) == 0
    assert folder_bytes(tmp_path / "back") == {f"{r}.txt": b for r, b in released.items()}
    # The release's CelebA-HQ layout can be asked for by name too (row-named, T lines).
    export_official(seqs, tmp_path / "rows", layout="celeba-hq")
    assert folder_bytes(tmp_path / "rows") == folder_bytes(tmp_path / "back")
    # foveal's own layout names files by image id; that folder imports back to the same sequences
    export_official(seqs, tmp_path / "ids", layout="foveal")
    assert sorted(folder_bytes(tmp_path / "ids")) == ["000000.txt", "000001.txt", "000002.txt"]
    dataset = build_dataset("celeba-hq", "annotate", root=tmp_path / "celebhq", attribute="Male", image_size=224)
    again = import_official(tmp_path / "ids", dataset_name="celeba-hq", split="annotate", image_size=(224, 224),
                            glimpse_size=16, dataset=dataset)
    assert again.provenance["match"] == "id" and torch.equal(again.corners, seqs.corners)


def test_a_file_without_final_newline_or_with_stray_spaces_round_trips_as_read(tmp_path):
    folder = tmp_path / "rel"
    folder.mkdir()
    (folder / "0.txt").write_bytes(b"0, 4\r\n8, 12")  # CRLF, no final newline
    (folder / "1.txt").write_bytes(b"16, 21\r\n25, 29")
    seqs = import_official(folder, dataset_name="toy", split="annotate", image_size=(224, 224), glimpse_size=16)
    assert seqs.provenance["released"]["layout"] == {"path_line": "none", "separator": ", ", "newline": "\r\n",
                                                     "final_newline": False}
    export_official(seqs, tmp_path / "back")
    assert folder_bytes(tmp_path / "back") == folder_bytes(folder)
    (folder / "1.txt").write_bytes(b"16, 21\r\n\r\n25 ,29  ")  # tolerated when read, not reproducible
    assert import_official(folder, dataset_name="toy", split="annotate", image_size=(224, 224),
                           glimpse_size=16).provenance["released"]["verbatim"] is False


def test_annotate_train_split_holds_the_annotated_rows(tmp_path):
    make_celebhq(tmp_path)
    plain = build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male")  # annotations.txt by default
    both = build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male", include_annotate=True)
    named = build_dataset("celeba-hq", "annotate+train", root=tmp_path, attribute="Male")
    assert (plain.split, plain.first_row, len(plain), plain.contains_splits) == ("train", 3, 34, {})
    assert (both.split, both.first_row, len(both), both.contains_splits) == ("annotate+train", 0, 37, {"annotate": 0})
    assert [named.image_id(i) for i in range(len(named))] == [both.image_id(i) for i in range(len(both))]
    assert both.image_id(2) == "000002.png" and both.task == "Male"
    with pytest.raises(DataError, match="include_annotate: expected true or false, found 'yes'"):
        build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male", include_annotate="yes")

    annotate = build_dataset("celeba-hq", "annotate", root=tmp_path, attribute="Male", image_size=224)
    both = build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male", include_annotate=True, image_size=224)
    plain = build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male", image_size=224)
    write_celeba_release(tmp_path / "rel")
    seqs = import_official(tmp_path / "rel", dataset_name="celeba-hq", split="annotate", image_size=(224, 224),
                           glimpse_size=16, dataset=annotate)
    seqs.validate(both)  # the annotate split is rows 0..2 of annotate+train
    aligned = seqs.aligned_to(both)
    assert aligned.split == "annotate+train" and aligned.indices.tolist() == [0, 1, 2]
    assert aligned.provenance["aligned_from_split"] == "annotate" and aligned.ids == seqs.ids
    assert seqs.aligned_to(annotate) is seqs
    with pytest.raises(DataError, match=r"rel: field 'split': expected 'train' \(the dataset's\), found 'annotate'; "
                                        r"to train on the annotated rows.*include_annotate: true"):
        seqs.validate(plain)
    # Row-named files of rows outside the split are refused, naming the file and the split's rows.
    with pytest.raises(DataError, match=r"0.txt: expected a row of celeba-hq/train \(rows 3 .. 36\), found row 0"):
        import_official(tmp_path / "rel", dataset_name="celeba-hq", split="train", image_size=(224, 224),
                        glimpse_size=16, dataset=plain)


def test_the_task_a_file_was_made_for_is_recorded_and_checked(tmp_path, capsys):
    make_celebhq(tmp_path)
    write_celeba_release(tmp_path / "rel")
    male = build_dataset("celeba-hq", "annotate", root=tmp_path, attribute="Male", image_size=224)
    smiling = build_dataset("celeba-hq", "annotate", root=tmp_path, attribute="Smiling", image_size=224)
    seqs = import_official(tmp_path / "rel", dataset_name="celeba-hq", split="annotate", image_size=(224, 224),
                           glimpse_size=16, dataset=male)
    assert seqs.task == "Male" and seqs.made_for(male) == "Male"
    seqs.validate(male)
    with pytest.raises(DataError, match=r"rel: field 'task': the sequences were made for 'Male', the dataset "
                                        r"celeba-hq/annotate is labelled by 'Smiling'"):
        seqs.validate(smiling)
    with pytest.raises(DataError, match=r"task: the sequences are said to be made for 'Smiling'.*labelled by 'Male'"):
        import_official(tmp_path / "rel", dataset_name="celeba-hq", split="annotate", image_size=(224, 224),
                        glimpse_size=16, dataset=male, task="Smiling")
    # An annotator's file records the attribute in its config (here by column index): that counts too.
    untagged = GlimpseSequences("celeba-hq", "annotate", (224, 224), 16, seqs.indices, seqs.corners,
                                provenance={"config": {"data_options": {"attribute": MALE}}}, source="nogs.json")
    assert untagged.made_for(smiling) == "Male"
    with pytest.raises(DataError, match="nogs.json: field 'task': the sequences were made for 'Male'"):
        untagged.validate(smiling)
    # Importing CelebA-HQ files without the dataset needs to be told the attribute.
    command = ["sequences", "import", str(tmp_path / "rel"), str(tmp_path / "x"), "--dataset", "celeba-hq",
               "--split", "annotate", "--no-dataset", "--image-size", "224", "--glimpse-size", "16"]
    assert main(command) == 2
    assert "expected --task ATTRIBUTE (or --option attribute=...) with --no-dataset" in capsys.readouterr().err
    assert main(command + ["--task", "Male", "--grid", "50", "--grid-stride", "4"]) == 2
    assert "expected one of --grid, --grid-stride, found both" in capsys.readouterr().err
    assert main(command + ["--task", "Male", "--grid", RELEASE_GRID]) == 0
    assert GlimpseSequences.load(tmp_path / "x").task == "Male"
    # `foveal sequences validate` refuses it for another attribute, naming both.
    assert main(["sequences", "validate", str(tmp_path / "x"), "--data-root", str(tmp_path), "--option",
                 "attribute=Smiling", "--option", "image_size=224"]) == 2
    assert "field 'task': the sequences were made for 'Male', the dataset celeba-hq/annotate is labelled by " \
           "'Smiling'" in capsys.readouterr().err
    assert main(["sequences", "validate", str(tmp_path / "x"), "--data-root", str(tmp_path), "--option",
                 "attribute=Male", "--option", "image_size=224"]) == 0


def test_import_and_export_refuse_to_overwrite_without_force(tmp_path, capsys):
    write_celeba_release(tmp_path / "rel")
    command = ["sequences", "import", str(tmp_path / "rel"), str(tmp_path / "out"), "--dataset", "toy", "--split",
               "annotate", "--no-dataset", "--image-size", "224", "--glimpse-size", "16"]
    assert main(command) == 0
    first = (tmp_path / "out.json").read_bytes()
    (tmp_path / "rel" / "0.txt").write_text("0, 0\n0, 0\n0, 0\n0, 0\n0, 0\n")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'out.json'}: sequences import: expected a new output, found an existing file; pass "
            "--force") in err
    assert (tmp_path / "out.json").read_bytes() == first  # untouched
    assert main(command + ["--force"]) == 0
    assert GlimpseSequences.load(tmp_path / "out").corners[0].tolist() == [[0, 0]] * 5
    assert main(["sequences", "export", str(tmp_path / "out"), str(tmp_path / "rel")]) == 2
    assert "0.txt: expected a new file, found one (3 of the 3 files exist); pass overwrite=True (--force)" in \
        capsys.readouterr().err
    assert main(["sequences", "export", str(tmp_path / "out"), str(tmp_path / "rel"), "--force"]) == 0


# ------------------------------------------------------------------------------------------------------ CUB
def test_cub_release_needs_an_image_map_then_imports_and_exports_byte_for_byte(tmp_path, capsys):
    make_cub(tmp_path / "CUB_200_2011")
    train = build_dataset("cub", "train", root=tmp_path / "CUB_200_2011", image_size=64)
    assert train.cub_ids == [1, 2, 4, 5, 6, 8, 9, 10, 12, 14] and train.resolve_image("5") == "002.Bird_2/img_005.png"
    birds = tmp_path / "birds"
    # Release numbering n (its own crop) != CUB id; file k != n either.
    pairs = {0: (17, 5, [[0, 8], [32, 0], [8, 8]]), 1: (3, 1, [[16, 16], [0, 0], [24, 32]]),
             2: (40, 9, [[32, 32], [8, 24], [0, 16]])}
    released = {f"{k}.txt": cub_release_file(birds, k, n, c) for k, (n, _, c) in pairs.items()}
    assert all(not b.endswith(b"\n") and b.splitlines()[-1].startswith(b"data/birds/train/images/")
               for b in released.values())
    base = ["sequences", "import", str(birds), str(tmp_path / "cub"), "--dataset", "cub", "--split", "train",
            "--data-root", str(tmp_path / "CUB_200_2011"), "--option", "image_size=64", "--glimpse-size", "32",
            "--grid", "stride:8"]
    assert main(base) == 2
    assert (f"{birds / '0.txt'}: its image path 'data/birds/train/images/17.png' is no image id of cub/train"
            in capsys.readouterr().err)
    # The map names released images by path, file name or number, CUB images by images.txt id or path.
    mapping = tmp_path / "release-to-cub.txt"
    mapping.write_text("# released image  CUB image\ndata/birds/train/images/17.png 5\n3.png 002.Bird_2/img_001.png\n"
                       "40 9\n")
    assert main(base + ["--image-map", str(mapping)]) == 0, capsys.readouterr().err
    seqs = GlimpseSequences.load(tmp_path / "cub")
    # CUB ids 1, 5, 9 are train positions 0, 3, 6
    assert seqs.indices.tolist() == [0, 3, 6] and seqs.ids == [train.image_id(i) for i in (0, 3, 6)]
    assert seqs.corners.tolist() == [pairs[1][2], pairs[0][2], pairs[2][2]]
    assert seqs.provenance["released"]["layout"] == {"path_line": "last", "separator": ", ", "newline": "\n",
                                                     "final_newline": False}
    assert seqs.provenance["image_map"] == str(mapping) and seqs.task is None
    assert main(["sequences", "validate", str(tmp_path / "cub")]) == 0
    assert main(["sequences", "export", str(tmp_path / "cub"), str(tmp_path / "back")]) == 0
    assert folder_bytes(tmp_path / "back") == released
    assert CUB_LAYOUT.render(pairs[0][2], "data/birds/train/images/17.png") == released["0.txt"]


def test_cub_map_and_layout_errors_name_the_file_and_line(tmp_path):
    make_cub(tmp_path / "CUB_200_2011")
    train = build_dataset("cub", "train", root=tmp_path / "CUB_200_2011", image_size=64)
    bad = tmp_path / "map.txt"
    bad.write_text("17.png 5\n18.png 5 extra\n")
    with pytest.raises(DataError, match=r"map.txt line 2: expected '<released image> <dataset image>' \(2 fields\), "
                                        r"found 3"):
        read_image_map(bad, train.resolve_image)
    bad.write_text("17.png 5\n18.png 999\n")
    with pytest.raises(DataError, match=r"map.txt line 2: expected a CUB image id of images.txt \(1..14\), found 999"):
        read_image_map(bad, train.resolve_image)
    bad.write_text("17.png 5\n17.png 6\n")
    with pytest.raises(DataError, match=r"map.txt line 2: expected each released image once, found '17.png' again"):
        read_image_map(bad)
    with pytest.raises(FileNotFoundError, match="nomap.txt: image map file not found"):
        read_image_map(tmp_path / "nomap.txt")

    birds = tmp_path / "birds"
    cub_release_file(birds, 0, 17, [[0, 8], [32, 0]])
    cub_release_file(birds, 1, 18, [[8, 8], [0, 0]])
    test_image = {"17": "5", "18": "3"}  # CUB id 3 is a test image
    kwargs = dict(dataset_name="cub", split="train", image_size=(64, 64), glimpse_size=32, dataset=train)
    with pytest.raises(DataError, match=r"1.txt: image path 'data/birds/train/images/18.png' maps to "
                                        r"'002.Bird_2/img_003.png': expected an image of cub/train, found it "
                                        r"nowhere in the split \(another split\?\)"):
        import_official(birds, image_map={k: train.resolve_image(v) for k, v in test_image.items()}, **kwargs)
    with pytest.raises(DataError, match=r"1.txt: image path 'data/birds/train/images/18.png': expected an entry in "
                                        r"the image map, found none"):
        import_official(birds, image_map={"17": train.image_id(3)}, **kwargs)
    seqs = import_official(birds, image_map={"17": train.image_id(3)}, skip_unmatched=True, **kwargs)
    assert seqs.indices.tolist() == [3] and seqs.provenance["skipped"] == ["1.txt"]
    (birds / "1.txt").write_bytes(b"8, 8\ndata/birds/train/images/18.png\n0, 0")
    with pytest.raises(DataError, match=r"1.txt line 3: expected the image path line to be the last line, found "
                                        r"'0, 0' after it"):
        import_official(birds, image_map={"17": train.image_id(3)}, **kwargs)
    (birds / "1.txt").write_bytes(b"8, 8\n0, 0\ndata/birds/train/images/18.png")
    with pytest.raises(DataError, match=r"birds: field 'corners': expected top-left pixels on the grid"):
        import_official(birds, image_map={"17": train.image_id(3), "18": train.image_id(4)},
                        grid=LocationGrid.from_stride((64, 64), 32, 16), **kwargs)  # rows 0, 16, 32: 8 is off it
    with pytest.raises(DataError, match=r"match 'id': expected a dataset with image ids, found none given"):
        import_official(birds, dataset_name="cub", split="train", image_size=(64, 64), glimpse_size=32, match="id")
    with pytest.raises(DataError, match=r"birds: match: expected one of \('auto', 'id', 'row'\), found 'name'"):
        import_official(birds, match="name", **kwargs)


# ---------------------------------------------------------------------------------------------- training
TINY = ["model.hidden_size=8", "model.glimpse_hidden=8", "model.location_hidden=8", "model.feature_size=8",
        "train.iterations=4", "train.batch_size=8", "train.val_every=2", "train.val_batches=1", "train.log_every=1",
        "train.eval_batch_size=8", "train.tensorboard=false", "train.device=cpu", "evaluate.batch_size=8",
        "evaluate.examples=0", "evaluate.figures=false"]


def test_ps_nogs_trains_on_the_released_celeba_layout_through_the_built_in_config(tmp_path, capsys):
    make_celebhq(tmp_path / "celebhq")
    write_celeba_release(tmp_path / "Male")
    assert main(["sequences", "import", str(tmp_path / "Male"), str(tmp_path / "male"), "--dataset", "celeba-hq",
                 "--split", "annotate", "--data-root", str(tmp_path / "celebhq"), "--option", "attribute=Male",
                 "--option", "image_size=224", "--glimpse-size", "16", "--grid", RELEASE_GRID]) == 0
    from foveal.recipes.run import train_run

    cfg = apply_overrides(load_config("ps-nogs-celeba-hq-released"),
                          [f"data.root={tmp_path / 'celebhq'}", f"algorithm.sequences={tmp_path / 'male'}",
                           "algorithm.supervised_fraction=0.5", *TINY])
    assert cfg["data"]["include_annotate"] is True and cfg["algorithm"]["off_grid"] == "snap"
    results = train_run(cfg, tmp_path / "run")
    assert results["dataset"] == "celeba-hq" and results["split"] == "test" and results["num_images"] == 4
    with open(tmp_path / "run" / "metrics.csv") as f:
        supervised = [float(r["value"]) for r in csv.DictReader(f) if r["name"] == "supervised"]
    assert len(supervised) == 4 and sum(supervised) > 0  # the released rows were supervised
    # The same file, used to train another attribute, is refused with one line naming both.
    other = apply_overrides(cfg, ["data.attribute=Smiling"])
    with pytest.raises(DataError, match=r"male.json: field 'task': the sequences were made for 'Male', the dataset "
                                        r"celeba-hq/annotate\+train is labelled by 'Smiling'"):
        train_run(other, tmp_path / "run-smiling")
    # Without include_annotate the train split does not hold the annotated rows: refused, saying what to set.
    plain = apply_overrides(cfg, ["data.include_annotate=false"])
    with pytest.raises(DataError, match="found 'annotate'; to train on the annotated rows.*include_annotate: true"):
        train_run(plain, tmp_path / "run-plain")


def test_partial_supervision_prepare_moves_the_file_into_the_training_split(tmp_path):
    make_celebhq(tmp_path)
    write_celeba_release(tmp_path / "rel")
    annotate = build_dataset("celeba-hq", "annotate", root=tmp_path, attribute="Male", image_size=224)
    seqs = import_official(tmp_path / "rel", dataset_name="celeba-hq", split="annotate", image_size=(224, 224),
                           glimpse_size=16, dataset=annotate)
    seqs.save(tmp_path / "male")
    alg = PartialSupervision(PartialSupervisionConfig(num_glimpses=5, sequences=str(tmp_path / "male")))
    train = build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male", image_size=224,
                          include_annotate=True)
    assert alg.prepare(train) is train
    assert alg.sequences.split == "annotate+train"
    locations, has = alg.sequences.lookup(torch.tensor([0, 2, 3, 20]))
    assert has.tolist() == [True, True, False, False]
    assert torch.equal(locations[:2], seqs.locations()[[0, 2]])
