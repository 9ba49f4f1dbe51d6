"""Pieces every dataset shares: the error type, the item dict, image conversion, split rules.

An item is ``{"image": float32 [C, H, W] in [0, 1], "label": int64 scalar, "index": int}``, so the
default ``DataLoader`` collate gives ``{"image": [B, C, H, W], "label": [B], "index": [B]}``.

Splits are assigned without a random generator wherever possible: :func:`interleaved_positions`
numbers the members of each group (class) in file order, and a split takes fixed residues of that
number modulo a period (e.g. every 10th image of each class). Such a rule gives the same split on
every machine and every numpy version, and keeps each split stratified by class.
"""
from __future__ import annotations

import operator
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")
# Stable small integers for seeding per-item generators (synthetic datasets).
SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "annotate": 3}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataError(ValueError):
    """Bad input data or options; the message names the file or field, what was expected and what was found."""


def check_split(dataset: str, split: str, allowed: Sequence[str] = SPLITS) -> str:
    if split not in allowed:
        raise DataError(f"{dataset}: split must be one of {list(allowed)}, found {split!r}")
    return split


def as_image_size(value: Any, field: str = "image_size") -> Optional[tuple[int, int]]:
    """``None`` -> ``None``; ``s`` -> ``(s, s)``; ``(h, w)`` -> ``(h, w)``; anything else -> DataError."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        h, w = value
    else:
        h = w = value
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise DataError(f"{field}: expected a positive int or a pair (height, width), found {value!r}")
    return int(h), int(w)


def as_positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise DataError(f"{field}: expected a positive int, found {value!r}")
    return int(value)


def uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W]`` or ``[H, W, C]`` -> float32 ``[C, H, W]`` in [0, 1] (a new tensor)."""
    image = torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).div_(255.0)
    return image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1).contiguous()


def open_image(path: Path, mode: str):
    """Open an image with PIL and convert it to ``mode`` ("RGB" or "L"); errors name the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path}: expected a readable image, found an error: {err}") from err


def image_size_of(path: Path) -> tuple[int, int]:
    """``(height, width)`` read from the file header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path}: expected a readable image, found an error: {err}") from err
    return height, width


def pil_to_tensor(image) -> torch.Tensor:
    """PIL image in mode "L" or "RGB" -> float32 ``[C, H, W]`` in [0, 1]."""
    return uint8_to_tensor(np.asarray(image, dtype=np.uint8))


def resize(image, size: tuple[int, int], box: Optional[tuple[float, float, float, float]] = None):
    """Resize a PIL image to ``size = (H, W)`` with PIL BILINEAR; ``box = (left, top, right, bottom)``
    (floats allowed) crops first, in continuous pixel coordinates."""
    from PIL import Image

    return image.resize((size[1], size[0]), Image.BILINEAR, box=box)


def interleaved_positions(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group: ``[N]`` int64.

    ``groups = [3, 1, 3, 3]`` -> ``[0, 0, 1, 2]``. A split then takes ``positions % period``
    in a fixed set, e.g. every 10th image of each class.
    """
    groups = np.asarray(groups)
    positions = np.zeros(len(groups), dtype=np.int64)
    order = np.argsort(groups, kind="stable")  # each group's members stay in file order
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1]
    run = np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    positions[order] = run
    return positions


def interleaved_split(groups: np.ndarray, split: str, period: int, residues: dict[str, Sequence[int]]) -> np.ndarray:
    """Indices (ascending) of the elements whose group position modulo ``period`` falls in ``residues[split]``;
    a split missing from ``residues`` takes every residue the others leave."""
    residue = interleaved_positions(groups) % period
    taken = [r for rs in residues.values() for r in rs]
    chosen = residues.get(split, [r for r in range(period) if r not in taken])
    return np.flatnonzero(np.isin(residue, chosen))


class FovealDataset(Dataset):
    """Base class: subclasses set the attributes below and implement :meth:`load`.

    Attributes:
        name: the registry name, e.g. ``"cluttered-fashion-mnist"``.
        split: ``"train"``, ``"val"``, ``"test"`` (or ``"annotate"`` for CelebA-HQ).
        num_classes: number of classes of the label.
        image_shape: ``(C, H, W)`` of every image.
        class_names: ``num_classes`` names, index = label.
        labels: int64 ``[N]``, the label of every item (cheap, no image is read).
        bytes_exact: every image is ``uint8 / 255`` exactly (float32), so that it can be kept as its bytes
            and read back bit for bit (:class:`foveal.data.synthetic.PlacedDataset` caches them).
    """

    bytes_exact: bool = False
    name: str
    split: str
    num_classes: int
    image_shape: tuple[int, int, int]
    class_names: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> torch.Tensor:
        """The image of item ``index`` (already range-checked): float32 ``[C, H, W]`` in [0, 1]."""
        raise NotImplementedError

    def check_index(self, index: Any) -> int:
        i = operator.index(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.name} {self.split}: index {index} out of range for {n} items")
        return i

    def load_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """The images of items ``indices`` (already range-checked): float32 ``[B, C, H, W]``, each equal to
        :meth:`load`'s. Subclasses that can make a batch at once (generated or in-memory data) override it."""
        return torch.stack([self.load(i) for i in indices]) if len(indices) else torch.zeros(0, *self.image_shape)

    def load_crops(self, indices: Sequence[int], tops: Sequence[int], lefts: Sequence[int], size: int) -> torch.Tensor:
        """``[B, C, size, size]``: the ``size``-pixel square of image ``indices[b]`` at top-left ``(tops[b],
        lefts[b])``, each inside the image (already checked)."""
        images = self.load_batch(indices)
        span = torch.arange(size)
        rows = torch.as_tensor(tops)[:, None] + span
        cols = torch.as_tensor(lefts)[:, None] + span
        b = torch.arange(len(images))[:, None, None]
        return images.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        i = self.check_index(index)
        return {"image": self.load(i), "label": torch.tensor(int(self.labels[i]), dtype=torch.int64), "index": i}

    def __getitems__(self, indices: Sequence[Any]) -> list[dict[str, Any]]:
        """The items ``indices`` made by one :meth:`load_batch` (``DataLoader`` calls this for a whole batch
        instead of ``__getitem__`` per item); equal to ``[self[i] for i in indices]``."""
        if type(self).__getitem__ is not FovealDataset.__getitem__:  # a subclass's own items: keep them
            return [self[i] for i in indices]
        rows = [self.check_index(i) for i in indices]
        images = self.load_batch(rows)
        labels = torch.as_tensor(self.labels[rows], dtype=torch.int64)
        return [{"image": image, "label": label, "index": i} for image, label, i in zip(images, labels, rows)]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, len={len(self)}, "
                f"image_shape={self.image_shape}, num_classes={self.num_classes})")


