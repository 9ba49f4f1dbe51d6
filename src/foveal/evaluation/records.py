"""Saved records that figures are made from: glimpse records (``.npz``) and metric logs (``metrics.csv``).

Plots never see a model. An evaluation writes one *glimpse record* per split, where the model
looked on every evaluated image, and the engine writes ``metrics.csv``; :mod:`foveal.evaluation.glimpse_plots`
and :mod:`foveal.evaluation.plots` read only these, so a figure can be remade, restyled or compared across
runs long after training.

A glimpse record is an ``.npz`` written with :func:`numpy.savez_compressed` and holding no pickled
objects (it loads with ``allow_pickle=False``)::

    locations    [N, T, 2] float32  (row, col) glimpse centres in [-1, 1], see foveal.retina
    labels       [N]       int64
    predictions  [N]       int64    the model's class after the last glimpse
    image_size   [2]       int64    (H, W)
    glimpse_size, num_scales, factor   0-d int64
    images       [n, C, H, W] float32 in [0, 1], optional: the first n <= N images, for example figures
    class_names  [K]       unicode, optional
    log_prob     [N, T]    float32, optional: log-probability of each location under the policy
    extra/<key>  any numeric array, optional

The statistic behind the heatmaps is :func:`glimpse_coverage`: for each step ``t`` the fraction of
images whose (finest-scale) glimpse ``t`` covered each pixel,

    coverage[t, y, x] = 1/N * sum_n [ pixel (y, x) lies in the glimpse of image n at step t ].
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from foveal.retina import top_left
from foveal.training.loop import METRICS_HEADER

PathLike = Union[str, Path]

_REQUIRED = ("locations", "labels", "predictions", "image_size", "glimpse_size", "num_scales", "factor")
_EXTRA = "extra/"


@dataclass
class GlimpseRecord:
    """Where a model looked, on N images with T glimpses each (shapes in the module docstring)."""

    locations: np.ndarray  # [N, T, 2] float32
    labels: np.ndarray  # [N] int64
    predictions: np.ndarray  # [N] int64
    image_size: tuple[int, int]
    glimpse_size: int
    num_scales: int = 1
    factor: int = 2
    images: Optional[np.ndarray] = None  # [n, C, H, W] float32, n <= N
    class_names: Optional[list[str]] = None
    log_prob: Optional[np.ndarray] = None  # [N, T]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return self.locations.shape[0]

    @property
    def num_glimpses(self) -> int:
        return self.locations.shape[1]

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predictions).mean()) if len(self.labels) else float("nan")

    def class_name(self, label: int) -> str:
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)


def save_glimpse_record(
    path: PathLike,
    *,
    locations,
    labels,
    predictions,
    image_size: Sequence[int],
    glimpse_size: int,
    num_scales: int = 1,
    factor: int = 2,
    images=None,
    class_names: Optional[Sequence[str]] = None,
    log_prob=None,
    extra: Optional[dict[str, np.ndarray]] = None,
) -> Path:
    """Write a glimpse record (see the module docstring); array arguments may be numpy or torch.

    Returns:
        The path written, with parent folders created.
    """
    path = Path(path)
    locations = _numpy(locations).astype(np.float32)
    labels, predictions = _numpy(labels).astype(np.int64), _numpy(predictions).astype(np.int64)
    if locations.ndim != 3 or locations.shape[-1] != 2:
        raise ValueError(f"{path}: locations: expected shape [N, T, 2], found {locations.shape}")
    N = locations.shape[0]
    for name, arr in (("labels", labels), ("predictions", predictions)):
        if arr.shape != (N,):
            raise ValueError(f"{path}: {name}: expected shape ({N},) to match locations, found {arr.shape}")
    if len(image_size) != 2:
        raise ValueError(f"{path}: image_size: expected (H, W), found {tuple(image_size)}")
    arrays = {
        "locations": locations, "labels": labels, "predictions": predictions,
        "image_size": np.asarray(image_size, dtype=np.int64), "glimpse_size": np.asarray(glimpse_size, dtype=np.int64),
        "num_scales": np.asarray(num_scales, dtype=np.int64), "factor": np.asarray(factor, dtype=np.int64),
    }
    if images is not None:
        images = _numpy(images).astype(np.float32)
        if images.ndim != 4 or images.shape[0] > N or tuple(images.shape[2:]) != tuple(image_size):
            raise ValueError(f"{path}: images: expected [n <= {N}, C, {image_size[0]}, {image_size[1]}], "
                             f"found {images.shape}")
        arrays["images"] = images
    if class_names is not None:
        arrays["class_names"] = np.asarray([str(c) for c in class_names], dtype=np.str_)
    if log_prob is not None:
        log_prob = _numpy(log_prob).astype(np.float32)
        if log_prob.shape != locations.shape[:2]:
            raise ValueError(f"{path}: log_prob: expected shape {locations.shape[:2]}, found {log_prob.shape}")
        arrays["log_prob"] = log_prob
    for key, value in (extra or {}).items():
        value = _numpy(value)
        if value.dtype == object:
            raise ValueError(f"{path}: extra[{key!r}]: expected a numeric or string array, found dtype object")
        arrays[_EXTRA + key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to other suffixes
        np.savez_compressed(f, **arrays)
    return path


def load_glimpse_record(path: PathLike) -> GlimpseRecord:
    """Read a record written by :func:`save_glimpse_record` (no pickles are ever loaded)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        found = sorted(data.files)
        missing = [k for k in _REQUIRED if k not in found]
        if missing:
            raise ValueError(f"{path}: not a glimpse record: missing key {missing[0]!r} "
                             f"(expected {list(_REQUIRED)}, found {found})")
        get = {k: data[k] for k in found}
    return GlimpseRecord(
        locations=get["locations"], labels=get["labels"], predictions=get["predictions"],
        image_size=tuple(int(v) for v in get["image_size"]), glimpse_size=int(get["glimpse_size"]),
        num_scales=int(get["num_scales"]), factor=int(get["factor"]), images=get.get("images"),
        class_names=[str(c) for c in get["class_names"]] if "class_names" in get else None,
        log_prob=get.get("log_prob"),
        extra={k[len(_EXTRA):]: v for k, v in get.items() if k.startswith(_EXTRA)},
    )


