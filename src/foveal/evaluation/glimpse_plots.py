"""Figures of where a model looked: glimpse heatmaps over a record's images, and examples with their glimpses.

Both take a glimpse record (the ``.npz`` of :func:`foveal.evaluation.records.save_glimpse_record`, or the
:class:`~foveal.evaluation.records.GlimpseRecord` read from it), write one PNG to ``path`` and return its
:class:`~pathlib.Path`, drawn as every figure of :mod:`foveal.evaluation.plots` is (a bare Agg figure,
matplotlib imported inside the functions). :func:`glimpse_style` sizes a glimpse's outline and label for
the other figures that draw glimpses (:mod:`foveal.evaluation.boed_plots`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from foveal.evaluation.plots import display_image, new_figure, save_figure
from foveal.evaluation.records import GlimpseRecord, PathLike, as_record, glimpse_coverage
from foveal.retina import top_left

_GOOD, _BAD = "#1a7f37", "#c62828"  # title colours of a right / wrong prediction


def _source(record_or_path) -> str:
    return "" if isinstance(record_or_path, GlimpseRecord) else f"{record_or_path}: "


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
