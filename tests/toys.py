"""Small stand-ins that several test files share: the checks every dataset's items pass, the annotator's
toy split and settings (with the bank and posterior of tests/conftest.py's ``annotation_inputs``), and tiny
CelebA-HQ and CUB folders with sequence files in the exact layouts of the authors' release (used by
tests/test_released_sequences.py and by the released-sequences guide in tests/test_guides.py)."""

from pathlib import Path

import numpy as np
import torch


def check_items(ds, count=3):
    """Items match the dataset's declared shape, dtype, range and classes (and ``ds.labels``, if it has them)."""
    assert len(ds) > 0 and len(ds.class_names) == ds.num_classes
    for i in list(range(min(count, len(ds)))) + [len(ds) - 1]:
        item = ds[i]
        assert set(item) == {"image", "label", "index"} and item["index"] == i
        assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == ds.image_shape
        assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
        assert 0 <= int(item["label"]) < ds.num_classes
        if hasattr(ds, "labels"):
            assert int(item["label"]) == ds.labels[i]


class ToySplit:
    """10 random 8x8 images, 3 classes; counts how many images were read."""

    name, split, image_shape, num_classes = "toy", "train", (1, 8, 8), 3

    def __init__(self):
        self.images = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        self.reads = 0

    def __len__(self):
        return 10

    def __getitem__(self, i):
        self.reads += 1
        return {"image": self.images[i], "label": torch.tensor(i % 3), "index": i}


def toy_config(root, **changes):
    """The annotator's settings on :class:`ToySplit` with ``annotation_inputs`` (``root``): images 0..7, T = 2
    glimpses of 4 px every 2 px, 4 completions, chunks of 3."""
    from foveal.boed.annotate import AnnotateConfig  # the data tests use this module too

    settings = dict(dataset="toy", posterior=str(root / "posterior"), bank=str(root / "bank.npy"), count=8,
                    glimpse_size=4, grid_stride=2, num_glimpses=2, n_completions=4, n_proposals=10,
                    pca_components=4, chunk_size=3, seed=7)
    return AnnotateConfig(**{**settings, **changes})


# ------------------------------------------------------------------------ the release's layouts, tiny
RELEASE_VALUES = [int(v) for v in np.linspace(0, 207, 50).astype(int)]  # the release's rule, by numpy itself
RELEASE_GRID = "linspace:0:207:50"


def write_png(path: Path, h: int, w: int, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def make_celebhq(root: Path, n: int = 45) -> None:
    """The release's data/celebhq: images/ and annotations.txt (count line, names line, one row per image).
    45 rows: annotate = rows 0..2, train 3..36, val 37..40, test 41..44 (foveal.data.celeba)."""
    from foveal.data import CELEBA_ATTRIBUTES

    values = np.random.default_rng(1).integers(0, 2, (n, 40))
    values[:, CELEBA_ATTRIBUTES.index("Male")] = np.arange(n) % 2  # both classes in every split
    rows = []
    for i in range(n):
        write_png(root / "images" / f"{i:06d}.png", 8, 8, seed=i)
        rows.append(f"{i:06d}.png " + " ".join(str(2 * v - 1) for v in values[i]))
    (root / "annotations.txt").write_text(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + "\n" + "\n".join(rows) + "\n")


def celeba_corners(row: int, T: int = 5) -> list[list[int]]:
    """T top-left pixels on the release's grid, different for every row."""
    return [[RELEASE_VALUES[(7 * row + 3 * t) % 50], RELEASE_VALUES[(11 * row + 5 * t + 49) % 50]] for t in range(T)]


def write_celeba_release(folder: Path, rows=(0, 1, 2)) -> dict[int, bytes]:
    """Row-named files: T lines 'r, c' (each ending in a newline)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for row in rows:
        out[row] = "".join(f"{r}, {c}\n" for r, c in celeba_corners(row)).encode()
        (folder / f"{row}.txt").write_bytes(out[row])
    return out


def make_cub(root: Path, n: int = 14, test_ids=(3, 7, 11)) -> None:
    """A tiny CUB_200_2011: ids 1..n, two classes, whole-image boxes; is_train = ids not in test_ids, of which
    every 10th is val: train ids 1, 2, 4, 5, 6, 8, 9, 10, 12, 14, val id 13."""
    lines = {k: [] for k in ("images", "labels", "split", "boxes")}
    for i in range(1, n + 1):
        cls = 1 + i % 2
        path = f"{cls:03d}.Bird_{cls}/img_{i:03d}.png"
        write_png(root / "images" / path, 30, 40, seed=i)
        lines["images"].append(f"{i} {path}")
        lines["labels"].append(f"{i} {cls}")
        lines["split"].append(f"{i} {0 if i in test_ids else 1}")
        lines["boxes"].append(f"{i} 0.0 0.0 40.0 30.0")
    for name, key in {"images.txt": "images", "image_class_labels.txt": "labels", "train_test_split.txt": "split",
                      "bounding_boxes.txt": "boxes"}.items():
        (root / name).write_text("\n".join(lines[key]) + "\n")
    (root / "classes.txt").write_text("1 001.Bird_1\n2 002.Bird_2\n")


def cub_release_file(folder: Path, k: int, n: int, corners) -> bytes:
    """``birds/<k>.txt``: T lines 'r, c', then the release's image path, with no final newline."""
    folder.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(f"{r}, {c}" for r, c in corners) + f"\ndata/birds/train/images/{n}.png").encode()
    (folder / f"{k}.txt").write_bytes(data)
    return data


def release_folder(root: Path) -> None:
    """What the released-sequences guide starts from, in ``root``: data/celebhq, data/CUB_200_2011, the
    release's folders optimal-sequences/Male (rows 0..2) and optimal-sequences/birds (6 files of 5 glimpses
    of 32 px every 8 px, on the training images with CUB ids 1, 2, 4, 5, 6, 8 of :func:`make_cub`), and
    release-to-cub.txt, naming released images by path, by file name and by number."""
    make_celebhq(root / "data" / "celebhq")
    write_celeba_release(root / "optimal-sequences" / "Male")
    make_cub(root / "data" / "CUB_200_2011")
    lines = ["# released image  CUB_200_2011 image"]
    for k, cub_id in enumerate((1, 2, 4, 5, 6, 8)):
        n = 100 + 7 * k  # the release's own numbering, unrelated to CUB's ids
        cub_release_file(root / "optimal-sequences" / "birds", k, n,
                         [[8 * ((k + t) % 13), 8 * ((2 * k + 3 * t) % 13)] for t in range(5)])
        name = [f"data/birds/train/images/{n}.png", f"{n}.png", str(n)][k % 3]
        lines.append(f"{name} {cub_id}")
    (root / "release-to-cub.txt").write_text("\n".join(lines) + "\n")
