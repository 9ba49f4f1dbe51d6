"""Figures from saved records: glimpse heatmaps and examples, training curves, benchmark bars.

Every function takes saved records (a glimpse record ``.npz`` from
:func:`foveal.evaluation.records.save_glimpse_record`, a ``metrics.csv``, a benchmark JSON) or the
objects read from them, never a model; writes one PNG to ``path`` (parent folders created) and
returns its :class:`~pathlib.Path`.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas rather than through
``pyplot``: nothing is registered with pyplot (so nothing is left open, however many figures a sweep
makes) and the caller's backend is never switched (``matplotlib.use("Agg")`` would close the figures of
someone plotting in a notebook). matplotlib is imported inside the functions, so importing foveal
does not import it. :func:`new_figure`, :func:`save_figure`, :func:`display_image` and :func:`marker_style`
are shared with the other figure modules (:mod:`foveal.evaluation.boed_plots`, a comparison's
:mod:`foveal.recipes.compare.plots`).
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


def new_figure(width: float, height: float):
    """A figure that belongs to no pyplot state, with constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: PathLike) -> Path:
    """Write ``fig`` to ``path`` as a PNG (its folder made), then clear it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=_DPI, format="png", facecolor="white")
    finally:
        fig.clear()  # drop the artists now rather than at garbage collection
    return path


def _source(record_or_path) -> str:
    return "" if isinstance(record_or_path, GlimpseRecord) else f"{record_or_path}: "


def display_image(image: np.ndarray) -> tuple[np.ndarray, Optional[str]]:
    """``[C, H, W]`` in [0, 1] -> an array for ``imshow`` and its colour map (RGB for C = 3, else channel 0)."""
    if image.shape[0] == 3:
        return np.clip(image.transpose(1, 2, 0), 0, 1), None
    return image[0], "gray"


# --------------------------------------------------------------------------------------------- glimpses


def plot_glimpse_heatmaps(record_or_path: Union[GlimpseRecord, PathLike], path: PathLike, *,
                          title: Optional[str] = None) -> Path:
    """Where the model looked at each step: one panel per glimpse ``t = 1..T`` of :func:`glimpse_coverage`.

    All panels share one colour scale (fraction of the record's N images whose finest-scale glimpse
    covered the pixel). When the record holds images (its first n <= N, kept for example figures),
    their mean is shown in the first panel, titled with both counts, and one contour of it, the white
    line, is drawn on every heatmap for orientation; a caption under the panels says so.
    """
    rec = as_record(record_or_path)
    coverage = glimpse_coverage(rec.locations, rec.image_size, rec.glimpse_size)  # [T, H, W]
    T, N = rec.num_glimpses, rec.num_images
    mean = None
    if rec.images is not None and len(rec.images):
        mean, mean_cmap = display_image(rec.images.mean(0))
    panels = T + (mean is not None)
    nrows = math.ceil(panels / 6)
    ncols = math.ceil(panels / nrows)  # balanced rows: 7 panels as 4 + 3, not 6 + 1
    H, W = rec.image_size
    side = 2.3
    width = max(4.5, side * ncols * max(1.0, W / H) + 0.9)
    outline = None if mean is None else _outline(mean, rec.images)
    caption = [f"Colour: the fraction of the {N} images whose {rec.glimpse_size} px glimpse t (finest scale) "
               "covered the pixel."]
    if outline is not None:
        caption.append("White line: outline of the mean image (first panel), for orientation.")
    wrap = width < 11
    fig = new_figure(width, side * nrows + 0.6 + 0.25 * (width < 8) + 0.2 * len(caption) * (1 + wrap))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    first = 0
    if mean is not None:
        lo, hi = float(mean.min()), float(mean.max())
        shown = (mean - lo) / (hi - lo) if hi > lo else mean  # contrast-stretched: a mean is often dim
        axes[0].imshow(shown, cmap=mean_cmap, vmin=0, vmax=1, interpolation="nearest")
        n = len(rec.images)
        axes[0].set_title("mean image" if n == N else f"mean of the first\n{n} of the {N} images", fontsize=10)
        first = 1
    vmax = max(float(coverage.max()), 1e-12)
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
                 + f"({N} images, {rec.glimpse_size} px glimpses, accuracy {100 * rec.accuracy:.1f}%)")
    fig.suptitle(title, fontsize=11)
    fig.supxlabel(("\n" if wrap else " ").join(caption), fontsize=8.5, color="0.25")
    return save_figure(fig, path)


def _outline(mean: np.ndarray, images: np.ndarray) -> Optional[np.ndarray]:
    """The mean image, blurred, to draw one contour of; None when it has no shape the images share.

    Objects at random places (translated, cluttered, most photographs) average to a blob that outlines
    nothing: the mean's variance is then a small part of the images' own (about 1/n of it for n images
    with nothing in common; 0.07-0.15 of it for 16 translated / cluttered digits, 0.32 for 16 centred MNIST
    digits), and below a fifth of it (or 2/n, for few images) no outline is drawn.

    Args:
        mean: the display array of the images' mean, ``[H, W]`` or ``[H, W, 3]``.
        images: ``[n, C, H, W]``, the images averaged.
    """
    gray = mean if mean.ndim == 2 else mean.mean(-1)  # [H, W]
    own = float(images.mean(1).var(axis=(1, 2)).mean())  # the images' own variance
    if own <= 0 or float(images.mean((0, 1)).var()) < max(0.2, 2 / len(images)) * own:
        return None
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
    ``t`` (1 = first glimpse) sits in a corner of the box. A box looked at more than once (a grid model
    revisiting a cell, or a Gaussian policy clamped to the same border pixel) is drawn once and labelled
    with every step that looked at it, ``"2,5"``, so no glimpse hides under another. Line widths and label
    sizes follow the size a glimpse takes on the page (thin and small on 224 px images), and a label is
    moved to another corner of its box, then further down, when it would cover one placed before it.
    Titles give the true and predicted class, green when they agree and red when not.
    """
    rec = as_record(record_or_path)
    if rec.images is None or len(rec.images) == 0:
        raise ValueError(f"{_source(record_or_path)}the glimpse record holds no images to draw; "
                         "save it with images=[n, C, H, W] to make example figures")
    n = min(max_images, len(rec.images))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    H, W = rec.image_size
    side = 2.6 if max(H, W) <= 64 else 3.2  # large images get larger panels: small glimpses stay visible
    width = max(4.5, side * ncols * max(1.0, W / H))
    T = rec.num_glimpses
    # Top-left pixels of every glimpse at every scale: [S][N, T, 2].
    locations = torch.as_tensor(rec.locations[:n])
    corners = [top_left(locations, (H, W), rec.glimpse_size * rec.factor**k).numpy() for k in range(rec.num_scales)]
    groups = [_revisits(corners[0][i]) for i in range(n)]
    lines = [f"Glimpses 1..{T} in order", f"solid box: the {rec.glimpse_size} px glimpse"]
    if rec.num_scales > 1:
        lines.append(f"dashed: coarser scales (x{rec.factor} per scale)")
    revisit = next((g for gs in groups for g in gs if len(g) > 1), None)
    if revisit is not None:
        steps = _steps_label(revisit[:-1], ", ") + f" and {revisit[-1]}"
        lines.append(f"label {_steps_label(revisit)}: one box looked at by glimpses {steps}")
    stacked = width < 9 or len(lines) > 3  # one title line would be cut off: one line per part
    fig = new_figure(width, side * nrows + 0.5 + 0.22 * (len(lines) - 1) * stacked)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    colours = _step_colours(T)
    style = glimpse_style(rec.glimpse_size, (H, W), side)
    for i in range(n):
        ax = axes[i]
        image, cmap = display_image(rec.images[i])
        ax.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        placed: list[tuple[float, float, float, float]] = []
        for steps in groups[i]:
            t = steps[0] - 1
            _draw_glimpse(ax, [c[i, t] for c in corners], rec.glimpse_size, rec.factor, (H, W),
                          _steps_label(steps), colours[t], style, placed)
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        label, pred = int(rec.labels[i]), int(rec.predictions[i])
        ax.set_title(f"true: {_short(rec.class_name(label))}  pred: {_short(rec.class_name(pred))}",
                     color=_GOOD if label == pred else _BAD, fontsize=10)
    fig.suptitle(("\n" if stacked else "; ").join(lines), fontsize=11)
    return save_figure(fig, path)


