"""Glimpse models and their registry, :data:`MODELS`. Importing this package registers every built-in model."""

from foveal.models.base import PolicyState, Rollout
from foveal.models.registry import MODELS, create_model, load_model, model_spec
from foveal.models import ram as _ram  # noqa: F401  (registers "ram")
from foveal.models import bagnet as _bagnet, dram as _dram, saccader as _saccader  # noqa: F401  (Saccader paper)
from foveal.models import wsram as _wsram  # noqa: F401  (registers "ram-ws", "ram-grid-ws")
from foveal.models import posterior_cnn as _posterior_cnn  # noqa: F401  (registers "posterior-cnn")
from foveal.models import densenet_posterior as _densenet_posterior  # noqa: F401  ("posterior-densenet121")

__all__ = ["MODELS", "PolicyState", "Rollout", "create_model", "load_model", "model_spec"]
