"""The released text format of near-optimal glimpse sequences (Harvey et al. 2021), read and written exactly.

One file per image, T lines ``r, c``: the TOP-LEFT pixel (row first) of each glimpse. The release has
two layouts:

=========  ================================================  ===========================================
release    a file                                            its name
=========  ================================================  ===========================================
CelebA-HQ  T lines ``r, c``                                  ``<row>.txt``, the image's row of
                                                             ``annotations.txt`` (``0.txt`` .. ``599.txt``)
CUB        T lines ``r, c``, then the image's path           ``<k>.txt``
           (``data/birds/train/images/<n>.png``), no final
           newline
=========  ================================================  ===========================================

Reading (:func:`import_official`) tolerates blank lines and surrounding whitespace, and takes a path line
first (foveal's own export) or last (the release); anything else that is not two integers is an error
naming the file and line. Each file is matched to a position of the dataset split by ``match``:

* ``"id"``: its path line, else its name, is an image id of the dataset (``image_id``, or the id with its
  image extension dropped and ``/`` written ``__``, as :func:`export_official` names files). A path line
  that is no image id is looked up in ``image_map`` (:func:`read_image_map`): the released CUB paths name
  images of the release's own crop and numbering, which only a map relates to CUB_200_2011.
* ``"row"``: the name is the image's row of the dataset's annotation file, position = row -
  ``dataset.first_row`` (CelebA-HQ; datasets without rows, or no dataset: the position itself).
* ``"auto"`` (default): ``"id"`` when the dataset has image ids and a file has a path line or every name
  is an id; else ``"row"``.

Import records in ``provenance["released"]`` each file's name and path line (by index) and the folder's
:class:`TextLayout`, so that :func:`export_official` (``layout="released"``) writes the folder back byte
for byte; ``verbatim`` says whether every file re-renders exactly (one with blank lines or stray spaces
does not).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from foveal.data.base import IMAGE_EXTENSIONS, DataError
from foveal.files import atomic_write
from foveal.retina import LocationGrid
from foveal.sequences.format import GlimpseSequences, PathLike

__all__ = ["TextLayout", "CELEBA_HQ_LAYOUT", "CUB_LAYOUT", "FOVEAL_LAYOUT", "EXPORT_LAYOUTS", "MATCH_MODES",
           "export_official", "import_official", "read_image_map"]

EXPORT_LAYOUTS = ("auto", "foveal", "released", "celeba-hq")
MATCH_MODES = ("auto", "id", "row")


@dataclass(frozen=True)
class TextLayout:
    """How one file is written.

    Attributes:
        path_line: ``"none"``, ``"first"`` or ``"last"``: where the image's path line goes.
        separator: between ``r`` and ``c`` (the release: ``", "``).
        newline: ``"\\n"`` or ``"\\r\\n"``.
        final_newline: whether the last line ends with ``newline`` (the released CUB files: no).
    """

    path_line: str = "none"
    separator: str = ", "
    newline: str = "\n"
    final_newline: bool = True

    def __post_init__(self) -> None:
        if self.path_line not in ("none", "first", "last"):
            raise ValueError(f"TextLayout.path_line: expected 'none', 'first' or 'last', found {self.path_line!r}")
        if self.newline not in ("\n", "\r\n"):
            raise ValueError(f"TextLayout.newline: expected '\\n' or '\\r\\n', found {self.newline!r}")
        if not re.fullmatch(r"\s*,\s*|\s+", self.separator) or "\n" in self.separator:
            raise ValueError(f"TextLayout.separator: expected a comma and/or spaces, found {self.separator!r}")

    def render(self, corners: list[list[int]], path: Optional[str] = None) -> bytes:
        """The bytes of a file: ``corners`` ``[T, 2]`` as lines ``r<separator>c``, and ``path`` if given."""
        lines = [f"{r}{self.separator}{c}" for r, c in corners]
        if path is not None:
            lines = lines + [path] if self.path_line == "last" else [path] + lines
        return (self.newline.join(lines) + (self.newline if self.final_newline else "")).encode()


FOVEAL_LAYOUT = TextLayout(path_line="first")
CELEBA_HQ_LAYOUT = TextLayout()
CUB_LAYOUT = TextLayout(path_line="last", final_newline=False)


def _file_stem(image_id: str) -> str:
    """An item id -> the name of its text file: image extension dropped, ``/`` -> ``__``."""
    stem = image_id[: -len(Path(image_id).suffix)] if Path(image_id).suffix.lower() in IMAGE_EXTENSIONS else image_id
    return stem.replace("/", "__")


# -------------------------------------------------------------------------------------------------- export
def _released_names(seqs: GlimpseSequences, where: str) -> tuple[list[str], list[Optional[str]], TextLayout]:
    released = seqs.provenance.get("released")
    if not isinstance(released, dict) or "files" not in released:
        raise DataError(f"{where}: layout 'released': expected a file imported from a released folder "
                        "(provenance.released), found none; use layout 'foveal' or 'celeba-hq'")
    layout = TextLayout(**released.get("layout", {}))
    files, paths = released["files"], released.get("paths") or {}
    names, lines = [], []
    for i in seqs.indices.tolist():
        if str(i) not in files:
            raise DataError(f"{where}: layout 'released': expected a recorded file name for index {i} "
                            "(provenance.released.files), found none")
        names.append(Path(files[str(i)]).stem)
        lines.append(paths.get(str(i)))
    return names, lines, layout


def export_official(seqs: GlimpseSequences, folder: PathLike, *, layout: str = "auto",
                    overwrite: bool = False) -> list[Path]:
    """Write the released text format: one file per image, T lines ``r, c`` (top-left pixel, row first).

    Layouts:

    * ``"foveal"``: ``<id>.txt`` with the id's image extension dropped and ``/`` written ``__``
      (``000123.jpg`` -> ``000123.txt``), or ``<index>.txt`` without ids; an id holding a ``/`` (a
      relative image path, as CUB's) is also written as the first line.
    * ``"released"``: the names, path lines and text layout recorded when the file was imported
      from a released folder: that folder again, byte for byte.
    * ``"celeba-hq"``: the release's CelebA-HQ layout, ``<row>.txt`` holding T lines (row = index; for
      celeba-hq only the splits starting at row 0, ``annotate`` and ``annotate+train``).
    * ``"auto"``: ``"released"`` for an imported file, else ``"foveal"``.

    Returns:
        The files written, in row order.

    Raises:
        DataError: an unknown layout, names that collide, a file that exists (without ``overwrite``).
    """
    where = seqs.source or "export"
    if layout not in EXPORT_LAYOUTS:
        raise DataError(f"{where}: layout: expected one of {EXPORT_LAYOUTS}, found {layout!r}")
    if layout == "auto":
        layout = "released" if isinstance(seqs.provenance.get("released"), dict) else "foveal"
    indices = seqs.indices.tolist()
    if layout == "released":
        names, path_lines, text = _released_names(seqs, where)
    elif layout == "celeba-hq":
        if seqs.dataset == "celeba-hq" and seqs.split not in ("annotate", "annotate+train"):
            raise DataError(f"{where}: layout 'celeba-hq' names files by annotation row: expected a file of split "
                            f"'annotate' or 'annotate+train' (position = row), found {seqs.split!r}; use layout "
                            "'foveal' (files named by image id)")
        names, path_lines, text = [str(i) for i in indices], [None] * len(indices), CELEBA_HQ_LAYOUT
    else:
        names = [_file_stem(i) for i in seqs.ids] if seqs.ids is not None else [str(i) for i in indices]
        path_lines = [i if "/" in i else None for i in seqs.ids] if seqs.ids is not None else [None] * len(indices)
        text = FOVEAL_LAYOUT
    if len(set(names)) != len(names):
        raise DataError(f"{where}: export: expected one file name per image, found names that collide")
    folder = Path(folder)
    paths = [folder / f"{name}.txt" for name in names]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise DataError(f"{existing[0]}: expected a new file, found one ({len(existing)} of the {len(paths)} files "
                        "exist); pass overwrite=True (--force) to replace them")
    folder.mkdir(parents=True, exist_ok=True)
    for row, path in enumerate(paths):
        atomic_write(path, text.render(seqs.corners[row].tolist(), path_lines[row]))
    return paths


# -------------------------------------------------------------------------------------------------- import
_CORNER = re.compile(r"^\s*(-?\d+)(\s*,\s*|\s+)(-?\d+)\s*$")


@dataclass
class _TextFile:
    path: Path
    header: Optional[str]
    corners: list[list[int]]
    layout: TextLayout
    verbatim: bool


def _read_official(path: Path) -> _TextFile:
    """One file: its path line (or None), ``[[r, c], ...]``, its layout and whether that re-renders it exactly."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: expected UTF-8 text (lines 'r, c'), found undecodable bytes") from None
    header, position, separator, corners = None, "none", None, []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _CORNER.match(line)
        if match and position != "last":
            corners.append([int(match.group(1)), int(match.group(3))])
            separator = separator or match.group(2)
        elif match:
            raise DataError(f"{path} line {number}: expected the image path line to be the last line, found "
                            f"{line.strip()!r} after it")
        elif header is None and Path(line.strip()).suffix.lower() in IMAGE_EXTENSIONS:
            header, position = line.strip(), "last" if corners else "first"
        else:
            raise DataError(f"{path} line {number}: expected 'r, c' (two integers, the glimpse's top-left pixel), "
                            f"found {line.strip()!r}")
    if not corners:
        raise DataError(f"{path}: expected T >= 1 lines 'r, c', found none")
    newline = "\r\n" if "\r\n" in text else "\n"
    layout = TextLayout(position, separator, newline, text.endswith(newline))
    return _TextFile(path, header, corners, layout, layout.render(corners, header) == raw)


