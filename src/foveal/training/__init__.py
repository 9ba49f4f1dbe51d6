"""Training: the engine every algorithm runs through, and the types an algorithm implements.

``fit(model, algorithm, train_set, val_set, TrainConfig(...), run_dir)`` trains (resuming a killed run
exactly), ``evaluate(model, algorithm, dataset, batch_size=..., device=...)`` validates and tests; an
algorithm is anything with ``loss(model, batch) -> LossOutput`` and ``metrics(model, batch) -> dict``.
"""

from foveal.training.base import Algorithm, LossOutput
from foveal.training.engine import FitResult, TrainConfig, evaluate, fit, resolve_device

__all__ = ["Algorithm", "LossOutput", "TrainConfig", "FitResult", "fit", "evaluate", "resolve_device"]
