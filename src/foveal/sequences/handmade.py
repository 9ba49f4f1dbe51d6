"""Sequences given by hand: from part annotations (PS-HGS) and from files of glimpse centres.

The baselines of Harvey et al. (2021, section 6) supervise with near-optimal sequences, sequences sampled
from a trained policy (PS-RAM, :mod:`foveal.sequences.makers`), and:

* **PS-HGS** - :func:`hgs_sequences`: hand-crafted glimpse sequences from CUB's part annotations, the
  beak, an eye, the forehead, the belly and a foot, in that order; a part that is not visible is
  replaced by a randomly chosen visible part (of all 15). A group with two parts (left / right eye,
  left / right leg) takes a visible one, at random if both are.
* **points** - :func:`points_sequences`: user-given glimpse centres for any dataset, from CSV or JSON.

Here the hand decides the length: T is the number of part groups, or of points per image (so these are
not :data:`~foveal.sequences.makers.MAKERS`, which make T glimpses for given images).

A point ``(row, col)`` is a glimpse *centre* in continuous pixel coordinates (pixel ``r`` spans
``[r, r + 1)``; CUB part coordinates mapped into the crop are such points). It becomes the location
``2 * (row, col) / (H, W) - 1`` in RAM's convention, is clamped so that the glimpse lies inside the
image, and is snapped to the nearest cell when a ``grid`` is given; the file stores the glimpse's
top-left pixel (``corners``), as every sequence file does.

Point files::

    CSV   header "index,t,row,col" (or "id,t,row,col" with the dataset's image ids), one row per glimpse
    JSON  {"<index or id>": [[row, col], ...], ...}   (keys that are not integers are image ids)

Every image must have the same number of glimpses, t = 0..T-1.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from foveal.data.base import DataError
from foveal.retina import LocationGrid, top_left
from foveal.sequences.format import GlimpseSequences
from foveal.sequences.makers import Target

__all__ = ["HGS_PARTS", "hgs_sequences", "points_sequences", "points_to_corners"]

# The paper's order; each entry is a group of CUB part names, one of which is looked at.
HGS_PARTS: tuple[tuple[str, ...], ...] = (("beak",), ("left eye", "right eye"), ("forehead",), ("belly",),
                                          ("left leg", "right leg"))


def points_to_corners(points: Tensor, image_size: tuple[int, int], glimpse_size: int,
                      grid: Optional[LocationGrid] = None) -> Tensor:
    """Glimpse centres ``[..., 2]`` (row, col, continuous pixels) -> top-left pixels ``[..., 2]`` int64
    of glimpses inside the image (on ``grid`` if given)."""
    H, W = image_size
    hw = torch.tensor([H, W], dtype=torch.float64)
    locations = (points.double() / hw * 2 - 1).clamp(-1, 1)
    if grid is not None:
        return grid.corners()[grid.nearest_index(locations)]
    corners = top_left(locations, image_size, glimpse_size)
    limit = torch.tensor([H - glimpse_size, W - glimpse_size])
    return torch.minimum(corners.clamp_min(0), limit)


def _make(dataset: Any, indices: Sequence[int], corners: Tensor, glimpse_size: int, grid: Optional[LocationGrid],
          method: str, provenance: dict) -> GlimpseSequences:
    target = Target(dataset, list(indices), corners.shape[1])
    return target.sequences(corners, glimpse_size=glimpse_size, grid=grid, method=method, provenance=provenance)


def hgs_sequences(dataset: Any, indices: Sequence[int], *, glimpse_size: int, grid: Optional[LocationGrid] = None,
                  parts: Sequence[Sequence[str]] = HGS_PARTS, seed: int = 0) -> GlimpseSequences:
    """PS-HGS: hand-crafted sequences from part annotations (module docstring).

    Args:
        dataset: a split with ``part_names`` and ``parts(index) -> [P, 3]`` (x, y, visible) in its
            image's pixels (:class:`foveal.data.cub.CUB`).
        parts: the groups of part names to look at, in order (T = their number).
        seed: the random choices (which visible part replaces an invisible one, which of two).

    Raises:
        DataError: the dataset has no part annotations, or a part name is unknown.
    """
    names = list(getattr(dataset, "part_names", []) or [])
    if not names or not hasattr(dataset, "parts"):
        raise DataError(f"{getattr(dataset, 'name', 'dataset')}: PS-HGS needs part annotations (CUB's parts/), "
                        "found none; use points_sequences with your own points instead")
    for group in parts:
        for name in group:
            if name not in names:
                raise DataError(f"{dataset.name}: part {name!r}: expected one of {names}, found it missing")
    rng = np.random.default_rng(seed)
    H, W = dataset.image_shape[1:]
    points = np.zeros((len(indices), len(parts), 2))
    replaced = 0
    for n, i in enumerate(indices):
        xyv = np.asarray(dataset.parts(i))  # [P, 3]
        visible = np.flatnonzero(xyv[:, 2] > 0)
        for t, group in enumerate(parts):
            options = [names.index(p) for p in group if xyv[names.index(p), 2] > 0]
            if options:
                choice = options[rng.integers(len(options))]
            elif len(visible):
                choice, replaced = int(visible[rng.integers(len(visible))]), replaced + 1
            else:  # nothing annotated as visible: the image centre
                points[n, t] = (H / 2, W / 2)
                continue
            points[n, t] = (xyv[choice, 1], xyv[choice, 0])  # (row, col) = (y, x)
    corners = points_to_corners(torch.from_numpy(points), (H, W), glimpse_size, grid)
    return _make(dataset, indices, corners, glimpse_size, grid, "hgs",
                 {"parts": [list(g) for g in parts], "seed": seed, "replaced_invisible": replaced})


def _read_points(path: Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{key: [(t, row, col), ...]}`` from a CSV or JSON point file (module docstring)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: point file not found")
    out: dict[str, list[tuple[int, float, float]]] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected an object {{index or id: [[row, col], ...]}}, found {type(data).__name__}")
        for key, pts in data.items():
            try:
                out[str(key)] = [(t, float(r), float(c)) for t, (r, c) in enumerate(pts)]
            except (TypeError, ValueError):
                raise DataError(f"{path}: key {key!r}: expected a list of [row, col] pairs, found {pts!r}") from None
        return out
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header not in (["index", "t", "row", "col"], ["id", "t", "row", "col"]):
            raise DataError(f"{path}: expected the header 'index,t,row,col' or 'id,t,row,col', found {','.join(header)!r}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                key, t, r, c = row[0].strip(), int(row[1]), float(row[2]), float(row[3])
            except (ValueError, IndexError):
                raise DataError(f"{path} line {line}: expected <{header[0]}>,<int t>,<row>,<col>, found {row}") from None
            out.setdefault(key if header[0] == "id" else str(int(key)), []).append((t, r, c))
    return out


def points_sequences(path: Union[str, Path], dataset: Any, *, glimpse_size: int,
                     grid: Optional[LocationGrid] = None, method: str = "points") -> GlimpseSequences:
    """Sequences from a file of glimpse centres (module docstring), for ``dataset``'s items.

    Raises:
        DataError: a malformed file, an unknown id or index, images with different numbers of glimpses.
    """
    path = Path(path)
    table = _read_points(path)
    id_to_index = None
    indices, rows = [], []
    for key, pts in table.items():
        if key.lstrip("-").isdigit():
            index = int(key)
        else:
            if id_to_index is None:
                if not hasattr(dataset, "image_id"):
                    raise DataError(f"{path}: key {key!r}: image ids need a dataset with image_id(), use indices")
                id_to_index = {dataset.image_id(i): i for i in range(len(dataset))}
            if key not in id_to_index:
                raise DataError(f"{path}: id {key!r}: expected an image id of {dataset.name} {dataset.split}, found none")
            index = id_to_index[key]
        if not 0 <= index < len(dataset):
            raise DataError(f"{path}: index {index}: expected a position in [0, {len(dataset)}), found {index}")
        pts = sorted(pts)
        if [t for t, _, _ in pts] != list(range(len(pts))):
            raise DataError(f"{path}: image {key}: expected glimpses t = 0..{len(pts) - 1} once each, found "
                            f"{[t for t, _, _ in pts]}")
        indices.append(index)
        rows.append([(r, c) for _, r, c in pts])
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise DataError(f"{path}: expected every image to have the same number of glimpses, found {sorted(lengths)}")
    order = np.argsort(indices, kind="stable")
    points = torch.tensor([rows[k] for k in order], dtype=torch.float64)
    corners = points_to_corners(points, tuple(dataset.image_shape[1:]), glimpse_size, grid)
    return _make(dataset, [indices[k] for k in order], corners, glimpse_size, grid, method, {"points": str(path)})
