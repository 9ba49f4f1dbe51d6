"""Training: the engine every algorithm runs through, and the types an algorithm implements.

``fit(model, algorithm, train_set, val_set, TrainConfig(...), run_dir)`` trains (resuming a killed run
exactly), ``evaluate(model, algorithm, dataset, batch_size=..., device=...)`` validates and tests; an
algorithm is what :class:`foveal.training.base.Algorithm` declares (``loss``, ``metrics``, ``predict`` and
the evaluation settings in ``config``), registered by name in :mod:`foveal.training.algorithms`. Under
torchrun the same ``fit`` trains data-parallel (:mod:`foveal.training.distributed`: ``world()``,
``is_main()``, ``all_reduce_mean``, no-ops in one process).
"""

from foveal.training.base import Algorithm, LossOutput, PolicyEvaluation
from foveal.training.engine import FitResult, evaluate, fit
from foveal.training.train_config import TrainConfig

__all__ = ["Algorithm", "LossOutput", "PolicyEvaluation", "TrainConfig", "FitResult", "fit", "evaluate"]
