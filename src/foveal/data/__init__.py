"""Datasets for hard visual attention: one builder, ``build_dataset(name, split, root=, seed=, **options)``.

Every dataset is a ``torch.utils.data.Dataset`` of items
``{"image": float32 [C, H, W] in [0, 1], "label": int64 scalar, "index": int}`` (the default collate gives
``image [B, C, H, W]``, ``label [B]``, ``index [B]``) with attributes ``name``, ``split``, ``num_classes``,
``image_shape = (C, H, W)``, ``class_names`` and ``labels`` (int64 ``[N]``). Channels, size and classes
always come from the data. Folder datasets read images lazily and have ``image_id(index)``.

=========================  =====================  ================================================  =========
name                       items (C x H x W)      split rule (same on every machine)                options
=========================  =====================  ================================================  =========
``mnist5k``                1x28x28, 10 classes    per class, position k % 10: 8 val, 9 test:        -
                                                  4,000 / 500 / 500
``fashion-mnist``          1x28x28, 10 classes    test = t10k; val = per class k % 12 == 11 of      -
                                                  train: 55,000 / 5,000 / 10,000
``mnist``                  from the IDX files     as fashion-mnist (root required)                  -
``translated-<base>``      C x canvas x canvas    the base's; object at a random place per          canvas
                                                  (seed, split, index)
``cluttered-<base>``       C x canvas x canvas    as translated + clutter pieces, combined by max   canvas,
                                                                                                    clutter,
                                                                                                    piece
``celeba-hq``              3 x native or resized  annotation order; 30,000 rows: annotate 0-1,999,  attribute,
                           2 classes (attribute)  train 2,000-26,999, val 27,000-27,499, test       attr_file,
                                                  rest; annotate+train 0-26,999 (include_annotate:  image_dir,
                                                  train is annotate+train)                          image_size,
                                                                                                    include_annotate
``cub``                    3 x 128 x 128 crop,    official is_train; val = every 10th train image   image_size
                           200 classes            in id order
``imagefolder``            1 or 3 x native or     train/ val/ test/ folders, or per class           image_size,
                           resized                position k % 10: 8 val, 9 test                    grayscale
=========================  =====================  ================================================  =========

Details (file layouts, errors, defaults) are in each module's docstring: :mod:`foveal.data.mnist`,
:mod:`foveal.data.synthetic`, :mod:`foveal.data.celeba`, :mod:`foveal.data.cub`, :mod:`foveal.data.imagefolder`.
``seed`` only changes randomly generated content (translated / cluttered), never split membership.
Splits are "train", "val", "test" (CelebA-HQ also "annotate" and "annotate+train"). A dataset may
declare ``task`` (what its label is, e.g. the CelebA attribute), ``first_row`` (the annotation row of
position 0) and ``contains_splits`` (``{split: offset}`` of splits held inside it); sequence files
(:mod:`foveal.sequences`) are checked against them.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional

from foveal.data.base import DataError, FolderDataset, FovealDataset
from foveal.data.celeba import CELEBA_ATTRIBUTES, build_celeba_hq
from foveal.data.cub import build_cub
from foveal.data.imagefolder import build_imagefolder
from foveal.data.mnist import build_fashion_mnist, build_mnist, build_mnist5k
from foveal.data.synthetic import PlacedDataset

__all__ = ["build_dataset", "dataset_names", "dataset_options", "register_dataset", "DataError", "FovealDataset", "FolderDataset",
           "PlacedDataset", "CELEBA_ATTRIBUTES", "DATASET_PATTERNS"]

Builder = Callable[..., FovealDataset]
_REGISTRY: dict[str, Builder] = {}
# Names made from another dataset's name; options canvas / clutter / piece, the rest go to the base.
DATASET_PATTERNS = ("translated-<base>", "cluttered-<base>")
_PLACED_OPTIONS = {"translated": ("canvas",), "cluttered": ("canvas", "clutter", "piece")}


def register_dataset(name: str, builder: Builder) -> Builder:
    """Add ``builder(split, *, root, seed, **options)`` under ``name``; a duplicate name is an error."""
    if name in _REGISTRY:
        raise ValueError(f"dataset {name!r} is already registered")
    if name.split("-", 1)[0] in _PLACED_OPTIONS:
        raise ValueError(f"dataset {name!r}: names starting with translated- / cluttered- are reserved")
    _REGISTRY[name] = builder
    return builder


for _name, _builder in (("mnist5k", build_mnist5k), ("fashion-mnist", build_fashion_mnist), ("mnist", build_mnist),
                        ("celeba-hq", build_celeba_hq), ("cub", build_cub), ("imagefolder", build_imagefolder)):
    register_dataset(_name, _builder)


def dataset_names() -> list[str]:
    """The registered names, sorted. Any of them ``<base>`` also gives ``translated-<base>`` and
    ``cluttered-<base>`` (see :data:`DATASET_PATTERNS`), e.g. ``cluttered-fashion-mnist``."""
    return sorted(_REGISTRY)


def dataset_options(name: str) -> list[str]:
    """The options ``build_dataset(name, ...)`` takes besides ``root`` and ``seed`` (``data.<option>`` in a
    config), e.g. ``["image_size", "grayscale"]`` for ``imagefolder``; ``translated-`` / ``cluttered-`` names
    add their placement options to the base's."""
    kind, _, base_name = name.partition("-")
    if kind in _PLACED_OPTIONS and base_name:
        return [*_PLACED_OPTIONS[kind], *dataset_options(base_name)]
    if name not in _REGISTRY:
        raise DataError(f"dataset name: expected one of {dataset_names()} or translated-<name> / cluttered-<name>, "
                        f"found {name!r}")
    return [p.name for p in inspect.signature(_REGISTRY[name]).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in ("root", "seed")]


def _check_options(name: str, builder: Builder, options: dict[str, Any]) -> None:
    accepted = dataset_options(name)
    for key in options:
        if key not in accepted:
            raise DataError(f"{name}: option {key!r}: expected one of {accepted or 'no options'}, found {key!r}")


def build_dataset(name: str, split: str, *, root: Optional[str | Path] = None, seed: int = 0,
                  **options: Any) -> FovealDataset:
    """Build one split of a dataset.

    Args:
        name: a name of :func:`dataset_names`, or ``translated-<name>`` / ``cluttered-<name>``.
        split: "train", "val" or "test" ("annotate" too for celeba-hq).
        root: where the files are (a folder, or the csv.gz for mnist5k); ``None`` = the dataset's default.
        seed: fixes the random placement and clutter of translated / cluttered items; splits never depend on it.
        **options: the dataset's options (see the table in this module's docstring).

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
    if name not in _REGISTRY:
        raise DataError(f"dataset name: expected one of {dataset_names()} or translated-<name> / cluttered-<name>, "
                        f"found {name!r}")
    builder = _REGISTRY[name]
    _check_options(name, builder, options)
    return builder(split, root=root, seed=seed, **options)
