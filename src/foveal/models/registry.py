"""The model registry, :data:`MODELS`: every model is a name, a kind and a one-line keyword-only builder::

    @MODELS.register("ram", kind="glimpse")
    def ram(**config) -> RAM:   # its docstring's first paragraph: the summary `foveal list` shows
        return RAM(RAMConfig(**config))

    create_model("ram", in_channels=1, num_classes=10, image_size=(28, 28))   # = MODELS.build(...)
    MODELS.names(kind="posterior")                                             # the posterior networks

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
from foveal.registry import Registry

# "glimpse": has rollout(images, T, *, policy, forced_locations) -> Rollout.
# "posterior": reads a masked image and its mask (foveal.boed).
# "grid": rollout on a grid of locations read from one feature map (BagNet, Saccader; foveal.models.bagnet).
# "classifier": a plain image (or patch) classifier, ``[B, C, H, W] -> [B, K]`` logits.
KINDS = ("glimpse", "posterior", "grid", "classifier")


def create_model(name: str, **config: Any) -> nn.Module:
    """Build a registered model from its settings (see each model's config dataclass); ``MODELS.build``."""
    builder = MODELS.get(name)
    try:
        model = builder(**config)
    except TypeError as error:  # a config dataclass refusing a keyword: say which, for which model
        unknown = re.search(r"(?:(\w+)\.__init__\(\) got an |)unexpected keyword argument '(\w+)'", str(error))
        if unknown is None:
            raise
        key, fields = unknown.group(2), _config_fields(builder, unknown.group(1))
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"; did you mean model.{close[0]}?" if close else ""
        from_data = ("in_channels", "num_classes", "image_size")  # set from the data, never in a config
        known = f"; expected some of {sorted(f for f in fields if f not in from_data)}" if fields else ""
        raise ValueError(f"model.{key}: unknown setting of model {name!r}{hint}{known}") from None
    model.registry_name = name
    return model


def _check_kind(name: str, builder: Any, meta: dict[str, Any]) -> None:
    if meta.get("kind") not in KINDS:
        raise ValueError(f"model registry: {name!r}: kind expected one of {KINDS}, found {meta.get('kind')!r}")


MODELS: Registry[Callable[..., nn.Module]] = Registry("model", field="model.name", build=create_model,
                                                      validate=_check_kind)


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
    if kind is not None and spec["name"] not in MODELS.names(kind=kind):
        raise ValueError(f"{checkpoint}: model {spec['name']!r}: expected a {kind} network, one of "
                         f"{MODELS.names(kind=kind)}")
    model = create_model(spec["name"], **spec["config"])
    load_checkpoint(checkpoint, model=model)
    return model, info


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
