"""Training algorithms by name: ``build_algorithm("reinforce", num_glimpses=6)``.

Each entry is an algorithm class and the frozen dataclass of its settings; the engine, the CLI and
``foveal compare`` pick them up by name. An algorithm of one's own registers with
:func:`register_algorithm` and must satisfy :class:`foveal.training.base.Algorithm`.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from foveal.training.base import check_algorithm
from foveal.training.image_classification import ImageClassification, ImageClassificationConfig
from foveal.training.partial_supervision import PartialSupervision, PartialSupervisionConfig
from foveal.training.posterior import PosteriorTraining, PosteriorTrainingConfig
from foveal.training.reinforce import Reinforce, ReinforceConfig
from foveal.training.saccader import (LocationConfig, LocationPretraining, RepresentationConfig,
                                      RepresentationPretraining, SaccaderReinforce, SaccaderReinforceConfig)
from foveal.training.salience_pretraining import SaliencePretraining, SaliencePretrainingConfig
from foveal.training.wake_sleep import WakeSleep, WakeSleepConfig

__all__ = ["register_algorithm", "algorithm_names", "build_algorithm", "algorithm_config_class"]

_ALGORITHMS: dict[str, tuple[type, type]] = {}


def register_algorithm(name: str, algorithm: type, config: type) -> None:
    """Add ``algorithm`` (built as ``algorithm(config(**settings))``) under ``name``; a name is registered once."""
    if name in _ALGORITHMS:
        raise ValueError(f"algorithm registry: the name {name!r} is already registered")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"register_algorithm({name!r}): config expected a dataclass, found {config!r}")
    _ALGORITHMS[name] = (algorithm, config)


def algorithm_names() -> list[str]:
    return sorted(_ALGORITHMS)


def algorithm_config_class(name: str) -> type:
    """The settings dataclass of algorithm ``name`` (``object`` for an unknown name)."""
    return _ALGORITHMS[name][1] if name in _ALGORITHMS else object


def build_algorithm(name: str, **settings: Any):
    """An algorithm from its name and settings; unknown settings are an error naming them."""
    if name not in _ALGORITHMS:
        raise ValueError(f"algorithm.name: expected one of {algorithm_names()}, found {name!r}")
    cls, config_cls = _ALGORITHMS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(fields), n=1)
        hint = f"did you mean algorithm.{close[0]}? " if close else ""
        raise ValueError(f"algorithm.{unknown[0]}: unknown setting of algorithm {name!r}; {hint}"
                         f"expected some of {sorted(fields)}")
    algorithm = cls(config_cls(**settings))
    check_algorithm(algorithm, f"algorithm {name!r}")
    return algorithm


register_algorithm("reinforce", Reinforce, ReinforceConfig)
register_algorithm("posterior", PosteriorTraining, PosteriorTrainingConfig)
register_algorithm("partial-supervision", PartialSupervision, PartialSupervisionConfig)
register_algorithm("wake-sleep", WakeSleep, WakeSleepConfig)
register_algorithm("salience-pretraining", SaliencePretraining, SaliencePretrainingConfig)
register_algorithm("saccader-representation", RepresentationPretraining, RepresentationConfig)
register_algorithm("saccader-location", LocationPretraining, LocationConfig)
register_algorithm("saccader-reinforce", SaccaderReinforce, SaccaderReinforceConfig)
register_algorithm("image-classification", ImageClassification, ImageClassificationConfig)
