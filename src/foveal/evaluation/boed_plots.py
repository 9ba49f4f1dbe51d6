"""Figures of the near-optimal glimpse sequence annotator, from saved files only.

* :func:`plot_epe_sequence` - Fig. 2 of Harvey et al. (2021): for one image, one column per step t with
  the map of expected posterior entropy over the grid cells (top, the chosen cell marked by a red cross
  and its glimpse outlined) and the parts of the image observed after glimpse t (bottom). Reads a
  glimpse-sequence file (:class:`foveal.sequences.GlimpseSequences`, written with ``epe_maps``) and
  the image itself, ``[C, H, W]`` in [0, 1] (from the dataset: data, not a model).
* :func:`plot_posterior_curves` - posterior accuracy and entropy against the number of glimpses t, one line
  per way of choosing the glimpses (NOGS, random, salient, ...), from a curves JSON::

      {"curves": {"<method>": {"accuracy": [T + 1], "entropy": [T + 1]}, ...},
       "t": [0, 1, ..., T] (optional), "dataset": ..., "split": ..., "num_images": ...}

  as written by a posterior run's evaluation (``records/posterior_curves_<split>.json``) and by
  ``benchmarks/annotator/annotate.py``.

Drawing follows :mod:`foveal.evaluation.plots` (bare Agg figures, matplotlib imported lazily).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from foveal.evaluation.glimpse_plots import glimpse_style
from foveal.evaluation.plots import display_image, marker_style, new_figure, save_figure
from foveal.evaluation.records import PathLike
from foveal.sequences import GlimpseSequences

__all__ = ["plot_epe_sequence", "plot_posterior_curves", "read_curves"]


def read_curves(record_or_path: Union[Mapping[str, Any], PathLike]) -> dict[str, Any]:
    """A curves mapping (see the module docstring), read from JSON if given a path; checked."""
    where = "curves"
    if not isinstance(record_or_path, Mapping):
        where = str(record_or_path)
        record_or_path = json.loads(Path(record_or_path).read_text())
    curves = record_or_path.get("curves")
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"{where}: field 'curves': expected a mapping method -> {{accuracy, entropy}}, found {curves!r}")
    for method, c in curves.items():
        if "accuracy" not in c:
            raise ValueError(f"{where}: curves[{method!r}]: expected a field 'accuracy', found {sorted(c)}")
        for key in ("entropy",):
            if key in c and len(c[key]) != len(c["accuracy"]):
                raise ValueError(f"{where}: curves[{method!r}].{key}: expected {len(c['accuracy'])} values (as accuracy), "
                                 f"found {len(c[key])}")
    return dict(record_or_path)


def plot_posterior_curves(record_or_path: Union[Mapping[str, Any], PathLike], path: PathLike, *,
                          title: Optional[str] = None) -> Path:
    """Two panels against t: posterior accuracy, and mean posterior entropy (nats) where recorded."""
    record = read_curves(record_or_path)
    fig = new_figure(10.5, 4.0)
    acc_ax, ent_ax = fig.subplots(1, 2)
    markers = "osD^v<>pXh"
    for i, (method, c) in enumerate(record["curves"].items()):
        t = record.get("t") or list(range(len(c["accuracy"])))
        style = dict(linewidth=1.6, label=method, **marker_style(len(c["accuracy"]), markers[i % len(markers)]))
        acc_ax.plot(t[:len(c["accuracy"])], c["accuracy"], **style)
        if "entropy" in c:
            ent_ax.plot(t[:len(c["entropy"])], c["entropy"], **style)
    for ax, name in ((acc_ax, "posterior accuracy"), (ent_ax, "posterior entropy (nats)")):
        ax.set_xlabel("glimpses t")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
        _at_least_a_span(ax, 0.02 if ax is acc_ax else 0.05)
    where = ", ".join(str(record[k]) for k in ("dataset", "split") if record.get(k))
    n = f", {record['num_images']} images" if record.get("num_images") else ""
    fig.suptitle(title or f"posterior after t glimpses ({where}{n})", fontsize=11)
    fig.supxlabel("t = 0: nothing seen yet (the posterior's guess from an empty image); one line per way of choosing "
                  "the glimpses.", fontsize=8.5, color="0.25")
    return save_figure(fig, path)


def _at_least_a_span(ax, span: float) -> None:
    """Widen the y-axis to ``span`` around the data when it is narrower, and write ticks in full: a curve flat to
    within 0.0004 nats was drawn as a steep rise on ticks '+1.094'."""
    ax.ticklabel_format(axis="y", useOffset=False)
    lo, hi = ax.get_ylim()
    if hi - lo < span:
        mid = (lo + hi) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def _load_sequences(sequences_or_path):
    if isinstance(sequences_or_path, (str, Path)):
        return GlimpseSequences.load(sequences_or_path)
    return sequences_or_path


def plot_epe_sequence(sequences_or_path, image: np.ndarray, path: PathLike, *, row: int = 0,
                      title: Optional[str] = None) -> Path:
    """Fig. 2: the EPE map before each glimpse (top) and the observed image after it (bottom), for one image.

    Args:
        sequences_or_path: a glimpse-sequence file (or the loaded object) made on a grid with ``epe_maps``.
        image: ``[C, H, W]`` in [0, 1], the image of row ``row`` (``sequences.indices[row]`` of its split).
        row: which sequence of the file.
    """
    seqs = _load_sequences(sequences_or_path)
    if seqs.grid is None or seqs.epe_maps is None:
        raise ValueError(f"{sequences_or_path}: expected sequences made on a grid with epe_maps kept, "
                         f"found grid={'set' if seqs.grid is not None else None}, "
                         f"epe_maps={'set' if seqs.epe_maps is not None else None}")
    if not 0 <= row < len(seqs):
        raise ValueError(f"row: expected in [0, {len(seqs)}), found {row}")
    image = np.asarray(image, dtype=np.float32)
    H, W = seqs.image_size
    if image.ndim != 3 or image.shape[1:] != (H, W):
        raise ValueError(f"image: expected [C, {H}, {W}], found {list(image.shape)}")
    grid, g = seqs.grid, seqs.glimpse_size
    corners = seqs.corners[row].numpy()  # [T, 2]
    maps = seqs.epe_maps[row].numpy()  # [T, gh, gw]
    T = corners.shape[0]
    rows, cols = np.asarray(grid.rows, float) + g / 2, np.asarray(grid.cols, float) + g / 2  # cell centres
    half_r = (rows[1] - rows[0]) / 2 if len(rows) > 1 else g / 2
    half_c = (cols[1] - cols[0]) / 2 if len(cols) > 1 else g / 2
    extent = (cols[0] - half_c, cols[-1] + half_c, rows[-1] + half_r, rows[0] - half_r)
    finite = maps[np.isfinite(maps)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fig = new_figure(1.9 * T + 0.8, 4.6)
    axes = fig.subplots(2, T, squeeze=False)
    from matplotlib.patches import Rectangle

    seen = np.zeros((H, W), bool)
    shown, cmap = display_image(image)
    mappable = None
    style = glimpse_style(g, (H, W), 1.9)
    cross = dict(marker="x", color="red", markersize=float(np.clip(0.7 * g * style["points_per_pixel"], 4, 9)),
                 markeredgewidth=float(np.clip(0.15 * g * style["points_per_pixel"], 1.0, 2.2)))
    first_visit: dict[tuple[int, int], int] = {}
    for t in range(T):
        r, c = corners[t]
        earlier = first_visit.setdefault((int(r), int(c)), t + 1)
        top = axes[0, t]
        if np.isfinite(maps[t]).any():
            mappable = top.imshow(np.ma.masked_invalid(maps[t]), extent=extent, cmap="viridis", vmin=vmin, vmax=vmax,
                                  interpolation="nearest")
        else:
            top.text(W / 2, H / 2, "not kept", ha="center", va="center", fontsize=8)
        top.plot([c + g / 2], [r + g / 2], **cross)
        top.add_patch(Rectangle((c - 0.5, r - 0.5), g, g, fill=False, edgecolor="red", linewidth=style["linewidth"]))
        # A revisit shows nothing new below: say so, or the panel reads as a glimpse gone missing.
        top.set_title(f"t = {t + 1}" + (f"\n(again the cell of t = {earlier})" if earlier != t + 1 else ""), fontsize=9)
        seen[r:r + g, c:c + g] = True
        bottom = axes[1, t]
        bottom.imshow(np.full((H, W), 0.5), cmap="gray", vmin=0, vmax=1)
        observed = np.ma.masked_where(~seen, shown) if shown.ndim == 2 else np.where(seen[..., None], shown, 0.5)
        bottom.imshow(observed, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        bottom.add_patch(Rectangle((c - 0.5, r - 0.5), g, g, fill=False, edgecolor="red", linewidth=style["linewidth"]))
        for ax in (top, bottom):
            ax.set_xlim(-0.5, W - 0.5)
            ax.set_ylim(H - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("EPE of the next glimpse", fontsize=8)
    axes[1, 0].set_ylabel("observed", fontsize=8)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes[0, :].tolist(), shrink=0.8, label="nats")
    index = int(seqs.indices[row])
    fig.suptitle(title or f"{seqs.method} glimpses, {seqs.dataset}/{seqs.split} image {index}", fontsize=10)
    fig.supxlabel("Top: expected posterior entropy (EPE) of looking at each grid cell next, given the glimpses "
                  "before t; red \u00d7 and box: the cell looked at at t. Bottom: the image as seen after glimpse t "
                  "(grey: not seen yet).", fontsize=8, color="0.25", wrap=True)
    return save_figure(fig, path)
