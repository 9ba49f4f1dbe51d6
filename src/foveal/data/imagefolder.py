"""Any ImageNet-style folder of class subfolders (``imagefolder``).

Two layouts, told apart by whether ``root/train/`` exists:

- **split folders**: ``root/train/<class>/...``, ``root/val/<class>/...`` (or ``validation/``) and optionally
  ``root/test/<class>/...``. Without ``test/`` the test split reads the ``val`` folder (ImageNet publishes
  no labelled test set), so val and test are then the same images: report such results as validation
  results. The classes are the subfolders of ``train/``; a val/test class folder that ``train/`` lacks
  is an error.
- **one folder**: ``root/<class>/...``. Each class's images, sorted by relative path, are split by their
  position ``k`` in that order: ``k % 10 == 8`` -> val, ``k % 10 == 9`` -> test, the rest -> train
  (80 / 10 / 10, stratified; ``seed`` does not change it).

Classes are the sorted subfolder names (hidden ``.``-folders ignored); label = position in that list.
Images are the files, found recursively in a class folder, ending in .jpg, .jpeg, .png, .bmp or .webp
(any case); items are in (class, relative path) order. An empty class folder, a root without class
folders or an empty split is an error.

Options: ``image_size`` (int for a square or ``(H, W)``; PIL BILINEAR) - default ``None`` keeps the
native size, which every image must share: the first image of the train split fixes it and an image of
another size raises an error naming both files when it loads (images are read lazily, so the check
happens per item rather than by opening every file at construction). ``grayscale=True`` reads images
in PIL mode "L" (1 channel) instead of "RGB" (3 channels). :meth:`ImageFolder.image_id` is the image's
path relative to ``root``, with ``/`` separators.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from foveal.data.base import IMAGE_EXTENSIONS, DataError, FolderDataset, as_image_size, check_split, interleaved_split
from foveal.data.registry import DATASETS


def class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by relative path; none -> DataError."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath) / f for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS)
                  and not f.startswith(".")]
    if not found:
        raise DataError(f"{folder}: expected image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folder, "
                        f"found none")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def scan(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """``(paths, labels)`` of every image in ``folder/<class>/``, in (class, path) order."""
    paths, labels = [], []
    for name in class_folders(folder):
        if name not in classes:
            raise DataError(f"{folder / name}: expected a class folder of the train split ({len(classes)} classes), "
                            f"found a class that train/ lacks")
        files = images_in(folder / name)
        paths += files
        labels += [classes.index(name)] * len(files)
    return paths, np.array(labels, dtype=np.int64)


def split_folders(root: Path) -> Optional[dict[str, Path]]:
    """``{"train", "val", "test": folder}`` for the split-folder layout, or ``None`` for one folder."""
    if not (root / "train").is_dir():
        return None
    val = next((root / d for d in ("val", "validation") if (root / d).is_dir()), None)
    if val is None:
        raise DataError(f"{root}: has train/, so expected val/ or validation/ beside it, found neither")
    test = root / "test" if (root / "test").is_dir() else val
    return {"train": root / "train", "val": val, "test": test}


class ImageFolder(FolderDataset):
    """Images in class subfolders; see the module docstring.

    Attributes:
        folder: the folder this split was read from (``root`` for the one-folder layout).
    """

    def __init__(self, split: str, root: str | Path, *, image_size=None, grayscale: bool = False):
        check_split("imagefolder", split)
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"imagefolder: root: expected a folder of class subfolders, found no folder {root}")
        if not isinstance(grayscale, bool):
            raise DataError(f"imagefolder: grayscale: expected true or false, found {grayscale!r}")
        size = as_image_size(image_size)
        folders = split_folders(root)
        self.folder = folders[split] if folders else root
        classes = class_folders(folders["train"] if folders else root)
        if not classes:
            raise DataError(f"{folders['train'] if folders else root}: expected class subfolders, found none")
        if folders:
            paths, labels = scan(self.folder, classes)
            reference = images_in(folders["train"] / classes[0])[0] if split != "train" else None
        else:
            all_paths, all_labels = scan(root, classes)
            rows = interleaved_split(all_labels, split, 10, {"val": [8], "test": [9]})
            paths, labels = [all_paths[r] for r in rows], all_labels[rows]
            reference = all_paths[0]
        if not paths:
            raise DataError(f"imagefolder: split {split!r} of {self.folder}: expected at least one image, found none")
        ids = [p.relative_to(root).as_posix() for p in paths]
        super().__init__("imagefolder", split, paths, ids, labels, classes, mode="L" if grayscale else "RGB",
                         size=size, reference=reference or paths[0])


@DATASETS.register("imagefolder")
def build_imagefolder(split: str, *, root: Optional[str | Path] = None, seed: int = 0, image_size=None,
                      grayscale: bool = False) -> ImageFolder:
    """Your own images in class subfolders of root (or train/ val/ test/ folders of them)."""
    if root is None:
        raise DataError("imagefolder: root: expected a folder of class subfolders, found none given; "
                        "pass --data-dir / root=")
    return ImageFolder(split, root, image_size=image_size, grayscale=grayscale)
