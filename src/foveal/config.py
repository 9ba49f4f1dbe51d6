"""Run configuration: a YAML file, then ``section.key=value`` overrides, then the resolved config
saved as ``config.yaml`` beside the run's outputs.

A run config has five sections; ``name`` picks the component, every other key is its setting::

    data:      {name: cluttered-fashion-mnist, root: null, seed: 0, canvas: 60}   # foveal.data.build_dataset
    model:     {name: ram, glimpse_size: 12, num_scales: 3}                       # foveal.models (RAMConfig)
    algorithm: {name: reinforce, num_glimpses: 6}                                 # foveal.training (ReinforceConfig)
    train:     {iterations: 20000, batch_size: 128, lr: 3.0e-4, val_every: 500}    # foveal.training.TrainConfig
    evaluate:  {split: test, examples: 16, figures: true}

The model's ``in_channels``, ``num_classes`` and ``image_size`` come from the data, never from the
config. Built-in configs live in ``foveal/configs/`` and are named without ``.yaml``.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SECTIONS = ("data", "model", "algorithm", "train", "evaluate")
EVALUATE_DEFAULTS = {"split": "test", "examples": 16, "figures": True, "batch_size": 500}


def builtin_configs() -> list[str]:
    """Names of the configs shipped with foveal."""
    return sorted(p.name[:-5] for p in resources.files("foveal.configs").iterdir() if p.name.endswith(".yaml"))


def read_yaml(name_or_path: str | Path, what: str = "config") -> tuple[Any, str]:
    """The parsed YAML of a file, or of a built-in config named without ``.yaml``, and where it came from.

    Raises:
        FileNotFoundError: no such file or built-in name (``what`` names the kind of config).
        ValueError: the text is not valid YAML.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {path} does not exist")
        text, where = path.read_text(), str(path)
    elif str(name_or_path) in builtin_configs():
        text = resources.files("foveal.configs").joinpath(f"{name_or_path}.yaml").read_text()
        where = f"built-in config {name_or_path!r}"
    else:
        raise FileNotFoundError(f"{what}: expected a YAML file or one of {builtin_configs()}, found {name_or_path!r}")
    try:
        return yaml.safe_load(text), where
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: not valid YAML ({err})") from None


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """Read a run config from a YAML file or a built-in name; check its sections."""
    cfg, where = read_yaml(name_or_path)
    return check_config(cfg or {}, where)


def check_config(cfg: Any, where: str = "config") -> dict[str, Any]:
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: expected a mapping of sections {SECTIONS}, found {type(cfg).__name__}")
    unknown = set(cfg) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {sorted(unknown)}; expected some of {SECTIONS}")
    cfg = {s: dict(cfg.get(s) or {}) for s in SECTIONS}
    for section in ("data", "model", "algorithm"):
        if "name" not in cfg[section]:
            raise ValueError(f"{where}: field {section}.name is missing")
    cfg["evaluate"] = {**EVALUATE_DEFAULTS, **cfg["evaluate"]}
    return cfg


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["train.iterations=100", "model.num_scales=3"]`` -> a new config; values are read as YAML."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2 or parts[0] not in SECTIONS:
            raise ValueError(f"override {item!r}: expected section.key=value with a section in {SECTIONS}")
        node = cfg[parts[0]]
        for p in parts[1:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
    return cfg


def split_name(section: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``{"name": n, **settings}`` -> ``(n, settings)``."""
    settings = dict(section)
    return settings.pop("name"), settings


def dump_config(cfg: dict[str, Any], path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} vs {vb!r}")
    return out


def slug(label: str) -> str:
    """A file or folder name for a label: ``"RAM+"`` -> ``"ram-plus"``, ``"Sobel mean"`` -> ``"sobel-mean"``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower().replace("+", "-plus")).strip("-") or "method"
