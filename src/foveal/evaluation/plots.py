"""Figures from saved records: glimpse heatmaps and examples, training curves, benchmark bars.

Every function takes saved records (a glimpse record ``.npz`` from
:func:`foveal.evaluation.records.save_glimpse_record`, a ``metrics.csv``, a benchmark JSON) or the
objects read from them, never a model; writes one PNG to ``path`` (parent folders created) and
returns its :class:`~pathlib.Path`.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas rather than through
``pyplot``: nothing is registered with pyplot (so nothing is left open, however many figures a sweep
makes) and the caller's backend is never switched (``matplotlib.use("Agg")`` would close the figures of
someone plotting in a notebook). matplotlib is imported inside the functions, so importing foveal
does not import it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from foveal.evaluation.records import GlimpseRecord, PathLike, as_record, glimpse_coverage, read_metrics
from foveal.retina import top_left

Metrics = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]

_GOOD, _BAD = "#1a7f37", "#c62828"  # title colours of a right / wrong prediction
_DPI = 130


def _figure(width: float, height: float):
    """A figure that belongs to no pyplot state, with constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=_DPI, format="png", facecolor="white")
    finally:
        fig.clear()  # drop the artists now rather than at garbage collection
    return path


def _source(record_or_path) -> str:
    return "" if isinstance(record_or_path, GlimpseRecord) else f"{record_or_path}: "


def _display(image: np.ndarray) -> tuple[np.ndarray, Optional[str]]:
    """``[C, H, W]`` in [0, 1] -> an array for ``imshow`` and its colour map (RGB for C = 3, else channel 0)."""
    if image.shape[0] == 3:
        return np.clip(image.transpose(1, 2, 0), 0, 1), None
    return image[0], "gray"


# --------------------------------------------------------------------------------------------- glimpses


