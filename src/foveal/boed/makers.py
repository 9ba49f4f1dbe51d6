"""The annotator as sequence makers: ``nogs``, ``hindsight`` and ``hindsight-label`` in
:data:`foveal.sequences.MAKERS`.

Registered when :mod:`foveal.boed` is imported (:mod:`foveal.sequences` sits below the annotator and may not
name it). All run :func:`foveal.boed.annotate.annotate` on the target's images in ``out_dir`` (resumable,
as ever: run again to continue) and return the file it writes; they differ in where the completions of
steps 2..T come from (:class:`~foveal.boed.annotate_config.AnnotateConfig` ``completions``) and in what a
cell is scored by (``objective``: the posterior's entropy, or for ``hindsight-label`` the cross-entropy of
the image's true label, the first cell included). The target
gives the images (a contiguous range of positions: the annotator's ``start`` and ``count``), T and the grid
(one the annotator can name: a stride, or a number of cells per axis); every other annotator setting is a
keyword argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch

from foveal.boed.annotate import AnnotateConfig, annotate
from foveal.retina import LocationGrid
from foveal.sequences import MAKERS, GlimpseSequences, Target

__all__ = ["nogs_sequences", "hindsight_sequences", "hindsight_label_sequences"]

_FROM_TARGET = ("dataset", "split", "start", "count", "glimpse_size", "grid", "grid_stride", "num_glimpses",
                "completions", "objective")


@MAKERS.register("nogs", summary="the near-optimal cells: least expected posterior entropy over completions from an "
                                 "image bank (foveal annotate)")
def nogs_sequences(target: Target, *, posterior: str, bank: str, out_dir: Union[str, Path],
                   **settings: Any) -> GlimpseSequences:
    """Near-optimal glimpse sequences (Harvey et al. 2021) of the target's images, by the annotator.

    Args:
        posterior: checkpoint of the posterior network; bank: the image bank (``foveal build-bank``).
        out_dir: the annotator's output folder.
        **settings: any other :class:`~foveal.boed.annotate_config.AnnotateConfig` field (``n_completions``,
            ``seed``, ``device``, ...).
    """
    return _annotated(target, "nogs", out_dir, settings, posterior=posterior, bank=bank, completions="bank")


@MAKERS.register("hindsight", summary="the cell after which the posterior is surest on the true image (a reference "
                                      "that sees the answer, not a method)")
def hindsight_sequences(target: Target, *, posterior: str, bank: str, out_dir: Union[str, Path],
                        **settings: Any) -> GlimpseSequences:
    """As :func:`nogs_sequences` with the true image as the only completion of steps 2..T (the first glimpse
    is the task's, made from the bank's prior samples)."""
    return _annotated(target, "hindsight", out_dir, settings, posterior=posterior, bank=bank,
                      completions="hindsight")


@MAKERS.register("hindsight-label", summary="the cell after which the posterior's cross-entropy of the true label "
                                            "on the true image is lowest (a reference that reads the answer, not a "
                                            "method)")
def hindsight_label_sequences(target: Target, *, posterior: str, bank: str, out_dir: Union[str, Path],
                              **settings: Any) -> GlimpseSequences:
    """As :func:`hindsight_sequences`, every cell scored by ``-log q(true label | the true image seen through the
    cells so far and the candidate)`` instead of the entropy, the first cell too (per image: no task-wide
    first glimpse). It reads the dataset's labels, information no policy has: a reference for where the
    posterior becomes *right*, not a method. ``bank`` is required as for the other makers (the folder records
    it) but never searched."""
    return _annotated(target, "hindsight-label", out_dir, settings, posterior=posterior, bank=bank,
                      completions="hindsight", objective="label")


def _annotated(target: Target, maker: str, out_dir: Union[str, Path], settings: dict[str, Any],
               **fixed: Any) -> GlimpseSequences:
    taken = sorted(set(settings) & set(_FROM_TARGET))
    if taken:
        raise ValueError(f"{maker}: {taken} are not settings: the target gives the dataset, images, T and grid, "
                         f"the maker the completions and objective")
    start, count = int(target.indices[0]) if len(target.indices) else 0, len(target.indices)
    if not count or not torch.equal(target.indices, torch.arange(start, start + count)):
        raise ValueError(f"{maker}: expected the target's images to be a range of positions start, start + 1, ... "
                         f"(the annotator's start and count), found {target.indices[:8].tolist()}")
    grid = target.grid_for(maker)
    dataset = target.dataset
    config = AnnotateConfig(dataset=target.dataset_name or dataset.name, split=dataset.split, start=start,
                            count=count, glimpse_size=grid.glimpse_size, num_glimpses=target.num_glimpses,
                            **_grid_settings(grid, maker), **fixed, **settings)
    return GlimpseSequences.load(annotate(config, out_dir, dataset=dataset))


def _grid_settings(grid: LocationGrid, maker: str) -> dict[str, Any]:
    """The annotator's ``grid_stride`` or ``grid`` (cells per axis) that make ``grid``."""
    stride = grid.rows[1] - grid.rows[0] if len(grid.rows) > 1 else 1
    if LocationGrid.from_stride(grid.image_size, grid.glimpse_size, stride) == grid:
        return {"grid_stride": stride}
    count = (len(grid.rows), len(grid.cols))
    if LocationGrid.from_count(grid.image_size, grid.glimpse_size, count) == grid:
        return {"grid": count}
    raise ValueError(f"{maker}: the target's grid is neither every S pixels nor N cells spread evenly per axis (the "
                     f"grids the annotator makes: AnnotateConfig.grid_stride or grid); found rows {grid.rows[:4]}...")