def _revisits(corners: np.ndarray) -> list[tuple[int, ...]]:
    """Steps (1-based) grouped by the finest-scale box they looked at, in order of first visit.

    corners: ``[T, 2]`` top-left pixels of one image's glimpses.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for t, (r, c) in enumerate(corners.tolist()):
        groups.setdefault((int(r), int(c)), []).append(t + 1)
    return [tuple(g) for g in groups.values()]


def _steps_label(steps: Sequence[int], sep: str = ",") -> str:
    return sep.join(str(t) for t in steps)


def glimpse_style(glimpse_size: int, image_size: tuple[int, int], panel_inches: float) -> dict[str, float]:
    """Line widths and label font size for glimpse boxes, from the size a glimpse takes on the page.

    A glimpse of ``glimpse_size`` px on an image drawn ``panel_inches`` wide is ``box`` points a side; the
    label's font is about a third of that (5 to 8 pt) and the solid line a 25th (0.5 to 2 pt), so an 8 px
    glimpse on a 28 px digit gets the full 8 pt / 2 pt and one on a 224 px photograph 5 pt / 0.5 pt.

    Returns:
        ``{"fontsize", "linewidth", "coarse_linewidth", "points_per_pixel"}``.
    """
    points_per_pixel = 0.9 * panel_inches * 72 / max(image_size)  # ~10 % of the panel goes to margins
    box = glimpse_size * points_per_pixel
    linewidth = float(np.clip(box / 25, 0.5, 2.0))
    return {"fontsize": float(np.clip(box / 3, 5.0, 8.0)), "linewidth": linewidth,
            "coarse_linewidth": max(0.4, 0.35 * linewidth), "points_per_pixel": points_per_pixel}


def _draw_glimpse(ax, corners: Sequence[np.ndarray], size: int, factor: int, image_size: tuple[int, int],
                  text: str, colour, style: Mapping[str, float],
                  placed: list[tuple[float, float, float, float]]) -> None:
    """One glimpse: a box per scale (pixel-exact: pixel (r, c) spans [c - .5, c + .5]) and its label.

    ``placed`` holds the label rectangles ``(x0, y0, x1, y1)`` (pixels) already drawn on this image; the
    new label takes the first corner of its box that covers none of them (beside the box when the label
    is larger than the box, so that it does not hide it; then further down), and is added to it.
    """
    from matplotlib.patches import Rectangle

    H, W = image_size
    for k, (r0, c0) in enumerate(corners):
        side = size * factor**k
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), side, side, fill=False, edgecolor=colour,
                               linewidth=style["linewidth"] if k == 0 else style["coarse_linewidth"],
                               linestyle="-" if k == 0 else "--", alpha=1.0 if k == 0 else 0.55))
    r0, c0 = corners[0]
    # Label extent in pixels: ~0.62 em per character plus the box's padding, 1.3 em high.
    em = style["fontsize"] / style["points_per_pixel"]
    w, h = (0.62 * len(text) + 0.3) * em, 1.3 * em
    x, y = _free_spot(float(c0) - 0.5, float(r0) - 0.5, size, w, h, (H, W), placed)
    placed.append((x, y, x + w, y + h))
    ax.text(x + 0.15 * em, y + 0.15 * em, text, ha="left", va="top", fontsize=style["fontsize"],
            fontweight="bold", color="white",
            bbox=dict(boxstyle="square,pad=0.15", facecolor=colour, edgecolor="none", alpha=0.9))


def _free_spot(x0: float, y0: float, size: int, w: float, h: float, image_size: tuple[int, int],
               placed: Sequence[tuple[float, float, float, float]]) -> tuple[float, float]:
    """Top-left corner (pixels) of a ``w x h`` label for the ``size``-pixel box at ``(x0, y0)``: inside the
    image, and on none of ``placed`` when a corner of the box (or a place beside it, or below those) allows it."""
    H, W = image_size

    def inside(x: float, y: float) -> tuple[float, float]:
        return min(max(x, -0.5), W - 0.5 - w), min(max(y, -0.5), H - 0.5 - h)

    def free(x: float, y: float) -> bool:
        return all(x + w <= a0 or x >= a1 or y + h <= b0 or y >= b1 for a0, b0, a1, b1 in placed)

    if w <= size and h <= size:  # inside the box's corners
        candidates = [(x0, y0), (x0 + size - w, y0), (x0, y0 + size - h), (x0 + size - w, y0 + size - h)]
    else:  # a label larger than its box would hide it: beside the box (right, left, above, below)
        candidates = [(x0 + size, y0), (x0 - w, y0), (x0, y0 - h), (x0, y0 + size)]
    candidates += [(candidates[0][0], candidates[0][1] + k * h) for k in range(1, 2 + int(H / max(h, 1e-6)))]
    candidates = [inside(x, y) for x, y in candidates]
    return next((c for c in candidates if free(*c)), candidates[0])


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
    fig = new_figure(7.0, 4.5)
    ax = fig.subplots()
    for label, source in runs.items():
        metrics = source if isinstance(source, Mapping) else read_metrics(source)
        x, y = _series(metrics, split, metric, f"run {label!r}")
        ax.plot(x, y, linewidth=1.6, label=label, **marker_style(len(x)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{split} {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(f"{split} {metric} by {xlabel}", fontsize=11)
    return save_figure(fig, path)


# Training terms drawn in the loss panel besides the cross-entropy: each is a loss that should fall.
_LOSS_TERMS = {"baseline_mse": ("baseline MSE (R - b)\u00b2", "C1"), "sequence_nll": ("sequence NLL", "C4"),
               "location_nll": ("location NLL", "C5")}
# Terms left out, and why a reader should not judge training by them (named in the caption).
_LEFT_OUT = {
    "loss": "loss (the sum of the terms, with REINFORCE's surrogate where there is one)",
    "entropy": "entropy (of the location policy, summed over glimpses)",
    "reinforce": "reinforce (the REINFORCE surrogate -\u03a3 log \u03c0\u00b7(R-b): not a loss; it starts below 0 "
                 "and rises to 0 as the baseline learns)",
}


def plot_training_summary(metrics_csv: Union[PathLike, Metrics], path: PathLike) -> Path:
    """Two panels of what training is judged by: accuracy, and the losses that should fall.

    * accuracy (%): training accuracy (the REINFORCE reward R averaged over the batch; a moving
      average when there are many rows) and validation accuracy;
    * losses: training and validation cross-entropy, and training terms that are losses in their own
      right (baseline MSE, sequence / location NLL), on a log scale when they differ by 20x or more.

    The REINFORCE surrogate ``-sum_t log pi(l_t) (R - b_t)`` and the total loss that contains it are left
    out: the surrogate's gradient is the policy gradient, but its value is no loss (it starts below zero
    while the baseline is under R and rises to zero as the baseline learns, which reads as divergence).
    A caption names every metric of ``metrics.csv`` that is not drawn. A series of one to three points is
    drawn with large markers and a single point is labelled with its value, so it cannot hide.
    When the training rows hold no loss term of their own (``ce``, baseline MSE, sequence / location NLL)
    nor ``accuracy``, the training ``loss`` is drawn instead.
    """
    metrics = metrics_csv if isinstance(metrics_csv, Mapping) else read_metrics(metrics_csv)
    train, val = metrics.get("train", {}), metrics.get("val", {})
    fig = new_figure(11.0, 4.6)
    acc_ax, loss_ax = fig.subplots(1, 2)
    drawn: set[str] = set()
    if "accuracy" in train:
        _train_line(acc_ax, *train["accuracy"], "C0", "train", scale=100.0)
        drawn.add("accuracy")
    if "accuracy" in val:
        _val_line(acc_ax, *val["accuracy"], "C2", "validation", scale=100.0)
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.set_title("accuracy (higher is better)", fontsize=11)

    losses = {"ce": ("cross-entropy", "C0"), **_LOSS_TERMS}
    if not set(losses) & set(train) and "accuracy" not in train and "loss" in train:
        losses = {"loss": ("loss", "C0")}  # the only loss there is (drawn beside a term equal to it, it hides)
    for name, (label, colour) in losses.items():
        if name in train:
            _train_line(loss_ax, *train[name], colour, f"train {label}")
            drawn.add(name)
    if "ce" in val:
        _val_line(loss_ax, *val["ce"], "C3", "validation cross-entropy")
    values = np.concatenate([ln.get_ydata() for ln in loss_ax.get_lines()] or [np.ones(1)])
    if values.min() > 0 and values.max() / values.min() >= 20:
        loss_ax.set_yscale("log")
    loss_ax.set_title("losses (lower is better)", fontsize=11)
    from matplotlib.ticker import MaxNLocator

    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "39.5" iterations around a lone point
        ax.margins(x=0.05, y=0.12)  # room for a lone point's value label
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=9)
        else:
            ax.text(0.5, 0.5, "nothing recorded", ha="center", va="center", transform=ax.transAxes)
    caption = []
    if "baseline_mse" in drawn:
        caption.append("The baseline MSE may rise while accuracy nears 50 % (the reward's variance p(1 - p) peaks there).")
    left_out = [_LEFT_OUT.get(n, n) for n in sorted(train) if n not in drawn]
    left_out += [f"validation {n}" for n in sorted(val) if n not in ("accuracy", "ce")]
    if left_out:
        caption.append("Not drawn (see metrics.csv): " + "; ".join(left_out) + ".")
    if caption:
        fig.supxlabel("\n".join(caption), fontsize=8.5, color="0.25", wrap=True)
    return save_figure(fig, path)


def _train_line(ax, x: np.ndarray, y: np.ndarray, colour, label: str, *, scale: float = 1.0) -> None:
    """A training series: raw and faint with its moving average on top when long, else raw with markers."""
    y = y * scale
    window = max(1, len(y) // 25)
    if window == 1:
        ax.plot(x, y, color=colour, linewidth=1.5, label=label, **marker_style(len(x)))
        return
    ax.plot(x, y, color=colour, alpha=0.25, linewidth=1)
    smooth = np.convolve(y, np.ones(window) / window, mode="valid")
    ax.plot(x[window - 1:], smooth, color=colour, linewidth=2, label=f"{label} (moving average of {window} rows)")


def _val_line(ax, x: np.ndarray, y: np.ndarray, colour, label: str, *, scale: float = 1.0) -> None:
    """A validation series with markers; one point is labelled with its value."""
    y = y * scale
    ax.plot(x, y, color=colour, linestyle="--", linewidth=1.5, label=label, **marker_style(len(x), "s"))
    if len(x) == 1:
        ax.annotate(f"{y[0]:.3g}", (x[0], y[0]), textcoords="offset points", xytext=(7, 5), fontsize=9,
                    color=colour)


def marker_style(n: int, marker: str = "o") -> dict:
    """Marker settings for a series of n points: large for 1-3 points (a lone point must show), none past 30."""
    if n > 30:
        return {}
    return {"marker": marker, "markersize": 7 if n <= 3 else 4}


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
            ``{"results": [...], "meta": {"setting": ...}}``, as ``benchmarks/retina/retina.py`` writes). The
            reference of each batch size is the entry whose label contains "loop", else the slowest.
    """
    results, setting = _benchmark_results(results)
    speedups = speedup_over_reference(results)
    ms = np.array([float(r["ms_per_batch"]) for r in results])
    fig = new_figure(8.5, max(3.0, 0.55 * len(results) + 1.6))
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
    return save_figure(fig, path)


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
    fig = new_figure(6.5, 4.5)
    ax = fig.subplots()
    markers = "osD^v<>pXh"
    for i, (method, (xs, ys)) in enumerate(xs_by_method.items()):
        if len(xs) != len(ys):
            raise ValueError(f"plot_accuracy_vs: method {method!r} has {len(xs)} x values and {len(ys)} y values")
        ax.plot(xs, ys, linewidth=1.6, label=method, **marker_style(len(xs), markers[i % len(markers)]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if xs_by_method:
        ax.legend(fontsize=9)
    ax.set_title(title or f"{ylabel} vs {xlabel}", fontsize=11)
    return save_figure(fig, path)
