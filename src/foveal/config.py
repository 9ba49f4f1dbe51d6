"""Run configuration: a YAML file, then ``section.key=value`` overrides, then the resolved config
saved as ``config.yaml`` beside the run's outputs.

A run config has five sections; ``name`` picks the component, every other key is its setting::

    data:      {name: cluttered-fashion-mnist, root: null, seed: 0, canvas: 60}   # foveal.data.build_dataset
    model:     {name: ram, glimpse_size: 12, num_scales: 3}                       # foveal.models (RAMConfig)
    algorithm: {name: reinforce, num_glimpses: 6}                                 # foveal.training (ReinforceConfig)
    train:     {iterations: 20000, batch_size: 128, lr: 3.0e-4, val_every: 500}    # foveal.training.TrainConfig
    evaluate:  {split: test, examples: 16, figures: true}                        # EvaluateConfig

Every section is checked against the frozen dataclass it becomes, by the helpers below, before a run
writes anything: an unknown key, a missing required key or a value of the wrong type is one
``ValueError`` naming ``section.key``, what was expected and what was found (``train:`` and
``evaluate:`` through :func:`section_config`; model configs call :func:`check_fields` first thing in
``__post_init__``; :mod:`foveal.recipes.run` checks the built algorithm's config and ``data.root`` /
``data.seed``, while the dataset names its own unknown options).

The model's ``in_channels``, ``num_classes`` and ``image_size`` come from the data, never from the
config. Built-in configs live in ``foveal/configs/`` and are named without ``.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import os
import re
import sys
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Collection, Mapping, TypeVar, Union

import yaml

SECTIONS = ("data", "model", "algorithm", "train", "evaluate")
SPLITS = ("train", "val", "test")
T = TypeVar("T")


# ----------------------------------------------------------------------------- settings of one section


def check_settings(section: str, cls: type, settings: Mapping[str, Any], *, given: Collection[str] = ()) -> None:
    """Check a config section against the frozen dataclass ``cls`` it will build, before it is built.

    Args:
        section: the section's name in the config (``"train"``), used in the messages as ``train.<key>``.
        settings: the section's keys and values, as YAML gave them.
        given: required fields the caller fills in itself (e.g. a model's ``image_size`` from the data).

    Raises:
        ValueError: ``<section>.<key>: ...`` for an unknown key (naming the closest known one), a
            missing required key, or a value that does not fit the field's annotation.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in settings:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {section}.{close[0]}? " if close else ""
            raise ValueError(f"{section}.{key}: unknown setting; {hint}expected some of {sorted(fields)}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in settings and name not in given:
            raise ValueError(f"{section}.{name}: missing; expected {_words(_hints(cls)[name])} (add it to the "
                             f"config's {section}: section, or pass {section}.{name}=VALUE)")
    for key, value in settings.items():
        check_value(section, key, _hints(cls)[key], value)


def check_fields(obj: Any, section: str) -> None:
    """Every field of the dataclass instance ``obj`` holds a value of its annotated type (a
    ``__post_init__`` calls this first, so that a wrong type is named before anything uses it).

    Raises:
        ValueError: ``<section>.<field>: expected ..., found ...``.
    """
    for f in dataclasses.fields(obj):
        if f.init:
            check_value(section, f.name, _hints(type(obj))[f.name], getattr(obj, f.name))


def section_config(section: str, cls: type[T], settings: Mapping[str, Any]) -> T:
    """``cls(**settings)`` after :func:`check_settings`: the one way a config section becomes its dataclass.
    The dataclass's own checks name ``ClassName.field``; here that becomes ``section.field``, as the user wrote it."""
    check_settings(section, cls, settings)
    try:
        return cls(**settings)
    except ValueError as err:
        raise ValueError(as_section(str(err), cls, section)) from None


def as_section(message: str, cls: type, section: str) -> str:
    """``"TrainConfig.batch_size: ..."`` -> ``"train.batch_size: ..."`` (``"TrainConfig: ..."`` -> ``"train: ..."``)."""
    name = cls.__name__
    if message.startswith(name + "."):
        return section + "." + message[len(name) + 1:]
    if message.startswith(name + ":"):
        return section + message[len(name):]
    return message


def check_value(section: str, key: str, hint: Any, value: Any) -> None:
    """``ValueError`` naming ``section.key`` unless ``value`` (as YAML gives it: lists for tuples) fits ``hint``."""
    if not _fits(hint, value):
        raise ValueError(f"{section}.{key}: expected {_words(hint)}, found {value!r}{_number_hint(hint, value)}")


def _number_hint(hint: Any, value: Any) -> str:
    """YAML reads ``1e-3`` (an exponent without a dot) as text; say so where a number was expected."""
    if not isinstance(value, str) or not _EXPONENT.match(value):
        return ""
    number = float(value)
    for candidate in ((int(number),) if number.is_integer() else ()) + (number,):
        if _fits(hint, candidate):
            return f" (YAML reads an exponent without a dot as text: write {candidate!r})"
    return ""


_EXPONENT = re.compile(r"^[-+]?\d+[eE][-+]?\d+$")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """Field annotations of a dataclass; ``Any`` (unchecked) where one cannot be resolved."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a forward reference that does not resolve: resolve field by field
        pass
    hints, namespace = {}, _namespace(cls)
    for f in dataclasses.fields(cls):
        try:
            hints[f.name] = eval(f.type, namespace) if isinstance(f.type, str) else f.type  # noqa: S307 (annotations)
        except Exception:
            hints[f.name] = Any  # left to the dataclass
    return hints


def _namespace(cls: type) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        names.update(vars(module) if module is not None else {})
    return names


def _fits(hint: Any, value: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(h, value) for h in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (Path, os.PathLike):
        return isinstance(value, (str, os.PathLike))
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return not args or all(_fits(args[0], v) for v in value)
        return len(value) == len(args) and all(_fits(h, v) for h, v in zip(args, value))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # an annotation this check does not know (Any, a class): left to the dataclass


_WORDS = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          str: ("a string", "strings"), type(None): ("null", "nulls"), Path: ("a path", "paths")}


def _words(hint: Any, plural: bool = False) -> str:
    """An annotation in a config file's words: ``Optional[tuple[int, int]]`` -> ``"null or a list of 2 integers"``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_words(h) for h in sorted(args, key=lambda h: h is not type(None)))
    if hint in _WORDS:
        return _WORDS[hint][plural]
    if origin in (tuple, list):
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {_words(args[0], True)}" if args else "a list"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_words(args[0], True)}"
        return "a list [" + ", ".join(_words(h) for h in args) + "]"
    return getattr(hint, "__name__", str(hint))


# ----------------------------------------------------------------------------- the evaluate: section


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate:`` section: how a run's best checkpoint is tested (:func:`foveal.recipes.run.evaluate_run`).

    Attributes:
        split: ``"train"``, ``"val"`` or ``"test"``.
        examples: images shown in the example-glimpses figure (0: none).
        figures: draw the figures.
        batch_size: evaluation batch size.
    """

    split: str = "test"
    examples: int = 16
    figures: bool = True
    batch_size: int = 500

    def __post_init__(self) -> None:
        check_fields(self, "evaluate")
        if self.split not in SPLITS:
            raise ValueError(f"evaluate.split: expected one of {list(SPLITS)}, found {self.split!r}")
        if self.examples < 0:
            raise ValueError(f"evaluate.examples: expected an integer >= 0, found {self.examples!r}")
        if self.batch_size < 1:
            raise ValueError(f"evaluate.batch_size: expected a positive integer, found {self.batch_size!r}")


EVALUATE_DEFAULTS = dataclasses.asdict(EvaluateConfig())


# ----------------------------------------------------------------------------- whole configs


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
        raise ValueError(f"{where}: not valid YAML ({_yaml_problem(err)})") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: ``"mapping values are not allowed here, line 3, column 9"``."""
    mark = getattr(err, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return (getattr(err, "problem", None) or str(err).splitlines()[0]) + where


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
    for section in SECTIONS:
        if not isinstance(cfg.get(section) or {}, dict):
            raise ValueError(f"{where}: section {section}: expected a mapping of settings (key: value), "
                             f"found {cfg[section]!r}")
    cfg = {s: dict(cfg.get(s) or {}) for s in SECTIONS}
    for section in ("data", "model", "algorithm"):
        if "name" not in cfg[section]:
            raise ValueError(f"{where}: field {section}.name is missing")
    cfg["evaluate"] = {**EVALUATE_DEFAULTS, **cfg["evaluate"]}
    return cfg


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["train.iterations=100", "model.num_scales=3"]`` -> a new config; values are read as YAML.

    ``key=null`` (or ``key=``) removes the key, so that a setting the config file (or a built-in config)
    gives goes back to its default: ``data.canvas=null``, ``data.train_rows=null``. A section's ``name``
    cannot be removed.
    """
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2 or parts[0] not in SECTIONS:
            raise ValueError(f"override {item!r}: expected section.key=value with a section in {SECTIONS}")
        node = cfg[parts[0]]
        for i, p in enumerate(parts[1:-1], start=1):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {'.'.join(parts[:i + 1])} is {node!r}, not a mapping "
                                 "with keys; expected section.key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)})") from None
        if value is None and len(parts) == 2 and parts[1] == "name" and parts[0] != "train":
            raise ValueError(f"override {item!r}: {key} cannot be removed; expected a name (foveal list)")
        if value is None:
            node.pop(parts[-1], None)  # back to the default
        else:
            node[parts[-1]] = value
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
