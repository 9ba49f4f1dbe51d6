"""CelebA-HQ faces with one binary attribute as the label (``celeba-hq``).

``root`` holds an attribute file and the images. Options:

- ``attribute`` (required): the attribute that is the label, by name (``"Male"``) or 0-based column index.
  Label 1 = present. ``num_classes = 2``, ``class_names = ["not <attr>", "<attr>"]``.
- ``attr_file``: the annotation file (absolute, or relative to ``root``); default the first of
  ``list_attr_celeba.txt``, ``CelebAMask-HQ-attribute-anno.txt`` and ``annotations.txt`` (the name in the
  near-optimal-glimpse-sequences release, ``data/celebhq/annotations.txt``) found in ``root``.
- ``image_dir``: the image folder (absolute, or relative to ``root``); default ``root/CelebA-HQ-img`` or
  ``root/images`` if present, else ``root``.
- ``image_size``: resize to this square size (int) or ``(H, W)`` with PIL BILINEAR; default ``None`` keeps
  the native size, which every image must share (checked as each image loads).
- ``include_annotate``: ``True`` makes ``train`` the split ``annotate+train`` (below), as the official
  hard-attention trainer did; default ``False``.

Two annotation layouts parse:

(a) CelebA's ``list_attr_celeba.txt`` (also CelebAMask-HQ's file): line 1 the image count, line 2 the
    attribute names, then ``000001.jpg 1 -1 ...`` per image. The count must equal the number of rows.
(b) headerless ``000000.png -1 1 ...``: 40 values per row; the names are then :data:`CELEBA_ATTRIBUTES`.

Values are -1/1 or 0/1 (0 and -1 both mean absent). A listed image that is not in the image folder is
an error, except that a file with the same stem and another image extension is accepted
(``0.jpg`` listed, ``0.png`` present). Every image is an RGB ``[3, H, W]`` item read lazily.

Split, in annotation order (``seed`` does not change it):

- exactly 30,000 rows (CelebA-HQ, the published split): annotate = rows 0 .. 1,999, train = 2,000 .. 26,999,
  val = 27,000 .. 27,499, test = 27,500 .. 29,999;
- any other count ``n``: annotate = the first ``a`` rows, then train, then val = ``v`` rows, then test = the
  last ``v`` rows,

with ``a = min(2000, n // 15)`` (the published 1/15) and ``v = max(1, round(n / 10))``. The 30,000 row
split is the one the near-optimal-glimpse-sequences paper used (annotate = images kept for the
annotator). An empty split is an error.

``annotate+train`` = annotate then train (rows 0 .. 26,999 of the published split): the official trainer
trained on it, so that the released sequences (rows 0 .. 599, files ``0.txt`` .. ``599.txt``) supervise
their own images. Its position ``i`` is annotation row ``i`` and position ``i`` of ``annotate``, which
the dataset declares as ``contains_splits = {"annotate": 0}`` (a sequence file of the ``annotate`` split
is then valid for it, :meth:`foveal.sequences.GlimpseSequences.validate`). Every split has
``first_row`` (its position 0's annotation row) and ``task`` (the label's attribute name, checked
against the ``task`` a sequence file records).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional

import numpy as np

from foveal.data.base import (IMAGE_EXTENSIONS, DataError, FolderDataset, as_image_size, check_split, file_stamp,
                              read_lines)
from foveal.data.registry import DATASETS

CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
]
ATTR_FILES = ("list_attr_celeba.txt", "CelebAMask-HQ-attribute-anno.txt", "annotations.txt")
IMAGE_DIRS = ("CelebA-HQ-img", "images")
CELEBA_SPLITS = ("annotate", "train", "val", "test", "annotate+train")
PUBLISHED_ROWS = 30000
PUBLISHED_SPLIT = {"annotate": (0, 2000), "train": (2000, 27000), "val": (27000, 27500), "test": (27500, 30000)}


def parse_attribute_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``(attribute_names [A], file_names [N], attributes [N, A] uint8 0/1)`` of either layout."""
    rows = read_lines(path, "a CelebA attribute file (list_attr_celeba.txt layout or headerless rows)")
    if not rows:
        raise DataError(f"{path}: expected attribute rows, found an empty file")
    count = None
    if len(rows[0][1]) == 1 and rows[0][1][0].isdigit():  # layout (a): count line, header line
        count = int(rows[0][1][0])
        if len(rows) < 2:
            raise DataError(f"{path}: expected a header of attribute names on line 2, found the end of the file")
        names, rows = rows[1][1], rows[2:]
    else:  # layout (b): headerless
        names = CELEBA_ATTRIBUTES
    if count is not None and count != len(rows):
        raise DataError(f"{path}: expected {count} image rows (the count on line 1), found {len(rows)}")
    for number, tokens in rows:
        if len(tokens) != len(names) + 1:
            raise DataError(f"{path} line {number}: expected {len(names)} attribute values, found {len(tokens) - 1}")
    files = [tokens[0] for _, tokens in rows]
    table = np.array([tokens[1:] for _, tokens in rows], dtype=str).reshape(len(rows), len(names))
    valid = np.isin(table, ["-1", "0", "1"])
    if not valid.all():
        r, c = np.argwhere(~valid)[0]
        raise DataError(f"{path} line {rows[r][0]}: expected -1, 0 or 1 for {names[c]}, found {table[r, c]!r}")
    if len(set(files)) != len(files):
        seen: set[str] = set()
        for (number, _), name in zip(rows, files):
            if name in seen:
                raise DataError(f"{path} line {number}: expected each image once, found {name!r} again")
            seen.add(name)
    return list(names), files, (table == "1").astype(np.uint8)