def as_record(record_or_path: Union[GlimpseRecord, PathLike]) -> GlimpseRecord:
    return record_or_path if isinstance(record_or_path, GlimpseRecord) else load_glimpse_record(record_or_path)


def read_metrics(csv_path: PathLike) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The engine's long-format ``metrics.csv`` as ``{split: {name: (iterations, values)}}``.

    Rows of one (split, name) keep their file order; iterations are int64, values float64.
    """
    csv_path = Path(csv_path)
    columns: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header != METRICS_HEADER:
            raise ValueError(f"{csv_path}: expected header {','.join(METRICS_HEADER)!r}, found {','.join(header)!r}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 4:
                raise ValueError(f"{csv_path}, line {line}: expected 4 fields {METRICS_HEADER}, found {row}")
            iteration, split, name, value = row
            its, vals = columns.setdefault(split, {}).setdefault(name, ([], []))
            its.append(int(float(iteration)))
            vals.append(float(value))
    return {split: {name: (np.asarray(its, dtype=np.int64), np.asarray(vals, dtype=np.float64))
                    for name, (its, vals) in names.items()} for split, names in columns.items()}


def glimpse_coverage(locations, image_size: Sequence[int], glimpse_size: int) -> np.ndarray:
    """Fraction of images whose glimpse ``t`` covered each pixel (module docstring).

    Args:
        locations: ``[N, T, 2]`` (row, col) in [-1, 1], numpy or torch.
        image_size: ``(H, W)``.
        glimpse_size: side of the (finest) glimpse in pixels; parts off the image are clipped.

    Returns:
        ``[T, H, W]`` float64 in [0, 1]; all zeros when N = 0.
    """
    locations = torch.as_tensor(_numpy(locations), dtype=torch.float32)
    if locations.dim() != 3 or locations.shape[-1] != 2:
        raise ValueError(f"locations: expected shape [N, T, 2], found {tuple(locations.shape)}")
    N, T, _ = locations.shape
    H, W = (int(v) for v in image_size)
    if N == 0:
        return np.zeros((T, H, W))
    corners = top_left(locations, (H, W), glimpse_size).numpy()  # [N, T, 2]
    r, c = np.arange(H), np.arange(W)
    in_rows = (r >= corners[..., 0, None]) & (r < corners[..., 0, None] + glimpse_size)  # [N, T, H]
    in_cols = (c >= corners[..., 1, None]) & (c < corners[..., 1, None] + glimpse_size)  # [N, T, W]
    counts = np.einsum("nth,ntw->thw", in_rows.astype(np.float64), in_cols.astype(np.float64))
    return counts / N


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