def plot_glimpse_heatmaps(record_or_path: Union[GlimpseRecord, PathLike], path: PathLike, *,
                          title: Optional[str] = None) -> Path:
    """Where the model looked at each step: one panel per glimpse ``t = 1..T`` of :func:`glimpse_coverage`.

    All panels share one colour scale (fraction of the record's N images whose finest-scale glimpse
    covered the pixel). When the record holds images, their mean is shown in the first panel and
    outlined faintly on every heatmap, for orientation.
    """
    rec = as_record(record_or_path)
    coverage = glimpse_coverage(rec.locations, rec.image_size, rec.glimpse_size)  # [T, H, W]
    T = rec.num_glimpses
    mean = None
    if rec.images is not None and len(rec.images):
        mean, mean_cmap = _display(rec.images.mean(0))
    panels = T + (mean is not None)
    nrows = math.ceil(panels / 6)
    ncols = math.ceil(panels / nrows)  # balanced rows: 7 panels as 4 + 3, not 6 + 1
    H, W = rec.image_size
    side = 2.3
    width = max(4.5, side * ncols * max(1.0, W / H) + 0.9)
    fig = _figure(width, side * nrows + 0.6 + 0.25 * (width < 8))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    first = 0
    if mean is not None:
        lo, hi = float(mean.min()), float(mean.max())
        shown = (mean - lo) / (hi - lo) if hi > lo else mean  # contrast-stretched: a mean is often dim
        axes[0].imshow(shown, cmap=mean_cmap, vmin=0, vmax=1, interpolation="nearest")
        axes[0].set_title(f"mean of {len(rec.images)} images", fontsize=10)
        first = 1
    vmax = max(float(coverage.max()), 1e-12)
    outline = None if mean is None else _outline(mean)
    for t in range(T):
        ax = axes[first + t]
        im = ax.imshow(coverage[t], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        if outline is not None:
            ax.contour(outline, levels=[0.5 * (outline.min() + outline.max())], colors="white", linewidths=0.7,
                       alpha=0.6)
        ax.set_title(f"glimpse {t + 1}", fontsize=10)
    bar = fig.colorbar(im, ax=axes.tolist(), shrink=0.85, pad=0.02)
    bar.set_label("fraction of images whose glimpse\ncovered the pixel", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    if title is None:
        title = ("Where the model looked at each glimpse" + ("\n" if width < 8 else " ")
                 + f"({rec.num_images} images, {rec.glimpse_size} px glimpses, accuracy {100 * rec.accuracy:.1f}%)")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _outline(mean: np.ndarray) -> Optional[np.ndarray]:
    """The mean image, blurred, to draw one contour of; None when it has no clear shape (e.g. clutter)."""
    gray = mean if mean.ndim == 2 else mean.mean(-1)  # [H, W]
    k = max(1, round(min(gray.shape) / 10)) | 1  # odd box width, ~1/10 of the image
    blurred = np.pad(gray, k // 2, mode="edge")
    kernel = np.ones(k) / k
    blurred = np.apply_along_axis(np.convolve, 0, blurred, kernel, mode="valid")
    blurred = np.apply_along_axis(np.convolve, 1, blurred, kernel, mode="valid")
    return blurred if blurred.std() > 0.04 else None  # noise averages out to a flat grey


def plot_glimpse_examples(record_or_path: Union[GlimpseRecord, PathLike], path: PathLike, *,
                          max_images: int = 16, ncols: int = 4) -> Path:
    """A grid of the record's images with every glimpse drawn as a numbered box.

    The finest scale is a solid box, coarser scales thin dashed boxes of the same colour; the number
    ``t`` (1 = first glimpse) sits in the box's top-left corner. Titles give the true and predicted
    class, green when they agree and red when not.
    """
    rec = as_record(record_or_path)
    if rec.images is None or len(rec.images) == 0:
        raise ValueError(f"{_source(record_or_path)}the glimpse record holds no images to draw; "
                         "save it with images=[n, C, H, W] to make example figures")
    n = min(max_images, len(rec.images))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    H, W = rec.image_size
    side = 2.6
    width = max(4.5, side * ncols * max(1.0, W / H))
    lines = [f"Glimpses 1..{rec.num_glimpses} in order", f"solid box: the {rec.glimpse_size} px glimpse"]
    if rec.num_scales > 1:
        lines.append(f"dashed: coarser scales (x{rec.factor} per scale)")
    narrow = width < 9  # one title line would be cut off: one line per part
    fig = _figure(width, side * nrows + 0.5 + 0.22 * (len(lines) - 1) * narrow)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    T = rec.num_glimpses
    colours = _step_colours(T)
    # Top-left pixels of every glimpse at every scale: [S][N, T, 2].
    locations = torch.as_tensor(rec.locations[:n])
    corners = [top_left(locations, (H, W), rec.glimpse_size * rec.factor**k).numpy() for k in range(rec.num_scales)]
    for i in range(n):
        ax = axes[i]
        image, cmap = _display(rec.images[i])
        ax.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        for t in range(T):
            _draw_glimpse(ax, [c[i, t] for c in corners], rec.glimpse_size, rec.factor, (H, W), t + 1, colours[t])
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        label, pred = int(rec.labels[i]), int(rec.predictions[i])
        ax.set_title(f"true: {_short(rec.class_name(label))}  pred: {_short(rec.class_name(pred))}",
                     color=_GOOD if label == pred else _BAD, fontsize=10)
    fig.suptitle(("\n" if narrow else "; ").join(lines), fontsize=11)
    return _save(fig, path)


def _draw_glimpse(ax, corners: Sequence[np.ndarray], size: int, factor: int, image_size: tuple[int, int],
                  number: int, colour) -> None:
    """One glimpse: a box per scale (pixel-exact: pixel (r, c) spans [c - .5, c + .5]) and its number."""
    from matplotlib.patches import Rectangle

    H, W = image_size
    for k, (r0, c0) in enumerate(corners):
        side = size * factor**k
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), side, side, fill=False, edgecolor=colour,
                               linewidth=2.0 if k == 0 else 0.7, linestyle="-" if k == 0 else "--",
                               alpha=1.0 if k == 0 else 0.55))
    r0, c0 = corners[0]
    # The corner of a box hanging off the image is moved inside, so the number stays visible.
    x, y = min(max(c0, 0), W - 1) - 0.5, min(max(r0, 0), H - 1) - 0.5
    ax.text(x, y, str(number), ha="left", va="top", fontsize=8, fontweight="bold", color="white",
            bbox=dict(boxstyle="square,pad=0.15", facecolor=colour, edgecolor="none", alpha=0.9))