class FolderDataset(FovealDataset):
    """Images read lazily with PIL from files; the base of CelebA-HQ, CUB and ImageFolder.

    Args:
        paths: ``[N]`` image files of this split, in item order.
        ids: ``[N]`` the names the dataset's own files use for them (see :meth:`image_id`).
        labels: int64 ``[N]``.
        mode: PIL mode, ``"RGB"`` (3 channels) or ``"L"`` (1 channel).
        size: ``(H, W)`` to resize every image to with PIL BILINEAR, or ``None`` to keep native sizes,
            which must then all equal the size of ``reference`` (checked as each image loads).
        reference: the file whose native size fixes ``image_shape`` when ``size`` is ``None``.
    """

    def __init__(self, name: str, split: str, paths: Sequence[Path], ids: Sequence[str], labels: np.ndarray,
                 class_names: list[str], *, mode: str, size: Optional[tuple[int, int]], reference: Path):
        self.name, self.split = name, split
        self.paths, self.ids = list(paths), list(ids)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.mode, self.size, self.reference = mode, size, reference
        channels = 1 if mode == "L" else 3
        self.image_shape = (channels, *(size if size is not None else image_size_of(reference)))

    def image_id(self, index: int) -> str:
        """The image's name in the dataset's own files (annotation file name, ``images.txt`` path, relative path)."""
        return self.ids[self.check_index(index)]

    def load_pil(self, index: int):
        """The PIL image of item ``index`` at the dataset's size (subclasses may crop first)."""
        path = self.paths[index]
        image = open_image(path, self.mode)
        if self.size is not None:
            return resize(image, self.size)
        if (image.height, image.width) != self.image_shape[1:]:
            h, w = self.image_shape[1:]
            raise DataError(f"{path}: expected the size of {self.reference} ({h}x{w}, H x W), "
                            f"found {image.height}x{image.width}; set the option image_size (data.image_size=64 in a "
                            "run config or override, --option image_size=64) to resize every image")
        return image

    def load(self, index: int) -> torch.Tensor:
        return pil_to_tensor(self.load_pil(index))


def read_lines(path: Path, what: str) -> list[tuple[int, list[str]]]:
    """Non-blank lines of a text annotation file as ``(line_number, tokens)``; a missing file -> DataError."""
    if not path.is_file():
        raise DataError(f"{path}: expected {what}, found no such file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: expected a readable text file ({what}), found an error: {err}") from err
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def file_stamp(*paths: Path) -> tuple[tuple[str, int, int], ...]:
    """A cache key that changes when any file changes: ``(path, mtime_ns, size)`` each (0s if absent)."""
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), 0, 0))
    return tuple(out)


class Rows(Dataset):
    """Positions ``start .. stop - 1`` of a dataset (e.g. the training images an annotator's posterior may
    see, leaving the first ones for annotation). Position ``i`` is the base's item ``start + i``, whose
    ``index`` field stays the base's position; ``labels`` are sliced; other attributes are the base's."""

    def __init__(self, base: Dataset, start: int, stop: Optional[int] = None) -> None:
        n = len(base)
        stop = n if stop is None else stop
        if not 0 <= start < stop <= n:
            raise DataError(f"{getattr(base, 'name', 'dataset')} {getattr(base, 'split', '')}: rows {start}..{stop - 1}: "
                            f"expected 0 <= start < stop <= {n} (the split's size)")
        self.base, self.start, self.stop = base, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def _row(self, i: Any) -> int:
        i = operator.index(i)
        if not 0 <= i < len(self):
            raise IndexError(f"rows {self.start}..{self.stop - 1}: position {i} out of range for {len(self)} items")
        return self.start + i

    def __getitem__(self, i: Any) -> dict[str, Any]:
        return self.base[self._row(i)]

    def __getitems__(self, positions: Sequence[Any]) -> list[dict[str, Any]]:
        rows = [self._row(i) for i in positions]
        many = getattr(self.base, "__getitems__", None)
        return many(rows) if many is not None else [self.base[r] for r in rows]

    @property
    def labels(self):
        return self.base.labels[self.start:self.stop]

    def __getattr__(self, name: str):  # name, split, num_classes, image_shape, class_names, ...
        if name in ("base", "start", "stop") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __repr__(self) -> str:
        return f"Rows({self.base!r}, {self.start}, {self.stop})"
