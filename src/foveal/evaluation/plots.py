"""Figures from saved records: training curves and benchmark results, and what every figure module shares.

Every function takes saved records (a ``metrics.csv``, a benchmark JSON) or the objects read from them,
never a model; writes one PNG to ``path`` (parent folders created) and returns its :class:`~pathlib.Path`.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas rather than through
``pyplot``: nothing is registered with pyplot (so nothing is left open, however many figures a sweep
makes) and the caller's backend is never switched (``matplotlib.use("Agg")`` would close the figures of
someone plotting in a notebook). matplotlib is imported inside the functions, so importing foveal
does not import it. :func:`new_figure`, :func:`save_figure`, :func:`display_image` and :func:`marker_style`
are shared with the other figure modules (:mod:`foveal.evaluation.glimpse_plots` for where a model looked,
:mod:`foveal.evaluation.boed_plots`, a comparison's :mod:`foveal.recipes.compare.plots`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from foveal.evaluation.records import PathLike, read_metrics

Metrics = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]

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


def display_image(image: np.ndarray) -> tuple[np.ndarray, Optional[str]]:
    """``[C, H, W]`` in [0, 1] -> an array for ``imshow`` and its colour map (RGB for C = 3, else channel 0)."""
    if image.shape[0] == 3:
        return np.clip(image.transpose(1, 2, 0), 0, 1), None
    return image[0], "gray"


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