def resolve_files(image_dir: Path, files: list[str], attr_path: Path) -> list[Path]:
    """The image path of every listed file; a same-stem file with another image extension counts."""
    if not image_dir.is_dir():
        raise DataError(f"image_dir: expected a folder of images, found no folder {image_dir}")
    present = set(os.listdir(image_dir))
    by_stem: Optional[dict[str, str]] = None
    out = []
    for name in files:
        if name not in present and not (image_dir / name).is_file():
            if by_stem is None:
                by_stem = {os.path.splitext(f)[0]: f for f in sorted(present)
                           if f.lower().endswith(IMAGE_EXTENSIONS)}
            alt = by_stem.get(os.path.splitext(name)[0])
            if alt is None:
                raise DataError(f"{attr_path}: lists image {name!r}, expected it in {image_dir}, found no such file")
            name = alt
        out.append(image_dir / name)
    return out


@functools.lru_cache(maxsize=2)
def _read_annotation(attr_path: str, image_dir: str,
                     stamp: tuple) -> tuple[list[str], list[str], np.ndarray, list[Path]]:
    names, files, attributes = parse_attribute_file(Path(attr_path))
    attributes.setflags(write=False)
    return names, files, attributes, resolve_files(Path(image_dir), files, Path(attr_path))


def split_range(split: str, n: int) -> tuple[int, int]:
    """``[start, stop)`` of ``split`` among ``n`` rows in annotation order (see the module docstring)."""
    if split == "annotate+train":
        return split_range("annotate", n)[0], split_range("train", n)[1]
    if n == PUBLISHED_ROWS:
        return PUBLISHED_SPLIT[split]
    a, v = min(2000, n // 15), max(1, round(n / 10))
    return {"annotate": (0, a), "train": (a, n - 2 * v), "val": (n - 2 * v, n - v), "test": (n - v, n)}[split]


def find_attribute(attribute, names: list[str], attr_path: Path) -> int:
    if attribute is None:
        raise DataError("celeba-hq: attribute: expected an attribute name (e.g. 'Male') or a 0-based index, "
                        "found none given")
    if isinstance(attribute, str) and attribute.isdigit():  # "20" from a command-line override
        attribute = int(attribute)
    if isinstance(attribute, (int, np.integer)) and not isinstance(attribute, bool):
        if not 0 <= attribute < len(names):
            raise DataError(f"celeba-hq: attribute: expected an index in 0..{len(names) - 1}, found {attribute}")
        return int(attribute)
    if isinstance(attribute, str) and attribute in names:
        return names.index(attribute)
    raise DataError(f"celeba-hq: attribute: expected one of the attributes of {attr_path.name} "
                    f"({', '.join(names)}), found {attribute!r}")


def _under(root: Path, value) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


class CelebAHQ(FolderDataset):
    """CelebA-HQ with one attribute as a binary label; see the module docstring.

    Attributes:
        attributes: uint8 ``[N, A]`` 0/1 of every item (A = 40 for CelebA).
        attribute_names: ``[A]`` names, column order of ``attributes``.
        attribute: the name of the label's attribute; also ``task``, what a sequence file must be made for.
        first_row: the annotation row of position 0 (position ``i`` is row ``first_row + i``).
        contains_splits: ``{split: offset}`` of the splits held inside this one (``annotate+train``:
            ``{"annotate": 0}``; the others: ``{}``).
    """

    def __init__(self, split: str, root: str | Path, *, attribute, attr_file=None, image_dir=None, image_size=None,
                 include_annotate: bool = False):
        check_split("celeba-hq", split, CELEBA_SPLITS)
        if not isinstance(include_annotate, bool):
            raise DataError(f"celeba-hq: include_annotate: expected true or false, found {include_annotate!r}")
        if include_annotate and split == "train":
            split = "annotate+train"
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"celeba-hq: root: expected a folder with the attribute file and images, "
                            f"found no folder {root}")
        attr_path = _under(root, attr_file) if attr_file is not None else next(
            (root / f for f in ATTR_FILES if (root / f).is_file()), None)
        if attr_path is None:
            raise DataError(f"celeba-hq: expected {' or '.join(ATTR_FILES)} in {root}, found neither; pass attr_file=")
        if image_dir is None:
            image_folder = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), root)
        else:
            image_folder = _under(root, image_dir)
        size = as_image_size(image_size)
        names, files, attributes, paths = _read_annotation(str(attr_path), str(image_folder),
                                                           file_stamp(attr_path, image_folder))
        column = find_attribute(attribute, names, attr_path)
        start, stop = split_range(split, len(files))
        if stop <= start:
            raise DataError(f"celeba-hq: split {split!r} of {attr_path}: expected at least one image, found none "
                            f"({len(files)} rows; see the split table in foveal.data.celeba)")
        self.attribute_names, self.attribute = names, names[column]
        self.task, self.first_row = names[column], start
        self.contains_splits = {"annotate": 0} if split == "annotate+train" else {}
        self.attributes = attributes[start:stop]
        super().__init__("celeba-hq", split, paths[start:stop], files[start:stop], self.attributes[:, column],
                         [f"not {names[column]}", names[column]], mode="RGB", size=size, reference=paths[0])


@DATASETS.register("celeba-hq")
def build_celeba_hq(split: str, *, root: Optional[str | Path] = None, seed: int = 0, attribute=None,
                    attr_file=None, image_dir=None, image_size=None, include_annotate: bool = False) -> CelebAHQ:
    """CelebA-HQ faces from root, one attribute as a 2-class label; an annotate split of 2,000."""
    if root is None:
        raise DataError("celeba-hq: root: expected a folder with the attribute file and images, found none given; "
                        "pass --data-dir / root=")
    return CelebAHQ(split, root, attribute=attribute, attr_file=attr_file, image_dir=image_dir, image_size=image_size,
                    include_annotate=include_annotate)
