"""Training algorithms by name: ``build_algorithm("reinforce", num_glimpses=6)``.

Each entry is an algorithm class and the frozen dataclass of its settings; later algorithms
(partial supervision, wake-sleep, the Saccader stages) register here and the engine, the CLI and
``foveal compare`` pick them up by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from foveal.training.reinforce import Reinforce, ReinforceConfig

_ALGORITHMS: dict[str, tuple[type, type]] = {}


def register_algorithm(name: str, algorithm: type, config: type) -> None:
    if name in _ALGORITHMS:
        raise ValueError(f"algorithm registry: the name {name!r} is already registered")
    _ALGORITHMS[name] = (algorithm, config)


def algorithm_names() -> list[str]:
    return sorted(_ALGORITHMS)


def build_algorithm(name: str, **settings: Any):
    """An algorithm from its name and settings; unknown settings are an error naming them."""
    if name not in _ALGORITHMS:
        raise ValueError(f"algorithm.name: expected one of {algorithm_names()}, found {name!r}")
    cls, config_cls = _ALGORITHMS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(settings) - fields
    if unknown:
        raise ValueError(f"algorithm {name!r}: unknown setting(s) {sorted(unknown)}; expected some of {sorted(fields)}")
    return cls(config_cls(**settings))


register_algorithm("reinforce", Reinforce, ReinforceConfig)
from foveal.boed.training import PosteriorTraining, PosteriorTrainingConfig  # noqa: E402  (after the registry exists)
register_algorithm("posterior", PosteriorTraining, PosteriorTrainingConfig)
from foveal.training.partial_supervision import PartialSupervision, PartialSupervisionConfig  # noqa: E402
register_algorithm("partial-supervision", PartialSupervision, PartialSupervisionConfig)
from foveal.training.wake_sleep import WakeSleep, WakeSleepConfig  # noqa: E402
register_algorithm("wake-sleep", WakeSleep, WakeSleepConfig)
from foveal.training.salience_pretraining import SaliencePretraining, SaliencePretrainingConfig  # noqa: E402
register_algorithm("salience-pretraining", SaliencePretraining, SaliencePretrainingConfig)
from foveal.training import saccader_stages as _sac  # noqa: E402  (the Saccader's three stages)
register_algorithm("saccader-representation", _sac.RepresentationPretraining, _sac.RepresentationConfig)
register_algorithm("saccader-location", _sac.LocationPretraining, _sac.LocationConfig)
register_algorithm("saccader-reinforce", _sac.SaccaderReinforce, _sac.SaccaderReinforceConfig)
