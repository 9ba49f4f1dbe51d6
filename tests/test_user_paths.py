"""What a new user meets from ``--help`` alone: evaluate's folder and wording, warnings about a run that
builds but may not be what was meant, and where the dataset options are written."""

import json

import numpy as np
import yaml
from PIL import Image

from foveal.cli import main

from test_errors import MNIST28, refused, train
from test_run_folder import IMAGEFOLDER_RUN, image_folder


def test_evaluate_takes_a_run_folder_names_the_split_and_writes_eval_split(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(train(run)) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "val"]) == 0  # a run folder: its best checkpoint
    out = capsys.readouterr().out
    assert out.startswith("val accuracy: ") and "test accuracy" not in out, out
    assert json.loads((run / "eval-val" / "results.json").read_text())["split"] == "val"
    assert main(["evaluate", str(run)]) == 0  # no --split: the run's evaluate.split, as --help says
    assert capsys.readouterr().out.startswith("test accuracy: ")
    assert (run / "eval-test" / "results.json").exists() and not (run / "eval-default").exists()
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "a folder without checkpoints/best.json" in capsys.readouterr().err


def test_glimpses_that_see_under_1_percent_of_the_image_are_warned_about(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in "ab":
        (tmp_path / "big" / name).mkdir(parents=True)
        for k in range(10):
            Image.fromarray((rng.random((224, 224, 3)) * 255).astype(np.uint8)).save(tmp_path / "big" / name / f"{k}.png")
    base = ["data.name=imagefolder", f"data.root={tmp_path / 'big'}", "model.num_scales=1", "train.batch_size=8"]
    assert main(train(tmp_path / "r", *base, "model.glimpse_size=8")) == 0
    err = capsys.readouterr().err
    assert "warning: a glimpse sees 8x8 px (8 px, 1 scale) of the 224x224 images, 0.13 % of their area" in err, err
    assert "note:" not in err  # colour images
    assert main(train(tmp_path / "r2", *base, "model.glimpse_size=32")) == 0  # 2 % of the area: no warning
    assert "warning" not in capsys.readouterr().err


def test_grey_images_read_as_three_channels_are_noted(tmp_path, capsys):
    images = image_folder(tmp_path / "grey")
    run = [f"data.root={images}", "data.name=imagefolder", *IMAGEFOLDER_RUN]
    assert main(train(tmp_path / "r", *run)) == 0
    err = capsys.readouterr().err
    assert "is a grey image, read as 3 equal channels" in err and "data.grayscale=true" in err, err
    assert main(train(tmp_path / "r2", *run, "data.grayscale=true")) == 0
    assert "note:" not in capsys.readouterr().err


def test_list_shows_every_datasets_options(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    options = {lines[i].split()[0]: lines[i + 1].split() for i in range(len(lines) - 1)
               if lines[i + 1].strip().startswith("options:")}  # a dataset's row, then its options
    assert options["imagefolder"] == ["options:", "image_size,", "grayscale"], lines
    assert options["cluttered-<base>"][:4] == ["options:", "canvas,", "clutter,", "piece,"]


# ----------------------------------------------------------------------------- config messages: what the user typed


def test_config_errors_name_the_key_as_typed(tmp_path, capsys):
    refused(capsys, train(tmp_path / "r", "train.batch_size=0"), "train.batch_size: expected a positive integer")
    refused(capsys, train(tmp_path / "r", "model.glimpse_sise=4"), "model.glimpse_sise: unknown setting of model "
            "'ram'; did you mean model.glimpse_size?")
    refused(capsys, train(tmp_path / "r", "data.canvs=4"), "data.canvs: unknown option of dataset mnist5k")
    refused(capsys, train(tmp_path / "r", "algorithm.test_samples=0"), "algorithm.test_samples: expected")
    assert not (tmp_path / "r").exists()


def test_an_inherited_key_is_named_and_removed_with_null(tmp_path, capsys):
    config = yaml.safe_load(MNIST28.read_text())
    config["data"]["train_rows"] = [5000, None]  # inherited from a config made for a larger split
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(config))
    refused(capsys, train(tmp_path / "r", config=tmp_path / "mine.yaml"),
            "data.train_rows: expected [start, stop] with 0 <= start < stop <= 4000, the size of the train split "
            "of mnist5k, found [5000, None]")
    assert main(train(tmp_path / "r", "data.train_rows=null", config=tmp_path / "mine.yaml")) == 0
    assert "train_rows" not in yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["data"]
    capsys.readouterr()
    refused(capsys, train(tmp_path / "r2", "model.name=null"), "model.name cannot be removed")


def test_an_image_folder_of_odd_sizes_mixed_grey_and_colour_and_a_one_image_class(tmp_path, capsys):
    """The issue's own exercise: a folder the other tests do not use, trained and evaluated from --help alone."""
    rng = np.random.default_rng(0)
    sizes = [(37, 53), (64, 48), (31, 31), (80, 61)]
    for name, n in (("cat", 12), ("dog", 11), ("owl", 1)):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for k in range(n):
            h, w = sizes[k % 4]
            grey = k % 2 == 1
            pixels = (rng.random((h, w) if grey else (h, w, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{k}.{'png' if grey else 'jpg'}")
    run = tmp_path / "runs" / "photos"
    base = ["data.name=imagefolder", f"data.root={tmp_path / 'photos'}", "train.batch_size=8"]
    refused(capsys, train(run, *base), "expected the size of", "data.image_size=64")
    assert not (tmp_path / "runs").exists()
    assert main(train(run, *base, "data.image_size=[40, 48]")) == 0
    err = capsys.readouterr().err
    assert "note: the val split has no image of 1 of the 3 classes (owl)" in err, err
    assert "note: the test split has no image of 1 of the 3 classes (owl)" in err, err
    assert main(["evaluate", str(run), "--split", "val"]) == 0
    assert capsys.readouterr().out.startswith("val accuracy: ")
