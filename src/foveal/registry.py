"""One registry type for every kind of plug-in: models, datasets, algorithms, policies, sequence makers.

A :class:`Registry` maps names to things that build something (a function, a class, or a lazy
``"module:attribute"`` string imported on first use), each with a one-line summary and free metadata::

    MODELS = Registry("model", field="model.name")

    @MODELS.register("ram", summary="the recurrent attention model", kind="glimpse")
    def ram(**config): ...

    MODELS.build("ram", hidden_size=256)   # calls the builder with the keyword arguments
    MODELS.names(kind="glimpse")           # sorted (or registration order), filtered by metadata
    MODELS.describe()                      # [(name, summary), ...] for `foveal list`

A name is registered once: a second registration is an error naming both places. An unknown name is an
error naming the field, the registered names and the closest matches. Every entry has a one-line summary
(given, or the first paragraph of the target's docstring), so that a listing is never blank.

A kind whose building does more than calling the registered object (a model is named for its checkpoint,
an algorithm's settings become its config dataclass) passes ``build=``: then :meth:`Registry.build` is
that function, the one way to build one, and the kind's module exports it under its familiar name
(``create_model``). ``validate=`` refuses entries the kind cannot use (a model without a known ``kind``).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar, Union

__all__ = ["Registry", "RegistryEntry"]

T = TypeVar("T")


@dataclass
class RegistryEntry(Generic[T]):
    """One registered name.

    Attributes:
        name: the name it is registered under.
        target: the object (builder, class), or ``"module:attribute"`` until first used.
        summary: one line for listings.
        meta: free keyword metadata given at registration (e.g. a model's ``kind``).
        where: where it was registered (``file:line``), for the duplicate-name error.
    """

    name: str
    target: Union[T, str]
    summary: str
    meta: dict[str, Any] = field(default_factory=dict)
    where: str = ""

    def load(self) -> T:
        """The target, imported (once) if it was registered as ``"module:attribute"``."""
        if isinstance(self.target, str):
            module, _, attribute = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attribute)
        return self.target


_ROLE = re.compile(r":\w+:`(~?)([^`]+)`")  # as Sphinx shows them: :class:`~foveal.x.RAMConfig` -> RAMConfig


def _summary(obj: Any) -> str:
    """The first paragraph of ``obj``'s own docstring (a class's, not one it inherits) on one line, without
    reST markup; "" if it has none."""
    doc = getattr(obj, "__doc__", None) if not isinstance(obj, str) else None
    paragraph = inspect.cleandoc(doc).split("\n\n")[0] if isinstance(doc, str) else ""
    one_line = _ROLE.sub(lambda m: m[2].rpartition(".")[2] if m[1] else m[2], " ".join(paragraph.split()))
    return one_line.replace("``", "")


def _caller(depth: int) -> str:
    frame = sys._getframe(depth)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class Registry(Generic[T]):
    """Named plug-ins of one kind.

    Args:
        kind: what is registered, for messages ("model", "dataset", ...).
        field: the config field that names one (``model.name``) for unknown-name errors; default ``kind``.
        error: the exception type of unknown-name errors (``ValueError``; datasets use ``DataError``).
        sort: list names sorted (True) or in registration order (False).
        also: names accepted besides the registered ones, in words, for the unknown-name error
            (``"translated-<name>"``).
        build: what :meth:`build` calls, ``build(name, *args, **kwargs)``, where building one does more than
            calling the registered object; default: call it.
        validate: ``validate(name, target, meta)`` at registration, raising (``ValueError``, ``TypeError``) to
            refuse an entry.
    """

    def __init__(self, kind: str, *, field: Optional[str] = None, error: type[Exception] = ValueError,
                 sort: bool = True, also: str = "", build: Optional[Callable[..., Any]] = None,
                 validate: Optional[Callable[[str, Any, dict[str, Any]], None]] = None):
        self.kind, self.field, self.error, self.sort, self.also = kind, field or kind, error, sort, also
        self._build, self._validate = build, validate
        self._entries: dict[str, RegistryEntry[T]] = {}

    def register(self, name: str, target: Union[T, str, None] = None, *, summary: Optional[str] = None,
                 **meta: Any) -> Any:
        """Register ``target`` under ``name``; without ``target``, a decorator that registers what it decorates.

        Args:
            target: a builder or class, or ``"module:attribute"`` (imported when first used; then ``summary``
                is required, since nothing can be read from it yet).
            summary: one line for listings; default the first paragraph of the target's docstring.
            **meta: stored with the entry (:meth:`meta`).

        Raises:
            ValueError: the name is registered already (both places named), there is no summary (a lazy
                target, or one without a docstring), or this registry's ``validate`` refuses the entry.
            TypeError: the target is neither callable nor ``"module:attribute"``.
        """
        if target is None:
            where = _caller(2)

            def add(obj: T) -> T:
                self._add(name, obj, summary, meta, where)
                return obj

            return add
        self._add(name, target, summary, meta, _caller(2))
        return target

    def _add(self, name: str, target: Any, summary: Optional[str], meta: dict[str, Any], where: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} registry: a name must be a non-empty string, found {name!r}")
        if name in self._entries:
            first = self._entries[name]
            raise ValueError(f"{self.kind} registry: the name {name!r} is registered twice: first at {first.where} "
                             f"({_describe(first.target)}), again at {where} ({_describe(target)})")
        lazy = isinstance(target, str)
        if lazy and ":" not in target or not lazy and not callable(target):
            raise TypeError(f"{self.kind} registry: {name!r}: expected a callable or 'module:attribute', "
                            f"found {target!r}")
        summary = " ".join(summary.split()) if summary is not None else _summary(target)
        if not summary:
            what = f"a lazy target {target!r}" if lazy else f"{_describe(target)} has no docstring and"
            raise ValueError(f"{self.kind} registry: {name!r}: {what} needs a summary (summary=, one line for "
                             "listings)")
        if self._validate is not None:
            self._validate(name, target, meta)
        self._entries[name] = RegistryEntry(name, target, summary, dict(meta), where)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, **meta: Any) -> list[str]:
        """Registered names (sorted, or in registration order); only those whose metadata match ``meta``."""
        names = [n for n, e in self._entries.items() if all(e.meta.get(k) == v for k, v in meta.items())]
        return sorted(names) if self.sort else names

    def describe(self) -> list[tuple[str, str]]:
        """``(name, summary)`` of every entry, in :meth:`names` order."""
        return [(name, self._entries[name].summary) for name in self.names()]

    def check(self, name: Any, field: Optional[str] = None) -> None:
        """Raise this registry's error, naming ``field``, unless ``name`` is registered; with the closest names."""
        if name in self:
            return
        close = difflib.get_close_matches(name, list(self._entries), n=3) if isinstance(name, str) else []
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        also = f" or {self.also}" if self.also else ""
        raise self.error(f"{field or self.field}: expected one of {self.names()}{also}, found {name!r}{hint}")

    def entry(self, name: str, field: Optional[str] = None) -> RegistryEntry[T]:
        """The entry of ``name`` (:meth:`check` first)."""
        self.check(name, field)
        return self._entries[name]

    def get(self, name: str, field: Optional[str] = None) -> T:
        """The registered object of ``name``, imported if it was lazy."""
        return self.entry(name, field).load()

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata ``name`` was registered with."""
        return self.entry(name).meta

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the registered object of ``name`` with the arguments (or this registry's ``build``)."""
        if self._build is not None:
            return self._build(name, *args, **kwargs)
        return self.get(name)(*args, **kwargs)


def _describe(target: Any) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"