def _step_colours(T: int) -> list:
    from matplotlib import colormaps

    if T <= 10:
        return [colormaps["tab10"](t) for t in range(T)]
    cmap = colormaps["turbo"]
    return [cmap(0.1 + 0.8 * t / (T - 1)) for t in range(T)]


def _short(name: str, limit: int = 14) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


# --------------------------------------------------------------------------------------------- curves


def plot_curves(runs: Union[PathLike, Mapping[str, Union[PathLike, Metrics]]], path: PathLike, *,
                metric: str = "accuracy", split: str = "val", xlabel: str = "iteration") -> Path:
    """One line per run of ``split``/``metric`` against iteration, all on one plot.

    Args:
        runs: a ``metrics.csv`` path (one run, labelled by its folder), or ``{label: path or read_metrics() dict}``.
    """
    if isinstance(runs, (str, Path)):
        runs = {Path(runs).parent.name or Path(runs).stem: runs}
    fig = _figure(7.0, 4.5)
    ax = fig.subplots()
    for label, source in runs.items():
        metrics = source if isinstance(source, Mapping) else read_metrics(source)
        x, y = _series(metrics, split, metric, f"run {label!r}")
        ax.plot(x, y, marker="o" if len(x) <= 30 else None, markersize=4, linewidth=1.6, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{split} {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(f"{split} {metric} by {xlabel}", fontsize=11)
    return _save(fig, path)


def plot_training_summary(metrics_csv: Union[PathLike, Metrics], path: PathLike) -> Path:
    """Two panels: training loss (raw and smoothed) and validation accuracy / cross-entropy."""
    metrics = metrics_csv if isinstance(metrics_csv, Mapping) else read_metrics(metrics_csv)
    fig = _figure(11.0, 4.2)
    left, right = fig.subplots(1, 2)
    train = metrics.get("train", {})
    name = next((n for n in ("loss", "ce") if n in train), None)
    if name is None:
        left.text(0.5, 0.5, "no training loss recorded", ha="center", va="center", transform=left.transAxes)
    else:
        x, y = train[name]
        window = max(1, len(y) // 25)
        left.plot(x, y, color="C0", alpha=0.3 if window > 1 else 1.0, linewidth=1, label=f"train {name}")
        if window > 1:
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            left.plot(x[window - 1:], smooth, color="C0", linewidth=2, label=f"moving average of {window}")
        left.legend(fontsize=9)
        left.set_ylabel(f"train {name}")
    left.set_title("training", fontsize=11)

    val = metrics.get("val", {})
    handles = []
    if "accuracy" in val:
        handles += right.plot(*val["accuracy"], color="C2", marker="o", markersize=3, label="val accuracy")
        right.set_ylabel("val accuracy", color="C2")
    if "ce" in val:
        twin = right.twinx()
        handles += twin.plot(*val["ce"], color="C3", marker="s", markersize=3, linestyle="--",
                             label="val cross-entropy")
        twin.set_ylabel("val cross-entropy", color="C3")
    if handles:
        right.legend(handles=handles, labels=[h.get_label() for h in handles], fontsize=9, loc="center right")
    else:
        right.text(0.5, 0.5, "no validation rows", ha="center", va="center", transform=right.transAxes)
    right.set_title("validation", fontsize=11)
    for ax in (left, right):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _series(metrics: Metrics, split: str, metric: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in metrics or metric not in metrics[split]:
        found = {s: sorted(names) for s, names in metrics.items()}
        raise ValueError(f"{what}: no {split!r} metric {metric!r}; found {found}")
    return metrics[split][metric]


# --------------------------------------------------------------------------------------------- benchmarks


def plot_speedup(results: Union[PathLike, Sequence[Mapping]], path: PathLike) -> Path:
    """Time per batch of each implementation, with the speed-up over the reference.

    Args:
        results: ``[{"label", "batch_size", "ms_per_batch"}, ...]`` or a JSON file of that list (or of
            ``{"results": [...], "meta": {"setting": ...}}``, as ``benchmarks/retina.py`` writes). The
            reference of each batch size is the entry whose label contains "loop", else the slowest.
    """
    results, setting = _benchmark_results(results)
    speedups = speedup_over_reference(results)
    ms = np.array([float(r["ms_per_batch"]) for r in results])
    fig = _figure(8.5, max(3.0, 0.55 * len(results) + 1.6))
    ax = fig.subplots()
    y = np.arange(len(results))
    ax.barh(y, ms, color=["0.6" if s is None else "C0" for s in speedups], height=0.6)
    ax.set_yticks(y, [r["label"] for r in results], fontsize=9)
    ax.invert_yaxis()  # first result on top
    log = ms.max() / max(ms.min(), 1e-12) > 20
    if log:
        ax.set_xscale("log")
    for yi, value, speedup in zip(y, ms, speedups):
        note = ("reference" if speedup is None else f"{speedup:.0f}x faster" if speedup >= 10
                else f"{speedup:.2g}x faster" if speedup >= 1 else f"{1 / speedup:.2g}x slower")
        ax.text(value, yi, f"  {value:.3g} ms  ({note})", va="center", ha="left", fontsize=9)
    ax.set_xlim(ms.min() / 2 if log else 0, ms.max() * (8 if log else 1.45))  # room for the notes
    ax.set_xlabel("ms per batch" + (" (log scale)" if log else "") + ", lower is better")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Time per batch" + (f"\n{setting}" if setting else ""), fontsize=11)
    return _save(fig, path)


def speedup_over_reference(results: Sequence[Mapping]) -> list[Optional[float]]:
    """``reference ms / ms`` of each result against the reference of its batch size (None for the reference).

    The reference is the first result whose label contains "loop", else the slowest one.
    """
    reference = {}
    for batch in {r["batch_size"] for r in results}:
        group = [r for r in results if r["batch_size"] == batch]
        loops = [r for r in group if "loop" in r["label"].lower()]
        reference[batch] = loops[0] if loops else max(group, key=lambda r: r["ms_per_batch"])
    return [None if reference[r["batch_size"]] is r else reference[r["batch_size"]]["ms_per_batch"] / r["ms_per_batch"]
            for r in results]


def _benchmark_results(results) -> tuple[list[Mapping], Optional[str]]:
    """Results (and the benchmark's setting line, if its JSON has one) from a list or a JSON file."""
    setting, source = None, "plot_speedup"
    if isinstance(results, (str, Path)):
        source = str(results)
        data = json.loads(Path(results).read_text())
        if isinstance(data, Mapping):
            setting = data.get("meta", {}).get("setting")
            data = data.get("results")
        if not isinstance(data, list):
            raise ValueError(f"{source}: expected a list of results or {{'results': [...]}}, "
                             f"found {type(data).__name__}")
        results = data
    if not results:
        raise ValueError(f"{source}: expected at least one result, found none")
    for r in results:
        missing = {"label", "batch_size", "ms_per_batch"} - set(r)
        if missing:
            raise ValueError(f"{source}: result {dict(r)} lacks {sorted(missing)}")
    return list(results), setting


def plot_accuracy_vs(xs_by_method: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: PathLike, *,
                     xlabel: str, ylabel: str = "accuracy", title: Optional[str] = None) -> Path:
    """One line with markers per method, e.g. accuracy against the number of glimpses or the area seen."""
    fig = _figure(6.5, 4.5)
    ax = fig.subplots()
    markers = "osD^v<>pXh"
    for i, (method, (xs, ys)) in enumerate(xs_by_method.items()):
        if len(xs) != len(ys):
            raise ValueError(f"plot_accuracy_vs: method {method!r} has {len(xs)} x values and {len(ys)} y values")
        ax.plot(xs, ys, marker=markers[i % len(markers)], markersize=5, linewidth=1.6, label=method)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if xs_by_method:
        ax.legend(fontsize=9)
    ax.set_title(title or f"{ylabel} vs {xlabel}", fontsize=11)
    return _save(fig, path)
