"""Generates the CLI and config reference pages at build time, so that they cannot drift from the code.

- ``reference/cli.md``: every ``foveal`` command's ``--help``, read from the argparse parsers themselves.
- ``reference/api.md``: one ``automodule`` per module, from the docstrings.
- ``reference/config.md``: every config dataclass (a run config's sections, each model's and algorithm's
  settings, the annotator's and the comparison's), one table each: field, type, default, meaning (the
  meaning from the dataclass's ``Attributes:`` docstring section).

Both are written before Sphinx reads the sources (``builder-inited``) and are not kept in git.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from pathlib import Path
from typing import Any

_FIELD = re.compile(r"^(\s+)([\w, ]+):\s?(.*)$")


def field_meanings(cls: type) -> dict[str, str]:
    """``{field: meaning}`` from a Google-style ``Attributes:`` (or ``Args:``) section of ``cls``'s docstring.

    An entry may name several fields (``in_channels, num_classes: from the data``); its text runs on over
    the lines indented deeper than the entry's name."""
    doc = inspect.getdoc(cls) or ""
    meanings: dict[str, str] = {}
    in_section, indent, names = False, None, []
    for line in doc.splitlines():
        if line.strip() in ("Attributes:", "Args:"):
            in_section, indent, names = True, None, []
            continue
        if not in_section:
            continue
        if line and not line[0].isspace():  # the section ended
            in_section = False
            continue
        m = _FIELD.match(line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            names = [n.strip() for n in m.group(2).split(",")]
            for n in names:
                meanings[n] = m.group(3).strip()
        elif names and line.strip():
            for n in names:
                meanings[n] += " " + line.strip()
    return meanings


def _type_name(tp: Any) -> str:
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", None) or str(tp)
    return str(text).replace("typing.", "").replace("NoneType", "None")


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return f"`{field.default!r}`"
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f"`{field.default_factory()!r}`"  # type: ignore[misc]
    return "required"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def dataclass_table(cls: type, *, skip: tuple[str, ...] = ()) -> list[str]:
    """A Markdown table of ``cls``'s init fields: name, type, default, meaning."""
    meanings = field_meanings(cls)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a forward reference that does not resolve: the annotation as written
        hints = {}
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        tp = _type_name(hints.get(f.name, f.type))
        lines.append(f"| `{f.name}` | `{_cell(tp)}` | {_cell(_default(f))} | {_cell(meanings.get(f.name, ''))} |")
    return lines


def _model_config(builder: Any) -> type | None:
    """The config dataclass a model builder fills: its return type's ``__init__`` annotation."""
    try:
        model_cls = typing.get_type_hints(builder).get("return")
        hints = typing.get_type_hints(model_cls.__init__) if model_cls else {}
    except Exception:
        return None
    return next((t for k, t in hints.items() if k != "return" and dataclasses.is_dataclass(t)), None)


def config_page() -> str:
    from foveal.boed.annotate_config import AnnotateConfig
    from foveal.config import EvaluateConfig
    from foveal.models import MODELS
    from foveal.recipes.compare.config import CompareConfig
    from foveal.training.algorithms import ALGORITHMS
    from foveal.training.train_config import TrainConfig

    out = ["# Config reference", "",
           "Generated from the config dataclasses when the documentation is built: every field, its type, its",
           "default and its meaning. A run config (`foveal train --config X.yaml`) has the sections `data`,",
           "`model`, `algorithm`, `train` and `evaluate`; on the command line a field is set as",
           "`section.field=value` and removed (back to its default) with `section.field=null`.", "",
           "Fields marked *from the data* (`in_channels`, `num_classes`, `image_size`) are filled in from the",
           "dataset and never written in a config.", "",
           "## `train`", "", *dataclass_table(TrainConfig), "",
           "## `evaluate`", "", *dataclass_table(EvaluateConfig), "",
           "## `model`: the settings of each model", "",
           "`model.name` picks the model; the other keys are its settings.", ""]
    for name in MODELS.names():
        cls = _model_config(MODELS.get(name))
        out += [f"### `model.name: {name}`", ""]
        out += (dataclass_table(cls) if cls else ["(settings not introspectable)"]) + [""]
    out += ["## `algorithm`: the settings of each algorithm", "",
            "`algorithm.name` picks the training algorithm; the other keys are its settings.", ""]
    for name in ALGORITHMS.names():
        out += [f"### `algorithm.name: {name}`", "", *dataclass_table(ALGORITHMS.meta(name)["config"]), ""]
    out += ["## `foveal annotate`", "", "The annotator's settings (`--config X.yaml` or `key=value`).", "",
            *dataclass_table(AnnotateConfig), "",
            "## `foveal compare`", "", "A comparison config's top-level fields.", "",
            *dataclass_table(CompareConfig), ""]
    return "\n".join(out)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_page() -> str:
    from foveal.cli import _parser

    parser = _parser()
    out = ["# CLI reference", "",
           "Generated from the `foveal` command's own parsers when the documentation is built: what",
           "`foveal COMMAND --help` prints.", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in _subparsers(parser).items():
        out += [f"## `foveal {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
        for subname, subsub in _subparsers(sub).items():
            out += [f"### `foveal {name} {subname}`", "", "```text", subsub.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def api_page(src: Path) -> str:
    """One ``automodule`` per module of the package (private ``_x`` modules and ``__main__`` left out)."""
    names = []
    for path in sorted((src / "foveal").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] == "__main__" or any(p.startswith("_") for p in parts):
            continue
        names.append(".".join(parts))
    out = ["# API reference", "", "Generated from the docstrings when the documentation is built: every module of",
           "the package, in the order of its layers' names.", ""]
    for name in names:
        out += [f"## `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", "```", ""]
    return "\n".join(out)


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def generate(app) -> None:
    import os

    os.environ.setdefault("COLUMNS", "100")  # argparse wraps --help to the terminal; fix it
    folder = Path(app.srcdir) / "reference"
    _write(folder / "cli.md", cli_page())
    _write(folder / "config.md", config_page())
    _write(folder / "api.md", api_page(Path(app.srcdir).parent / "src"))


def setup(app):
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True, "version": "1"}
