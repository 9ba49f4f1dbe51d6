"""The released text format of near-optimal glimpse sequences: one file per image, T lines ``r, c``.

Each line is the TOP-LEFT pixel (row first) of one glimpse, as in the sequences released with
Harvey et al. (2021); the released CUB files start with a line holding the image's path. Reading
tolerates blank lines and surrounding whitespace; anything else that is not two integers is an error
naming the file and line. Use these through :mod:`foveal.data.sequences`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import torch

from foveal.data.base import IMAGE_EXTENSIONS, DataError
from foveal.data.sequences import GlimpseSequences, PathLike, atomic_write
from foveal.retina import LocationGrid

__all__ = ["export_official", "import_official"]


def _file_stem(image_id: str) -> str:
    """An item id -> the name of its text file: image extension dropped, ``/`` -> ``__``."""
    stem = image_id[: -len(Path(image_id).suffix)] if Path(image_id).suffix.lower() in IMAGE_EXTENSIONS else image_id
    return stem.replace("/", "__")


def export_official(seqs: GlimpseSequences, folder: PathLike) -> list[Path]:
    """Write the released text format: one file per image, T lines ``r, c`` (top-left pixel, row first).

    File names: ``<id>.txt`` with the id's image extension dropped and ``/`` written ``__``
    (``000123.jpg`` -> ``000123.txt``); without ids, ``<index>.txt``. An id holding a ``/`` (a relative
    image path, as CUB's) is also written as the file's first line, as in the released CUB files.

    Returns:
        The files written, in row order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [_file_stem(i) for i in seqs.ids] if seqs.ids is not None else [str(i) for i in seqs.indices.tolist()]
    if len(set(names)) != len(names):
        raise DataError("export_official: expected one file name per image, found ids that collide as file names")
    paths = []
    for row, name in enumerate(names):
        lines = [f"{r}, {c}" for r, c in seqs.corners[row].tolist()]
        if seqs.ids is not None and "/" in seqs.ids[row]:
            lines.insert(0, seqs.ids[row])
        path = folder / f"{name}.txt"
        atomic_write(path, ("\n".join(lines) + "\n").encode())
        paths.append(path)
    return paths


_CORNER = re.compile(r"^\s*(-?\d+)\s*[,\s]\s*(-?\d+)\s*$")


def _read_official(path: Path) -> tuple[Optional[str], list[list[int]]]:
    """``(path line or None, [[r, c], ...])``; blank lines and surrounding whitespace are ignored."""
    header, corners = None, []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        match = _CORNER.match(line)
        if match:
            corners.append([int(match.group(1)), int(match.group(2))])
        elif header is None and not corners and Path(line.strip()).suffix.lower() in IMAGE_EXTENSIONS:
            header = line.strip()  # CUB files start with the image's path
        else:
            raise DataError(f"{path} line {number}: expected 'r, c' (two integers, the glimpse's top-left pixel), "
                            f"found {line.strip()!r}")
    if not corners:
        raise DataError(f"{path}: expected T >= 1 lines 'r, c', found none")
    return header, corners


def import_official(folder: PathLike, *, dataset_name: str, split: str, image_size: tuple[int, int],
                    glimpse_size: int, dataset: Any = None, grid: Optional[LocationGrid] = None) -> GlimpseSequences:
    """Read the released text format (every ``*.txt`` in ``folder``) as :class:`GlimpseSequences`.

    Each file is matched to a position in the split: with a ``dataset`` that has ``image_id``, by its
    path line (if any) or file name against the ids (as :func:`export_official` names them); otherwise
    the file name must be the position (``17.txt``). Every file must have the same T. With ``dataset``,
    the result is validated against it.

    Raises:
        DataError: naming the file (and line) that is malformed, unmatched or of another length.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"{folder}: expected glimpse-sequence text files (*.txt), found none")
    by_id: dict[str, int] = {}
    if dataset is not None and hasattr(dataset, "image_id"):
        for i in range(len(dataset)):
            image_id = dataset.image_id(i)
            by_id[image_id] = by_id[_file_stem(image_id)] = i
    indices, corners, ids = [], [], []
    for path in files:
        header, rows = _read_official(path)
        if corners and len(rows) != len(corners[0]):
            raise DataError(f"{path}: expected {len(corners[0])} glimpses (as {files[0].name}), found {len(rows)}")
        if by_id:
            key = header if header is not None else path.stem
            if key not in by_id:
                raise DataError(f"{path}: expected a file named after an image id of {dataset_name}/{split}, found "
                                f"{key!r}, which matches none")
            indices.append(by_id[key])
            ids.append(dataset.image_id(by_id[key]))
        else:
            if not path.stem.isdigit():
                raise DataError(f"{path}: expected a file named <index>.txt (no dataset with image ids was given), "
                                f"found {path.name!r}")
            indices.append(int(path.stem))
        corners.append(rows)
    seqs = GlimpseSequences(dataset_name, split, image_size, glimpse_size, torch.tensor(indices),
                            torch.tensor(corners), grid=grid, ids=ids or None, method="imported",
                            provenance={"imported_from": str(folder), "files": len(files)}, source=str(folder))
    seqs = seqs.subset(torch.argsort(seqs.indices))
    if dataset is not None:
        seqs.validate(dataset)
    return seqs
