"""The dataset registry, :data:`DATASETS`, and the one way to build a dataset, :func:`build_dataset`.

A dataset is registered where its builder is defined, ``builder(split, *, root, seed, **options)``, with
its docstring's first paragraph as the summary ``foveal list`` shows::

    @DATASETS.register("mnist5k")
    def build_mnist5k(split, *, root=None, seed=0):   # options: none
        ...

Its keyword-only parameters besides ``root`` and ``seed`` are its options (``data.<option>`` in a config,
:func:`dataset_options`). Every registered ``<base>`` also gives ``translated-<base>`` and
``cluttered-<base>`` (:data:`DATASET_PATTERNS`, :mod:`foveal.data.synthetic`), which are not entries: the
prefixes are reserved.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional

from foveal.data.base import DataError, FovealDataset
from foveal.data.synthetic import PlacedDataset
from foveal.registry import Registry

__all__ = ["DATASETS", "DATASET_PATTERNS", "build_dataset", "dataset_options"]

Builder = Callable[..., FovealDataset]
# Names made from another dataset's name, with their summaries; options canvas / clutter / piece, the rest go
# to the base.
DATASET_PATTERNS = {
    "translated-<base>": "The base's images at a random place on a larger zero canvas (Mnih et al. 2014).",
    "cluttered-<base>": "As translated-, plus clutter pieces cut from other images of the split.",
}
_PLACED_OPTIONS = {"translated": ("canvas",), "cluttered": ("canvas", "clutter", "piece")}


def dataset_options(name: str) -> list[str]:
    """The options ``build_dataset(name, ...)`` takes besides ``root`` and ``seed`` (``data.<option>`` in a
    config), e.g. ``["image_size", "grayscale"]`` for ``imagefolder``; ``translated-`` / ``cluttered-`` names
    add their placement options to the base's."""
    kind, _, base_name = name.partition("-")
    if kind in _PLACED_OPTIONS and base_name:
        return [*_PLACED_OPTIONS[kind], *dataset_options(base_name)]
    return [p.name for p in inspect.signature(DATASETS.get(name)).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in ("root", "seed")]


def build_dataset(name: str, split: str, *, root: Optional[str | Path] = None, seed: int = 0,
                  **options: Any) -> FovealDataset:
    """Build one split of a dataset (``DATASETS.build`` is this function).

    Args:
        name: a name of ``DATASETS.names()``, or ``translated-<name>`` / ``cluttered-<name>``.
        split: "train", "val" or "test" ("annotate" too for celeba-hq).
        root: where the files are (a folder, or the csv.gz for mnist5k); ``None`` = the dataset's default.
        seed: fixes the random placement and clutter of translated / cluttered items; splits never depend on it.
        **options: the dataset's options (see the table in :mod:`foveal.data`).

    Returns:
        The dataset; the same arguments give the same items in the same order on any machine.

    Raises:
        DataError: unknown name, split or option; missing or malformed files.
    """
    kind, _, base_name = name.partition("-")
    if kind in _PLACED_OPTIONS and base_name:
        placed = {k: options.pop(k) for k in _PLACED_OPTIONS[kind] if k in options}
        for key in ("clutter", "piece"):
            if key in options and kind == "translated":
                raise DataError(f"{name}: option {key!r}: expected one of ['canvas'] (only cluttered- takes "
                                f"{key}), found {key!r}")
        base = build_dataset(base_name, split, root=root, seed=seed, **options)
        return PlacedDataset(base, kind, seed=seed, **placed)
    accepted = dataset_options(name)
    for key in options:
        if key not in accepted:
            raise DataError(f"{name}: option {key!r}: expected one of {accepted or 'no options'}, found {key!r}")
    return DATASETS.get(name)(split, root=root, seed=seed, **options)


def _unreserved(name: str, builder: Any, meta: dict[str, Any]) -> None:
    if name.split("-", 1)[0] in _PLACED_OPTIONS:
        raise ValueError(f"dataset {name!r}: names starting with translated- / cluttered- are reserved")


DATASETS: Registry[Builder] = Registry("dataset", field="data.name", error=DataError,
                                       also="translated-<name> / cluttered-<name>", build=build_dataset,
                                       validate=_unreserved)
