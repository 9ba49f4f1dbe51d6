"""A config's pieces, built and checked: data, model and algorithm, before any run folder is touched.

:func:`build_experiment` turns the ``data:``, ``model:`` and ``algorithm:`` sections of a resolved config
into an :class:`Experiment`; every setting is checked on the way, and errors name ``section.key`` as it was
typed (``data.train_rows``, ``model.core``, ``algorithm.glimpse_size``). :func:`check_experiment` then checks
what only the built pieces can tell (the grid fits the images, the train split holds a batch).
:mod:`foveal.recipes.run` calls both before it writes anything; a comparison's estimates and inputs, the
policy evaluation and the benchmarks call them to build the same pieces a run would.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch.utils.data import Dataset

from foveal.config import EvaluateConfig, as_section, check_fields, check_value, section_config, split_name
from foveal.data import build_dataset, dataset_options
from foveal.data.base import Rows
from foveal.models import MODELS, create_model
from foveal.training import TrainConfig
from foveal.training.algorithms import ALGORITHMS, build_algorithm

__all__ = ["Experiment", "build_data", "check_data_options", "build_model", "build_algorithm_of", "build_experiment",
           "check_run_config", "check_experiment", "glimpse_extent"]


@dataclass
class Experiment:
    """The pieces a config describes, built and ready."""

    config: dict[str, Any]
    model: torch.nn.Module
    algorithm: Any
    data: dict[str, Dataset]


def build_data(cfg: dict[str, Any], splits: tuple[str, ...]) -> dict[str, Dataset]:
    """The config's ``data:`` splits. ``data.train_rows: [start, stop]`` (``stop`` null: to the end) keeps
    only those positions of the train split (:class:`foveal.data.base.Rows`), e.g. ``[2000, null]`` for an
    annotator's posterior that must not see the images it will annotate (``foveal annotate`` start 0, count
    2000); items keep their split positions as ``index``."""
    name, settings = split_name(cfg["data"])
    root, seed = settings.pop("root", None), settings.pop("seed", 0)
    rows = settings.pop("train_rows", None)
    check_value("data", "name", str, name)
    check_value("data", "root", Optional[Union[str, Path]], root)
    check_value("data", "seed", int, seed)
    if rows is not None and not (isinstance(rows, (list, tuple)) and len(rows) == 2 and all(
            v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in rows) and rows[0] is not None):
        raise ValueError(f"data.train_rows: expected [start, stop] (integers; stop null for the end), found {rows!r}")
    check_data_options(name, settings)
    data = {s: build_dataset(name, s, root=root, seed=seed, **settings) for s in splits}
    if rows is not None and "train" in data:
        n = len(data["train"])
        stop = n if rows[1] is None else rows[1]
        if not 0 <= rows[0] < stop <= n:
            raise ValueError(f"data.train_rows: expected [start, stop] with 0 <= start < stop <= {n}, the size of "
                             f"the train split of {data['train'].name}, found {list(rows)} (data.train_rows=null "
                             "removes it)")
        data["train"] = Rows(data["train"], rows[0], rows[1])
    return data


def check_data_options(name: str, settings: dict[str, Any]) -> None:
    """``data.<key>`` is an option of dataset ``name`` (or an error naming it, with the closest one)."""
    accepted = dataset_options(name)  # an unknown name: DataError "data.name: expected one of ..."
    for key in settings:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), [*accepted, "root", "seed", "train_rows"], n=1)
            hint = f"did you mean data.{close[0]}? " if close else ""
            raise ValueError(f"data.{key}: unknown option of dataset {name}; {hint}expected some of "
                             f"{['root', 'seed', 'train_rows', *accepted]}")


def build_model(cfg: dict[str, Any], dataset: Dataset) -> torch.nn.Module:
    name, settings = split_name(cfg["model"])
    for key in ("in_channels", "num_classes", "image_size"):
        if key in settings:
            raise ValueError(f"model.{key}: comes from the data ({dataset.name}), remove it from the config")
    C, H, W = dataset.image_shape
    try:
        return create_model(name, in_channels=C, num_classes=dataset.num_classes, image_size=(H, W), **settings)
    except ValueError as err:  # a model config's own check names e.g. RAMConfig.core: say model.core, as typed
        raise ValueError(re.sub(r"^[A-Z]\w*Config(?=[.:])", "model", str(err))) from None


def build_algorithm_of(cfg: dict[str, Any]) -> Any:
    """The ``algorithm:`` section built, every setting checked against its annotated type."""
    name, settings = split_name(cfg["algorithm"])
    check_value("algorithm", "name", str, name)
    try:
        algorithm = build_algorithm(name, **settings)
    except TypeError as err:  # a config dataclass comparing a value of the wrong type
        raise ValueError(f"algorithm {name!r}: a setting has the wrong type ({err}); settings: {settings}") from None
    except ValueError as err:  # the config dataclass's own check names ClassName.field: say algorithm.field
        config_class = ALGORITHMS.meta(name)["config"] if name in ALGORITHMS else object
        raise ValueError(as_section(str(err), config_class, "algorithm")) from None
    if dataclasses.is_dataclass(getattr(algorithm, "config", None)):
        check_fields(algorithm.config, "algorithm")
    return algorithm


def build_experiment(cfg: dict[str, Any], splits: tuple[str, ...] = ("train", "val", "test")) -> Experiment:
    data = build_data(cfg, splits)
    return Experiment(cfg, build_model(cfg, data[splits[0]]), build_algorithm_of(cfg), data)


def check_run_config(cfg: dict[str, Any]) -> tuple[TrainConfig, EvaluateConfig]:
    """The ``train:`` and ``evaluate:`` sections as their dataclasses; nothing is built, errors name ``section.key``."""
    return section_config("train", TrainConfig, cfg["train"]), section_config("evaluate", EvaluateConfig,
                                                                             cfg["evaluate"])


def check_experiment(exp: Experiment, train_cfg: TrainConfig) -> None:
    """What only the built pieces can tell, checked before anything is written: the algorithm's grid
    fits the images, a grid model has the cells its glimpses read, the train split holds a batch."""
    cfg, train_set = exp.config, exp.data["train"]
    _, H, W = train_set.image_shape
    settings = getattr(exp.algorithm, "config", None)
    make_grid = getattr(settings, "make_grid", None)
    if callable(make_grid):
        try:
            make_grid((H, W))
        except ValueError as err:
            raise ValueError(f"algorithm.glimpse_size: the grid of {getattr(settings, 'glimpse_size', '?')} px "
                             f"glimpses does not fit the {H}x{W} images of {train_set.name} ({err})") from None
    grid, num_glimpses = getattr(exp.model, "grid", None), getattr(settings, "num_glimpses", None)
    if cfg["model"]["name"] in MODELS.names(kind="grid") and grid is not None and isinstance(num_glimpses, int) \
            and num_glimpses > len(grid):
        rows, cols = grid.shape
        raise ValueError(f"algorithm.num_glimpses: expected at most the {len(grid)} cells of the {rows}x{cols} grid "
                         f"of model {cfg['model']['name']!r} on {H}x{W} images (no cell is read twice), "
                         f"found {num_glimpses}")
    if len(train_set) < train_cfg.batch_size:
        raise ValueError(f"train.batch_size: expected at most the {len(train_set)} images of the train split of "
                         f"{train_set.name}, found {train_cfg.batch_size}")


def glimpse_extent(model: torch.nn.Module) -> Optional[tuple[int, int, int]]:
    """``(side of the largest scale in px, glimpse_size, num_scales)`` of a glimpse model whose config has a
    ``glimpse_size`` (RAM, DRAM and their kin; scale k covers ``glimpse_size * scale_factor**k``); else None."""
    config = getattr(model, "config", None)
    size = getattr(config, "glimpse_size", None)
    if not isinstance(size, int):
        return None
    scales, factor = int(getattr(config, "num_scales", 1)), int(getattr(config, "scale_factor", 2))
    return size * factor ** (scales - 1), size, scales
