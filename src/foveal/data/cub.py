"""Caltech-UCSD Birds 200-2011 (``cub``): 200 species, images cropped to the bird's bounding box.

``root`` is the official ``CUB_200_2011`` folder::

    images.txt               <image_id> <path under images/>
    image_class_labels.txt   <image_id> <class_id>            (1-based)
    train_test_split.txt     <image_id> <is_train>            (1 train, 0 test)
    bounding_boxes.txt       <image_id> <x> <y> <width> <height>   (floats, pixels)
    classes.txt              <class_id> <name>                e.g. "1 001.Black_footed_Albatross"
    parts/parts.txt          <part_id> <name>                 (optional, e.g. "7 left eye")
    parts/part_locs.txt      <image_id> <part_id> <x> <y> <visible>   (optional)
    images/<path>

Every file must list exactly the ids of ``images.txt``; a duplicate or unknown id, a class id out of
range or a missing image is an error naming the file and line. Class names drop the ``NNN.`` prefix.

An item is the bounding box ``(x, y, x + width, y + height)`` cropped and resized in one step by PIL
BILINEAR to ``image_size`` (default 128; int for a square or ``(H, W)``), RGB ``[3, H, W]``, read lazily.
:meth:`CUB.parts` maps part locations with the same affine map PIL applies to continuous pixel coordinates,
``x' = (x - box_x) * W / box_width``, ``y' = (y - box_y) * H / box_height``; visible parts may fall outside
``[0, W) x [0, H)`` where the annotation lies outside the box; invisible parts read ``(0, 0, 0)``.
A box reaching past the image's edge is kept as annotated; the part outside the image reads black.

Split (``seed`` does not change it): test = ``is_train == 0``; among the ``is_train == 1`` images in id
order, every 10th (positions 9, 19, 29, ...) is val and the rest train. Items are in id order.

An item's ``image_id`` is its ``images.txt`` path; ``cub_ids`` holds the integer ids of ``images.txt``.
The released near-optimal glimpse sequences name their images by the release's own crop and
numbering (``data/birds/train/images/<n>.png``), which CUB_200_2011 does not record: a map file
(``foveal sequences import --image-map``, :func:`foveal.sequences.read_image_map`) pairs
each with a CUB image, given by :meth:`CUB.resolve_image` as an ``images.txt`` id or path.
"""
from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Optional

import numpy as np

from foveal.data.base import (DataError, FolderDataset, as_image_size, check_split, file_stamp, open_image, read_lines,
                              resize)
from foveal.data.registry import DATASETS

CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt",
             "parts/parts.txt", "parts/part_locs.txt")


