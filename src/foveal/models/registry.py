"""The model registry: every glimpse model is a name plus a one-line keyword-only builder.

    @register_model("ram")
    def ram(**config) -> RAM:
        return RAM(RAMConfig(**config))

Models carry their settings as a frozen dataclass in ``model.config``; :func:`model_spec` turns a
model into ``{"name": ..., "config": {...}}`` (JSON), which checkpoints store so that
``create_model(**spec)`` rebuilds the same network without pickles.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from typing import Any, Callable, Optional

from torch import nn

from foveal.checkpoint import load_checkpoint, read_checkpoint_info

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_KINDS: dict[str, str] = {}
# "glimpse": has rollout(images, T, *, policy, forced_locations) -> Rollout.
# "posterior": reads a masked image and its mask (foveal.boed).
# "grid": rollout on a grid of locations read from one feature map (BagNet, Saccader; foveal.models.bagnet).
# "classifier": a plain image (or patch) classifier, ``[B, C, H, W] -> [B, K]`` logits.
KINDS = ("glimpse", "posterior", "grid", "classifier")


def register_model(name: str, *, kind: str = "glimpse") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder under ``name``; a second builder of the same name is an error."""
    if kind not in KINDS:
        raise ValueError(f"register_model({name!r}): kind expected one of {KINDS}, found {kind!r}")

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model registry: the name {name!r} is already registered by {_BUILDERS[name].__module__}")
        _BUILDERS[name] = builder
        _KINDS[name] = kind
        return builder

    return add


def list_models(kind: str | None = None) -> list[str]:
    """Registered model names, sorted; only those of one ``kind`` if given."""
    return sorted(n for n in _BUILDERS if kind is None or _KINDS[n] == kind)


def create_model(name: str, **config: Any) -> nn.Module:
    """Build a registered model from its settings (see each model's config dataclass)."""
    if name not in _BUILDERS:
        raise ValueError(f"model: expected one of {list_models()}, found {name!r}")
    try:
        model = _BUILDERS[name](**config)
    except TypeError as error:  # a config dataclass refusing a keyword: say which, for which model
        unknown = re.search(r"(?:(\w+)\.__init__\(\) got an |)unexpected keyword argument '(\w+)'", str(error))
        if unknown is None:
            raise
        key, fields = unknown.group(2), _config_fields(_BUILDERS[name], unknown.group(1))
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"; did you mean model.{close[0]}?" if close else ""
        from_data = ("in_channels", "num_classes", "image_size")  # set from the data, never in a config
        known = f"; expected some of {sorted(f for f in fields if f not in from_data)}" if fields else ""
        raise ValueError(f"model.{key}: unknown setting of model {name!r}{hint}{known}") from None
    model.registry_name = name
    return model


def _config_fields(builder: Callable[..., nn.Module], class_name: Optional[str]) -> list[str]:
    """The settings of the config dataclass ``class_name`` that ``builder`` builds (found in its module); [] if unknown."""
    cls = vars(sys.modules.get(builder.__module__, object)).get(class_name or "")
    return [f.name for f in dataclasses.fields(cls) if f.init] if dataclasses.is_dataclass(cls) else []


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``{"name", "config"}`` of a model built by :func:`create_model`, JSON-serialisable."""
    name = getattr(model, "registry_name", None)
    if name is None or not dataclasses.is_dataclass(getattr(model, "config", None)):
        raise ValueError(f"model_spec: {type(model).__name__} was not built by create_model or has no config dataclass")
    return {"name": name, "config": _jsonable(dataclasses.asdict(model.config))}


def load_model(checkpoint, *, kind: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint's JSON (``info["model"]``: registry name + config), weights loaded.

    Args:
        checkpoint: prefix of a foveal checkpoint (``run/checkpoints/best``).
        kind: if given, the model must be of this kind (:data:`KINDS`).

    Returns:
        ``(model, info)``: the model (in train mode, on the CPU) and the checkpoint's whole info dict.
    """
    info = read_checkpoint_info(checkpoint)
    spec = info.get("model")
    if not isinstance(spec, dict) or "name" not in spec or "config" not in spec:
        raise ValueError(f"{checkpoint}: checkpoint info field 'model': expected {{name, config}} (the registry "
                         f"spec written by foveal), found {spec!r}")
    if kind is not None and spec["name"] not in list_models(kind):
        raise ValueError(f"{checkpoint}: model {spec['name']!r}: expected a {kind} network, one of "
                         f"{list_models(kind)}")
    model = create_model(spec["name"], **spec["config"])
    load_checkpoint(checkpoint, model=model)
    return model, info


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
