"""Datasets for hard visual attention: one registry, :data:`DATASETS` (:mod:`foveal.data.registry`), and one
builder, ``build_dataset(name, split, root=, seed=, **options)``.

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

from foveal.data.base import DataError, FolderDataset, FovealDataset
from foveal.data.registry import DATASET_PATTERNS, DATASETS, build_dataset, dataset_options
from foveal.data import cub as _cub, imagefolder as _imagefolder, mnist as _mnist  # noqa: F401  (register them)
from foveal.data.celeba import CELEBA_ATTRIBUTES  # registers "celeba-hq"
from foveal.data.synthetic import PlacedDataset

__all__ = ["DATASETS", "build_dataset", "dataset_options", "DataError", "FovealDataset", "FolderDataset",
           "PlacedDataset", "CELEBA_ATTRIBUTES", "DATASET_PATTERNS"]