def read_image_map(path: PathLike, resolve: Optional[Callable[[str], str]] = None) -> dict[str, str]:
    """An image map file: ``{released image: dataset image id}``.

    One pair a line, ``<released image> <dataset image>`` (whitespace-separated; blank lines and lines
    starting with ``#`` skipped). The released image is a path line as the files hold it
    (``data/birds/train/images/17.png``), its file name (``17.png``) or its number (``17``). The dataset
    image is an ``image_id``, or whatever ``resolve`` turns into one (CUB: :meth:`foveal.data.cub.CUB.
    resolve_image` takes an ``images.txt`` id or path).

    Raises:
        FileNotFoundError: no such file.
        DataError: naming the line that is malformed, repeated or names no image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image map file not found (lines '<released image> <dataset image>')")
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens = line.split()
        if len(tokens) != 2:
            raise DataError(f"{path} line {number}: expected '<released image> <dataset image>' (2 fields), found "
                            f"{len(tokens)}")
        key, value = tokens
        if key in out:
            raise DataError(f"{path} line {number}: expected each released image once, found {key!r} again")
        if resolve is not None:
            try:
                value = resolve(value)
            except DataError as err:
                raise DataError(f"{path} line {number}: {err}") from None
        out[key] = value
    if not out:
        raise DataError(f"{path}: expected lines '<released image> <dataset image>', found none")
    return out


def _mapped(header: str, image_map: Mapping[str, str]) -> Optional[str]:
    for key in (header, Path(header).name, Path(header).stem):
        if key in image_map:
            return image_map[key]
    return None


class _Matcher:
    """File -> position of the split (or None: skipped), by ``match`` (module docstring)."""

    def __init__(self, files: list[_TextFile], dataset: Any, where: str, match: str,
                 image_map: Optional[Mapping[str, str]], skip: bool) -> None:
        self.dataset, self.where, self.image_map, self.skip = dataset, where, image_map, skip
        self.by_id: dict[str, int] = {}
        if dataset is not None and hasattr(dataset, "image_id"):
            for i in range(len(dataset)):
                image_id = dataset.image_id(i)
                self.by_id[image_id] = self.by_id[_file_stem(image_id)] = i
        if match == "auto":
            if not self.by_id:
                match = "row"
            elif any(f.header is not None for f in files) or all(f.path.stem in self.by_id for f in files):
                match = "id"  # a path line names the image; so does a name that is an image id
            else:  # every name an integer: rows; else the error names the first file that is no image id
                match = "row" if all(f.path.stem.isdigit() for f in files) else "id"
        if match == "id" and not self.by_id:
            raise DataError(f"{where}: match 'id': expected a dataset with image ids, found "
                            f"{'none given' if dataset is None else 'one without image_id'}")
        self.match = match
        self.skipped: list[str] = []

    def _miss(self, message: str) -> None:
        if not self.skip:
            raise DataError(message)

    def position(self, f: _TextFile) -> Optional[int]:
        index = self._by_id(f) if self.match == "id" else self._by_row(f)
        if index is None:
            self.skipped.append(f.path.name)
        return index

    def _by_id(self, f: _TextFile) -> Optional[int]:
        key = f.header if f.header is not None else f.path.stem
        if key in self.by_id:
            return self.by_id[key]
        if f.header is None:
            return self._miss(f"{f.path}: expected a file named after an image id of {self.where}, found "
                              f"{key!r}, which matches none (files named by row: match 'row')")
        if self.image_map is None:
            raise DataError(f"{f.path}: its image path {f.header!r} is no image id of {self.where} (it names an image "
                            "of the release's own crop and numbering); expected an image map: pass --image-map FILE "
                            "(image_map=), lines '<released image> <dataset image>'")
        mapped = _mapped(f.header, self.image_map)
        if mapped is None:
            return self._miss(f"{f.path}: image path {f.header!r}: expected an entry in the image map, found none")
        if mapped not in self.by_id:
            return self._miss(f"{f.path}: image path {f.header!r} maps to {mapped!r}: expected an image of "
                              f"{self.where}, found it nowhere in the split (another split?)")
        return self.by_id[mapped]

    def _by_row(self, f: _TextFile) -> Optional[int]:
        stem = f.path.stem
        if not stem.isdigit():
            if self.dataset is None or not self.by_id:
                raise DataError(f"{f.path}: expected a file named <index>.txt (no dataset with image ids was given), "
                                f"found {f.path.name!r}")
            raise DataError(f"{f.path}: expected a file named <row>.txt (match 'row'), found {f.path.name!r}")
        if self.dataset is None:
            return int(stem)
        first = int(getattr(self.dataset, "first_row", 0))
        index = int(stem) - first
        if not 0 <= index < len(self.dataset):
            return self._miss(f"{f.path}: expected a row of {self.where} (rows {first} .. "
                              f"{first + len(self.dataset) - 1}), found row {stem}")
        return index


def import_official(folder: PathLike, *, dataset_name: str, split: str, image_size: tuple[int, int],
                    glimpse_size: int, dataset: Any = None, grid: Optional[LocationGrid] = None, match: str = "auto",
                    image_map: Optional[Mapping[str, str]] = None, task: Optional[str] = None,
                    skip_unmatched: bool = False) -> GlimpseSequences:
    """Read the released text format (every ``*.txt`` in ``folder``) as :class:`GlimpseSequences`.

    Args:
        dataset: the split the files belong to; files are then matched to it by ``match`` (module
            docstring) and the result is validated against it. Without it, files are named by index.
        grid: the allowed positions; every corner must lie on it (the release's CelebA-HQ grid:
            ``LocationGrid.from_linspace((224, 224), 16, 0, 207, 50)``).
        match: ``"auto"``, ``"id"`` or ``"row"``.
        image_map: released path line (or its file name, or number) -> dataset image id
            (:func:`read_image_map`); needed for path lines that are no image id (the CUB release).
        task: what the sequences were made for (e.g. a CelebA attribute); default the dataset's ``task``,
            which it must equal.
        skip_unmatched: leave out files whose image is not in the split (or not in the map) instead of
            failing; their names are kept in ``provenance["skipped"]``.

    Raises:
        FileNotFoundError: no ``*.txt`` in ``folder``.
        DataError: naming the file (and line) that is malformed, unmatched or of another length.
    """
    folder = Path(folder)
    where = f"{dataset_name}/{split}"
    if match not in MATCH_MODES:
        raise DataError(f"{folder}: match: expected one of {MATCH_MODES}, found {match!r}")
    paths = sorted(folder.glob("*.txt"))
    if not paths:
        raise FileNotFoundError(f"{folder}: expected glimpse-sequence text files (*.txt), found none")
    files = [_read_official(p) for p in paths]
    for f in files[1:]:
        if len(f.corners) != len(files[0].corners):
            raise DataError(f"{f.path}: expected {len(files[0].corners)} glimpses (as {paths[0].name}), found "
                            f"{len(f.corners)}")
    have_task = getattr(dataset, "task", None)
    if task is not None and have_task is not None and task != have_task:
        raise DataError(f"{folder}: task: the sequences are said to be made for {task!r}, the dataset {where} is "
                        f"labelled by {have_task!r}; build the dataset with attribute {task!r}")
    matcher = _Matcher(files, dataset, where, match, image_map, skip_unmatched)
    kept = [(matcher.position(f), f) for f in files]
    kept = [(i, f) for i, f in kept if i is not None]
    if not kept:
        raise DataError(f"{folder}: expected files of images of {where}, found none that matches "
                        f"({len(files)} skipped)")
    indices = [i for i, _ in kept]
    ids = [dataset.image_id(i) for i in indices] if matcher.by_id else None
    released = {"layout": dataclasses.asdict(files[0].layout),
                "verbatim": all(f.verbatim and f.layout == files[0].layout for _, f in kept),
                "files": {str(i): f.path.name for i, f in kept}}
    if any(f.header is not None for _, f in kept):
        released["paths"] = {str(i): f.header for i, f in kept if f.header is not None}
    provenance: dict[str, Any] = {"imported_from": str(folder), "files": len(files), "match": matcher.match,
                                  "released": released}
    if matcher.skipped:
        provenance["skipped"] = matcher.skipped
    seqs = GlimpseSequences(dataset_name, split, image_size, glimpse_size, torch.tensor(indices),
                            torch.tensor([f.corners for _, f in kept]), grid=grid, ids=ids,
                            task=task if task is not None else have_task, method="imported", provenance=provenance,
                            source=str(folder))
    seqs = seqs.subset(torch.argsort(seqs.indices))
    if dataset is not None:
        seqs.validate(dataset)
    return seqs
