"""Figures of a comparison (``foveal compare``) for its report (:mod:`.report`), from saved records only.

* :func:`plot_method_curves` - validation curves of every method on one plot, mean over seeds with the
  range as a band (the paper's Fig. 6);
* :func:`plot_iterations_per_seed` - iterations to converge of every run, one marker series per method
  (Fig. 5, with seeds in place of CelebA-HQ's 40 tasks);
* :func:`plot_heatmaps_by_method` - where each method looked at every step, one row per method
  (Fig. 4), from the runs' glimpse records (:mod:`foveal.evaluation.records`).

As in :mod:`foveal.evaluation.plots`, figures are bare matplotlib ``Figure`` objects on the Agg canvas
(no pyplot state), written as PNG; each function returns the path it wrote.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from foveal.evaluation.plots import display_image, marker_style, new_figure, save_figure
from foveal.evaluation.records import PathLike, as_record, glimpse_coverage

__all__ = ["plot_method_curves", "plot_iterations_per_seed", "plot_heatmaps_by_method"]

Series = tuple[np.ndarray, np.ndarray]


def _mean_and_range(curves: Sequence[Series]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Curves of possibly different lengths -> (iterations, mean, min, max) over the seeds that reached each."""
    its = np.unique(np.concatenate([c[0] for c in curves]))
    table = np.full((len(curves), len(its)), np.nan)
    for k, (x, y) in enumerate(curves):
        table[k, np.searchsorted(its, x)] = y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column of NaN values only (a NaN metric) stays NaN
        return its, np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0)


def plot_method_curves(curves: Mapping[str, Sequence[Series]], path: PathLike, *, ylabel: str,
                       title: Optional[str] = None, percent: bool = False) -> Path:
    """One line per method: the mean over its seeds' curves, with their range shaded.

    Args:
        curves: ``{method: [(iterations, values) per seed]}``; methods without curves are left out.
        percent: multiply values by 100 (accuracy as %).
    """
    fig = new_figure(7.5, 4.6)
    ax = fig.subplots()
    scale = 100.0 if percent else 1.0
    drawn = 0
    for k, (method, series) in enumerate(curves.items()):
        series = [s for s in series if len(s[0])]
        if not series:
            continue
        x, mean, lo, hi = _mean_and_range(series)
        colour = f"C{k % 10}"
        ax.plot(x, mean * scale, color=colour, linewidth=1.7, label=f"{method} ({len(series)} seed{'s' * (len(series) > 1)})",
                **marker_style(len(x)))  # a curve of one validation point is a marker, not nothing
        if len(series) > 1:
            ax.fill_between(x, lo * scale, hi * scale, color=colour, alpha=0.15, linewidth=0)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=9)
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("training iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{ylabel} during training (mean over seeds, range shaded)", fontsize=11)
    return save_figure(fig, path)


def plot_iterations_per_seed(iterations: Mapping[str, Mapping[int, Optional[int]]], path: PathLike, *,
                             criterion: str) -> Path:
    """Iterations to converge of each run: x = seed, one marker series per method, means as dashed lines."""
    fig = new_figure(7.0, 4.4)
    ax = fig.subplots()
    seeds = sorted({s for runs in iterations.values() for s in runs})
    markers = "osD^v<>pXh"
    # Side by side within a seed: only the methods with a run take a slot (colours stay the method's).
    shown = [method for method, runs in iterations.items() if any(v is not None for v in runs.values())]
    width = 0.6 / max(1, len(shown))
    for k, (method, runs) in enumerate(iterations.items()):
        if method not in shown:
            continue
        slot = shown.index(method)
        xs = [seeds.index(s) - 0.3 + (slot + 0.5) * width for s in seeds if runs.get(s) is not None]
        ys = [runs[s] for s in seeds if runs.get(s) is not None]
        colour = f"C{k % 10}"
        mean = float(np.mean(ys))  # in the label too: equal means draw one dashed line over another
        ax.scatter(xs, ys, marker=markers[k % len(markers)], color=colour, s=36, label=f"{method} (mean {mean:.0f})",
                   zorder=3)
        ax.axhline(mean, color=colour, linestyle="--", linewidth=1, alpha=0.7)
    ax.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
    ax.set_ylabel("iterations to converge")
    ax.grid(alpha=0.3, axis="y")
    if any(v is not None for runs in iterations.values() for v in runs.values()):
        ax.legend(fontsize=9)
    ax.set_title(f"Iterations until {criterion} (dashed: method mean)", fontsize=11)
    return save_figure(fig, path)


def plot_heatmaps_by_method(records: Mapping[str, Union[PathLike, object]], path: PathLike) -> Path:
    """Fraction of test images whose glimpse t covered each pixel: rows = methods, columns = t = 1..T.

    Each row has its own colour scale, shown by a colour bar at its end (a method that always looks
    at one place would otherwise wash out the others); the first column shows the mean of the images
    the record holds (its first n of N), labelled with both counts, and the row label gives the
    method's accuracy over all N.
    """
    recs = {method: as_record(r) for method, r in records.items()}
    if not recs:
        raise ValueError("plot_heatmaps_by_method: expected at least one record, found none")
    T = max(r.num_glimpses for r in recs.values())
    side = 1.7
    fig = new_figure(side * (T + 1) + 1.4, side * len(recs) + 1.0)
    axes = fig.subplots(len(recs), T + 1, squeeze=False)
    counts = set()
    for row, (method, rec) in enumerate(recs.items()):
        coverage = glimpse_coverage(rec.locations, rec.image_size, rec.glimpse_size)  # [T, H, W]
        counts.add(rec.num_images)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
        if rec.images is not None and len(rec.images):
            mean, cmap = display_image(rec.images.mean(0))
            axes[row, 0].imshow(mean, cmap=cmap)
            if len(rec.images) < rec.num_images:
                axes[row, 0].set_xlabel(f"mean of first {len(rec.images)}", fontsize=8)
        axes[row, 0].set_ylabel(f"{method}\n{100 * rec.accuracy:.1f}%", fontsize=9)
        vmax = max(float(coverage.max()), 1e-12)
        im = None
        for t in range(rec.num_glimpses):
            im = axes[row, t + 1].imshow(coverage[t], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            if row == 0:
                axes[row, t + 1].set_title(f"t = {t + 1}", fontsize=10)
        for t in range(rec.num_glimpses, T):
            axes[row, t + 1].set_axis_off()
        if im is not None:
            bar = fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.9, pad=0.01, aspect=12)
            bar.ax.tick_params(labelsize=7)
    axes[0, 0].set_title("mean image", fontsize=10)
    n = ", ".join(str(c) for c in sorted(counts))
    fig.suptitle(f"Where each method looked at each glimpse ({n} test images)", fontsize=11)
    fig.supxlabel("Colour: the fraction of the test images whose glimpse t (finest scale) covered the pixel, "
                  "each row on its own scale (colour bar at its end). Row label: method and test accuracy.",
                  fontsize=8, color="0.25", wrap=True)
    return save_figure(fig, path)