def _int(path: Path, number: int, token: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataError(f"{path} line {number}: expected an integer {what}, found {token!r}") from None


def _float(path: Path, number: int, token: str, what: str) -> float:
    try:
        return float(token)
    except ValueError:
        raise DataError(f"{path} line {number}: expected a number for {what}, found {token!r}") from None


def read_id_table(root: Path, name: str, fields: int, ids: Optional[list[int]] = None,
                  what: str = "") -> dict[int, tuple[int, list[str]]]:
    """``{id: (line_number, other tokens)}`` of ``root/name``, one row per id; with ``ids``, exactly those ids."""
    path = root / name
    table: dict[int, tuple[int, list[str]]] = {}
    known = set(ids) if ids is not None else None
    for number, tokens in read_lines(path, f"the CUB_200_2011 file {name} ({what})"):
        if len(tokens) < fields:
            raise DataError(f"{path} line {number}: expected {fields} fields ({what}), found {len(tokens)}")
        key = _int(path, number, tokens[0], "id")
        if key in table:
            raise DataError(f"{path} line {number}: expected each id once, found id {key} again")
        if known is not None and key not in known:
            raise DataError(f"{path} line {number}: expected an image id of images.txt, found id {key}")
        table[key] = (number, tokens[1:])
    if ids is not None and len(table) != len(ids):
        missing = next(i for i in ids if i not in table)
        raise DataError(f"{path}: expected a row for every id of images.txt, found none for id {missing}")
    return table


@functools.lru_cache(maxsize=2)
def _read_cub(root_str: str, stamp: tuple) -> dict:
    root = Path(root_str)
    images = read_id_table(root, "images.txt", 2, what="id path")
    ids = sorted(images)
    labels_t = read_id_table(root, "image_class_labels.txt", 2, ids, "id class_id")
    split_t = read_id_table(root, "train_test_split.txt", 2, ids, "id is_train")
    boxes_t = read_id_table(root, "bounding_boxes.txt", 5, ids, "id x y width height")
    classes = read_id_table(root, "classes.txt", 2, what="class_id name")
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise DataError(f"{root / 'classes.txt'}: expected class ids 1..{len(classes)}, found {sorted(classes)[:5]}...")
    class_names = [re.sub(r"^\d+\.", "", " ".join(classes[c][1])) for c in range(1, len(classes) + 1)]
    labels = np.zeros(len(ids), np.int64)
    is_train = np.zeros(len(ids), bool)
    boxes = np.zeros((len(ids), 4), np.float64)
    for r, i in enumerate(ids):
        path, (number, tokens) = root / "image_class_labels.txt", labels_t[i]
        labels[r] = _int(path, number, tokens[0], "class id") - 1
        if not 0 <= labels[r] < len(class_names):
            raise DataError(f"{path} line {number}: expected a class id in 1..{len(class_names)}, found {tokens[0]}")
        path, (number, tokens) = root / "train_test_split.txt", split_t[i]
        if tokens[0] not in ("0", "1"):
            raise DataError(f"{path} line {number}: expected is_train 0 or 1, found {tokens[0]!r}")
        is_train[r] = tokens[0] == "1"
        path, (number, tokens) = root / "bounding_boxes.txt", boxes_t[i]
        boxes[r] = [_float(path, number, t, "x y width height") for t in tokens[:4]]
        if boxes[r, 2] <= 0 or boxes[r, 3] <= 0:
            raise DataError(f"{path} line {number}: expected a positive width and height, found {tokens[2:4]}")
    files = [images[i][1][0] for i in ids]
    paths = [root / "images" / f for f in files]
    for i, path in zip(ids, paths):
        if not path.is_file():
            raise DataError(f"{root / 'images.txt'} line {images[i][0]}: lists image {images[i][1][0]}, expected it "
                            f"at {path}, found no such file")
    part_names, parts = _read_parts(root, ids)
    return {"ids": ids, "files": files, "paths": paths, "labels": labels,
            "is_train": is_train, "boxes": boxes, "class_names": class_names,
            "part_names": part_names, "parts": parts}


def _read_parts(root: Path, ids: list[int]) -> tuple[list[str], np.ndarray]:
    """``(part_names [P], parts [N, P, 3])`` of (x, y, visible) in original pixels; no parts/ -> P = 0."""
    if not (root / "parts").is_dir():
        return [], np.zeros((len(ids), 0, 3), np.float32)
    names_path, locs_path = root / "parts" / "parts.txt", root / "parts" / "part_locs.txt"
    names_t = read_id_table(root, "parts/parts.txt", 2, what="part_id name")
    if sorted(names_t) != list(range(1, len(names_t) + 1)):
        raise DataError(f"{names_path}: expected part ids 1..{len(names_t)}, found {sorted(names_t)}")
    part_names = [" ".join(names_t[p][1]) for p in range(1, len(names_t) + 1)]
    row_of = {image_id: r for r, image_id in enumerate(ids)}
    parts = np.zeros((len(ids), len(part_names), 3), np.float32)
    for number, tokens in read_lines(locs_path, "part locations: image_id part_id x y visible"):
        if len(tokens) != 5:
            raise DataError(f"{locs_path} line {number}: expected 5 fields (image_id part_id x y visible), "
                            f"found {len(tokens)}")
        image_id = _int(locs_path, number, tokens[0], "image id")
        part_id = _int(locs_path, number, tokens[1], "part id")
        if image_id not in row_of:
            raise DataError(f"{locs_path} line {number}: expected an image id of images.txt, found id {image_id}")
        if not 1 <= part_id <= len(part_names):
            raise DataError(f"{locs_path} line {number}: expected a part id in 1..{len(part_names)}, found {part_id}")
        x, y, visible = (_float(locs_path, number, t, "x y visible") for t in tokens[2:])
        parts[row_of[image_id], part_id - 1] = (x, y, visible > 0)
    return part_names, parts


class CUB(FolderDataset):
    """CUB-200-2011 bounding-box crops; see the module docstring.

    Attributes:
        part_names: ``[P]`` part names (15 for CUB; empty without ``parts/``).
        boxes: float64 ``[N, 4]`` bounding boxes ``(x, y, width, height)`` in original pixels.
    """

    def __init__(self, split: str, root: str | Path, *, image_size=128):
        check_split("cub", split)
        root = Path(root)
        if not (root / "images.txt").is_file():
            raise DataError(f"cub: root: expected the CUB_200_2011 folder (images.txt, image_class_labels.txt, "
                            f"train_test_split.txt, bounding_boxes.txt, classes.txt, images/), found no "
                            f"{'images.txt in ' if root.is_dir() else 'folder '}{root}")
        size = as_image_size(image_size)
        if size is None:
            raise DataError("cub: image_size: expected a positive int or (H, W) (crops differ in size), found None")
        meta = _read_cub(str(root), file_stamp(*(root / f for f in CUB_FILES)))
        train_rows = np.flatnonzero(meta["is_train"])
        val_rows = train_rows[9::10]
        rows = {"test": np.flatnonzero(~meta["is_train"]), "val": val_rows,
                "train": np.setdiff1d(train_rows, val_rows)}[split]
        if len(rows) == 0:
            raise DataError(f"cub: split {split!r} of {root}: expected at least one image, found none")
        self.rows = rows
        self.cub_ids = [meta["ids"][r] for r in rows]
        self._file_of_id = dict(zip(meta["ids"], meta["files"]))  # every split's, for resolve_image
        self._files = frozenset(meta["files"])
        self.boxes = meta["boxes"][rows]
        self.part_names = list(meta["part_names"])
        self._parts = meta["parts"][rows]
        super().__init__("cub", split, [meta["paths"][r] for r in rows], [meta["files"][r] for r in rows],
                         meta["labels"][rows], meta["class_names"], mode="RGB", size=size,
                         reference=meta["paths"][rows[0]])

    def resolve_image(self, token: str) -> str:
        """A CUB_200_2011 image named by its ``images.txt`` id (``"1234"``) or path -> its ``image_id``.

        The image may belong to another split (``image_id`` positions are then not found in this one).

        Raises:
            DataError: no such id or path in ``images.txt``.
        """
        token = str(token).strip()
        if token.isdigit():
            if int(token) not in self._file_of_id:
                raise DataError(f"expected a CUB image id of images.txt (1..{max(self._file_of_id)}), found {token}")
            return self._file_of_id[int(token)]
        if token not in self._files:
            raise DataError(f"expected a CUB image id or an images.txt path, found {token!r}, which is neither")
        return token

    def load_pil(self, index: int):
        x, y, w, h = self.boxes[index]
        image = open_image(self.paths[index], "RGB")
        # A box reaching past the image (PIL refuses such a box): pad with black, same geometry.
        left, top = math.floor(min(0.0, x)), math.floor(min(0.0, y))
        right, bottom = math.ceil(max(image.width, x + w)), math.ceil(max(image.height, y + h))
        if (left, top, right, bottom) != (0, 0, image.width, image.height):
            from PIL import Image

            padded = Image.new("RGB", (right - left, bottom - top))
            padded.paste(image, (-left, -top))
            image, x, y = padded, x - left, y - top
        return resize(image, self.size, box=(x, y, x + w, y + h))

    def parts(self, index: int) -> np.ndarray:
        """float32 ``[P, 3]``: (x, y, visible) of each part in the item's (cropped, resized) pixel coordinates."""
        i = self.check_index(index)
        x, y, w, h = self.boxes[i]
        out = self._parts[i].copy()
        visible = out[:, 2] > 0
        out[:, 0] = np.where(visible, (out[:, 0] - x) * self.size[1] / w, 0.0)
        out[:, 1] = np.where(visible, (out[:, 1] - y) * self.size[0] / h, 0.0)
        return out


@DATASETS.register("cub")
def build_cub(split: str, *, root: Optional[str | Path] = None, seed: int = 0, image_size=128) -> CUB:
    """Caltech-UCSD Birds 200-2011 from root, 200 species, cropped to the bird (128x128)."""
    if root is None:
        raise DataError("cub: root: expected the CUB_200_2011 folder, found none given; pass --data-dir / root=")
    return CUB(split, root, image_size=image_size)
