"""foveal.data folder datasets: CelebA-HQ (both annotation layouts), CUB-200-2011 and ImageFolder."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from foveal.data import CELEBA_ATTRIBUTES, DataError, build_dataset
from foveal.data.celeba import split_range
from toys import check_items  # tests/toys.py


def write_image(path: Path, h: int = 6, w: int = 5, value=None, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.full((h, w, 3), value, np.uint8) if value is not None
              else np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    Image.fromarray(pixels).save(path)
    return pixels


# ------------------------------------------------------------------------------------------------ CelebA-HQ
def make_celeba(root: Path, n: int = 12, layout: str = "a", image_dir: str = "CelebA-HQ-img", ext: str = "png"):
    values = np.random.default_rng(1).integers(0, 2, (n, 40))
    names = [f"{i:06d}.{ext}" for i in range(n)]
    for i, name in enumerate(names):
        write_image(root / image_dir / name, seed=i)
    if layout == "a":
        rows = [f"{name} " + " ".join(str(2 * v - 1) for v in row) for name, row in zip(names, values)]
        text = f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + "\n" + "\n".join(rows) + "\n"
        (root / "list_attr_celeba.txt").write_text(text)
    else:
        rows = [f"{name}  " + "  ".join(map(str, row)) for name, row in zip(names, values)]
        (root / "CelebAMask-HQ-attribute-anno.txt").write_text("\n".join(rows) + "\n")
    return names, values


@pytest.mark.parametrize("layout", ["a", "b"])
def test_celeba_layouts(tmp_path, layout):
    names, values = make_celeba(tmp_path, layout=layout)
    ds = build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male")
    male = CELEBA_ATTRIBUTES.index("Male")
    assert len(ds) == 10 and ds.image_shape == (3, 6, 5) and ds.class_names == ["not Male", "Male"]
    assert ds.attribute_names == CELEBA_ATTRIBUTES and ds.attributes.shape == (10, 40)
    assert np.array_equal(ds.attributes, values[:10]) and np.array_equal(ds.labels, values[:10, male])
    assert ds.image_id(3) == names[3]
    pixels = np.asarray(Image.open(tmp_path / "CelebA-HQ-img" / names[3]), dtype=np.float32) / 255
    assert torch.equal(ds[3]["image"], torch.from_numpy(pixels).permute(2, 0, 1))
    check_items(ds)
    by_index = build_dataset("celeba-hq", "train", root=tmp_path, attribute=male)
    assert np.array_equal(by_index.labels, ds.labels) and by_index.attribute == "Male"
    assert np.array_equal(build_dataset("celeba-hq", "train", root=tmp_path, attribute=str(male)).labels, ds.labels)
    resized = build_dataset("celeba-hq", "test", root=tmp_path, attribute="Smiling", image_size=16)
    assert resized.image_shape == (3, 16, 16) and len(resized) == 1 and resized.image_id(0) == names[11]
    check_items(resized)


def test_celeba_splits(tmp_path):
    names, _ = make_celeba(tmp_path, n=30, image_dir="images", ext="jpg")
    ids = {}
    for split in ("annotate", "train", "val", "test"):
        ds = build_dataset("celeba-hq", split, root=tmp_path, attribute=0)
        ids[split] = [ds.image_id(i) for i in range(len(ds))]
    assert {s: len(v) for s, v in ids.items()} == {"annotate": 2, "train": 22, "val": 3, "test": 3}
    assert sum(ids.values(), []) == names  # disjoint, covering, in annotation order
    assert split_range("annotate", 30000) == (0, 2000) and split_range("train", 30000) == (2000, 27000)
    assert split_range("val", 30000) == (27000, 27500) and split_range("test", 30000) == (27500, 30000)
    make_celeba(tmp_path / "small", n=12)
    with pytest.raises(DataError, match="split 'annotate'.*expected at least one image"):
        build_dataset("celeba-hq", "annotate", root=tmp_path / "small", attribute=0)


def test_celeba_errors(tmp_path):
    names, _ = make_celeba(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    attr.write_text("\n".join(["13"] + lines[1:]) + "\n")
    with pytest.raises(DataError, match="list_attr_celeba.txt: expected 13 image rows .*found 12"):
        build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male")
    broken = lines[:6] + [lines[6].rsplit(" ", 1)[0]] + lines[7:]
    attr.write_text("\n".join(broken) + "\n")
    with pytest.raises(DataError, match="list_attr_celeba.txt line 7: expected 40 attribute values, found 39"):
        build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male")
    attr.write_text("\n".join(lines[:4] + [lines[4].replace(" 1", " 2", 1)] + lines[5:]) + "\n")
    with pytest.raises(DataError, match="line 5: expected -1, 0 or 1"):
        build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male")
    attr.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="attribute: expected one of .*Male.*found 'Beard'"):
        build_dataset("celeba-hq", "train", root=tmp_path, attribute="Beard")
    with pytest.raises(DataError, match="attribute: expected an attribute name"):
        build_dataset("celeba-hq", "train", root=tmp_path)
    (tmp_path / "CelebA-HQ-img" / names[5]).unlink()
    with pytest.raises(DataError, match=f"lists image '{names[5]}'.*no such file"):
        build_dataset("celeba-hq", "train", root=tmp_path, attribute="Male")


def test_celeba_native_sizes_and_stem_fallback(tmp_path):
    names, _ = make_celeba(tmp_path, layout="b", image_dir="faces")
    write_image(tmp_path / "faces" / names[2], h=7, w=5)
    Image.open(tmp_path / "faces" / names[4]).save(tmp_path / "faces" / "000004.jpg")
    (tmp_path / "faces" / names[4]).unlink()  # listed as .png, present as .jpg
    ds = build_dataset("celeba-hq", "train", root=tmp_path, attribute="Young", image_dir="faces")
    assert ds.paths[4].name == "000004.jpg" and ds.image_id(4) == names[4]
    check_items(ds, count=2)
    with pytest.raises(DataError, match=f"{names[2]}: expected the size of .*{names[0]}.*found 7x5"):
        ds[2]


# ------------------------------------------------------------------------------------------------ CUB
def make_cub(root: Path, n: int = 13, test_ids=(3, 7, 11)) -> None:
    """Image 1 is 100x100 (W x H), white inside its box (x 10, y 20, w 40, h 80); two classes; 3 parts."""
    lines = {k: [] for k in ("images", "labels", "split", "boxes", "locs")}
    for i in range(1, n + 1):
        cls = 1 + i % 2
        path = f"{cls:03d}.Bird_{cls}/img_{i:03d}.jpg"
        if i == 1:
            pixels = np.zeros((100, 100), np.uint8)
            pixels[20:100, 10:50] = 255
            (root / "images" / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / "images" / path.replace(".jpg", ".png"))
            path = path.replace(".jpg", ".png")  # lossless for the exact pixel check
            box = "10.0 20.0 40.0 80.0"
        else:
            write_image(root / "images" / path, h=30, w=40, seed=i)
            box = "5.0 4.0 20.0 16.0"
        lines["images"].append(f"{i} {path}")
        lines["labels"].append(f"{i} {cls}")
        lines["split"].append(f"{i} {0 if i in test_ids else 1}")
        lines["boxes"].append(f"{i} {box}")
        locs = ["30.0 60.0 1", "10.0 20.0 1", "0.0 0.0 0"] if i == 1 else ["8.0 9.0 1", "0.0 0.0 0", "15.0 10.0 1"]
        lines["locs"] += [f"{i} {p + 1} {loc}" for p, loc in enumerate(locs)]
    files = {"images.txt": "images", "image_class_labels.txt": "labels", "train_test_split.txt": "split",
             "bounding_boxes.txt": "boxes", "parts/part_locs.txt": "locs"}
    (root / "parts").mkdir(parents=True, exist_ok=True)
    for name, key in files.items():
        (root / name).write_text("\n".join(lines[key]) + "\n")
    (root / "classes.txt").write_text("1 001.Bird_1\n2 002.Bird_2\n")
    (root / "parts" / "parts.txt").write_text("1 beak\n2 left eye\n3 tail\n")


def test_cub_geometry_and_splits(tmp_path):
    make_cub(tmp_path)
    ds = build_dataset("cub", "train", root=tmp_path, image_size=20)
    assert ds.image_shape == (3, 20, 20) and ds.class_names == ["Bird_1", "Bird_2"] and ds.num_classes == 2
    assert ds.part_names == ["beak", "left eye", "tail"] and ds.image_id(0) == "002.Bird_2/img_001.png"
    assert ds.labels[0] == 1
    parts = ds.parts(0)  # x' = (x - 10) * 20 / 40, y' = (y - 20) * 20 / 80
    assert parts.dtype == np.float32 and parts.tolist() == [[10.0, 10.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    image = ds[0]["image"]
    assert torch.equal(image[:, 1:-1, 1:-1], torch.ones(3, 18, 18))  # the box was white (edges blend with outside)
    check_items(ds)
    wide = build_dataset("cub", "train", root=tmp_path, image_size=(16, 8))
    assert wide.image_shape == (3, 16, 8) and wide.parts(0)[0].tolist() == [4.0, 8.0, 1.0]
    assert build_dataset("cub", "train", root=tmp_path).image_shape == (3, 128, 128)
    number = {}
    for split in ("train", "val", "test"):
        d = build_dataset("cub", split, root=tmp_path)
        number[split] = [int(d.image_id(i).split("_")[-1][:3]) for i in range(len(d))]
    # training ids 1 2 4 5 6 8 9 10 12 13: the 10th (13) is val
    assert number == {"train": [1, 2, 4, 5, 6, 8, 9, 10, 12], "val": [13], "test": [3, 7, 11]}


def test_cub_errors(tmp_path):
    make_cub(tmp_path)
    boxes = (tmp_path / "bounding_boxes.txt").read_text()
    (tmp_path / "bounding_boxes.txt").write_text(boxes.replace("13 5.0", "14 5.0"))
    with pytest.raises(DataError, match="bounding_boxes.txt line 13: expected an image id of images.txt, found id 14"):
        build_dataset("cub", "train", root=tmp_path)
    (tmp_path / "bounding_boxes.txt").write_text("\n".join(boxes.splitlines()[:-1]))
    with pytest.raises(DataError, match="bounding_boxes.txt: expected a row for every id .*none for id 13"):
        build_dataset("cub", "train", root=tmp_path)
    (tmp_path / "bounding_boxes.txt").write_text(boxes)
    labels = (tmp_path / "image_class_labels.txt").read_text()
    (tmp_path / "image_class_labels.txt").write_text(labels.replace("4 1", "4 3"))
    with pytest.raises(DataError, match="image_class_labels.txt line 4: expected a class id in 1..2, found 3"):
        build_dataset("cub", "train", root=tmp_path)
    (tmp_path / "image_class_labels.txt").write_text(labels)
    next((tmp_path / "images").rglob("img_005.jpg")).unlink()
    with pytest.raises(DataError, match="images.txt line 5: lists image 002.Bird_2/img_005.jpg.*no such file"):
        build_dataset("cub", "test", root=tmp_path)
    (tmp_path / "train_test_split.txt").unlink()
    with pytest.raises(DataError, match="train_test_split.txt: expected the CUB_200_2011 file .*found no such file"):
        build_dataset("cub", "test", root=tmp_path)
    with pytest.raises(DataError, match="cub: root: expected the CUB_200_2011 folder"):
        build_dataset("cub", "test", root=tmp_path / "absent")


def test_cub_box_past_the_edge(tmp_path):
    make_cub(tmp_path)
    boxes = (tmp_path / "bounding_boxes.txt").read_text()
    (tmp_path / "bounding_boxes.txt").write_text(boxes.replace("1 10.0 20.0 40.0 80.0", "1 30.0 -20.0 80.0 80.0"))
    image = build_dataset("cub", "train", root=tmp_path, image_size=20)[0]["image"]  # image 1 is 100x100
    assert image.shape == (3, 20, 20)
    # y' = (y + 20) / 4, x' = (x - 30) / 4: rows above y = 20 (padding, then black) and columns past x = 50
    # (black, then padding) are black; the white rectangle maps to rows 10..20, columns 0..5
    assert image[:, :8].max() == 0 and image[:, :, 7:].max() == 0
    assert torch.equal(image[:, 11:20, 0:4], torch.ones(3, 9, 4))


# ------------------------------------------------------------------------------------------------ ImageFolder
def test_imagefolder_one_folder(tmp_path):
    for k in range(10):
        write_image(tmp_path / "cat" / f"c{k}.png", h=8, w=8, seed=k)
    write_image(tmp_path / "dog" / "d0.PNG", h=8, w=8)
    write_image(tmp_path / "dog" / "sub" / "d1.bmp", h=8, w=8)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = {s: build_dataset("imagefolder", s, root=tmp_path) for s in ("train", "val", "test")}
    assert [len(d) for d in ds.values()] == [10, 1, 1]
    assert ds["val"].image_id(0) == "cat/c8.png" and ds["test"].image_id(0) == "cat/c9.png"
    assert ds["train"].ids[-2:] == ["dog/d0.PNG", "dog/sub/d1.bmp"] and ds["train"].labels[-1] == 1
    assert ds["train"].class_names == ["cat", "dog"] and ds["train"].image_shape == (3, 8, 8)
    for d in ds.values():
        check_items(d)
    gray = build_dataset("imagefolder", "train", root=tmp_path, grayscale=True, image_size=(4, 6))
    assert gray.image_shape == (1, 4, 6) and gray[0]["image"].shape == (1, 4, 6)
    again = build_dataset("imagefolder", "train", root=tmp_path)
    assert again.ids == ds["train"].ids and torch.equal(again[3]["image"], ds["train"][3]["image"])


def test_imagefolder_split_folders(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            write_image(tmp_path / split / cls / f"{split}_{cls}.jpg", h=5, w=7)
    ds = build_dataset("imagefolder", "test", root=tmp_path)
    assert ds.ids == ["val/a/val_a.jpg", "val/b/val_b.jpg"] and ds.labels.tolist() == [0, 1]
    check_items(ds)
    write_image(tmp_path / "test" / "b" / "t.jpg", h=5, w=7)
    ds = build_dataset("imagefolder", "test", root=tmp_path)
    assert ds.ids == ["test/b/t.jpg"] and ds.labels.tolist() == [1] and ds.num_classes == 2
    write_image(tmp_path / "test" / "zebra" / "z.jpg", h=5, w=7)
    with pytest.raises(DataError, match="zebra: expected a class folder of the train split"):
        build_dataset("imagefolder", "test", root=tmp_path)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="expected class subfolders, found none"):
        build_dataset("imagefolder", "train", root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: expected image files"):
        build_dataset("imagefolder", "train", root=tmp_path)
    (tmp_path / "empty").rmdir()
    write_image(tmp_path / "a" / "1.png", h=8, w=8)
    write_image(tmp_path / "a" / "2.png", h=9, w=8)
    ds = build_dataset("imagefolder", "train", root=tmp_path)
    with pytest.raises(DataError, match=r"a/2.png: expected the size of .*a/1.png \(8x8.*found 9x8"):
        ds[1]
    assert build_dataset("imagefolder", "train", root=tmp_path, image_size=8)[1]["image"].shape == (3, 8, 8)
    with pytest.raises(DataError, match="split 'val'.*expected at least one image"):
        build_dataset("imagefolder", "val", root=tmp_path)
    with pytest.raises(DataError, match="image_size: expected a positive int"):
        build_dataset("imagefolder", "train", root=tmp_path, image_size=(0, 4))
