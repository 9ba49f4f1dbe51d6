"""The one registry type (:class:`foveal.registry.Registry`): registration, duplicates, lookup, lazy targets."""

from __future__ import annotations

import pytest

from foveal.registry import Registry


def test_register_by_decorator_and_build_with_keywords():
    reg = Registry("widget", field="widget.name")

    @reg.register("square", sides=4)
    def square(*, size: int = 1):
        """A square widget.

        More text that is not the summary."""
        return ("square", size)

    assert reg.build("square", size=3) == ("square", 3)
    assert reg.get("square") is square
    assert reg.describe() == [("square", "A square widget.")]
    assert reg.meta("square") == {"sides": 4}
    assert "square" in reg and "circle" not in reg and len(reg) == 1


def test_duplicate_names_both_places():
    reg = Registry("widget")
    reg.register("a", lambda: 1, summary="first")
    with pytest.raises(ValueError, match=r"widget registry: the name 'a' is registered twice: first at .*"
                                         r"test_registry.py:\d+ .* again at .*test_registry.py:\d+"):
        reg.register("a", lambda: 2, summary="second")


def test_unknown_name_lists_names_and_closest_matches():
    reg = Registry("widget", field="widget.name")
    for name in ("ram-grid", "ram", "dram"):
        reg.register(name, dict, summary=name)
    with pytest.raises(ValueError, match=r"^widget\.name: expected one of \['dram', 'ram', 'ram-grid'\], "
                                         r"found 'ram-gird'; did you mean 'ram-grid'"):
        reg.build("ram-gird")
    with pytest.raises(ValueError, match=r"^model\.name: .* found 42$"):
        reg.check(42, "model.name")


def test_order_metadata_filter_and_error_type():
    class MyError(Exception):
        pass

    reg = Registry("thing", error=MyError, sort=False)
    reg.register("z", dict, summary="z", kind="a")
    reg.register("b", list, summary="b", kind="b")
    assert reg.names() == ["z", "b"] and list(reg) == ["z", "b"]
    assert reg.names(kind="b") == ["b"]
    with pytest.raises(MyError):
        reg.get("nope")


def test_lazy_target_is_imported_on_first_use_and_needs_a_summary():
    reg = Registry("function")
    reg.register("join", "os.path:join", summary="joins paths")
    entry = reg.entry("join")
    assert entry.target == "os.path:join"
    assert reg.build("join", "a", "b") == "a/b"
    import os.path
    assert entry.target is os.path.join
    with pytest.raises(ValueError, match="needs a summary"):
        reg.register("split", "os.path:split")
    with pytest.raises(TypeError, match="expected a callable or 'module:attribute'"):
        reg.register("bad", 42, summary="x")
    with pytest.raises(TypeError, match="expected a callable or 'module:attribute'"):
        reg.register("bad", "no-colon", summary="x")


def test_summary_is_the_docstrings_first_paragraph_on_one_line_and_required():
    reg = Registry("widget")

    @reg.register("wrapped")
    def wrapped():
        """A summary that wraps onto a second line, with :class:`~foveal.retina.LocationGrid` and
        ``code`` in it.

        Details."""

    assert reg.describe() == [("wrapped", "A summary that wraps onto a second line, with LocationGrid and code in it.")]
    with pytest.raises(ValueError, match=r"widget registry: 'bare': .*<lambda> has no docstring and needs a summary"):
        reg.register("bare", lambda: None)

    class Quiet(Registry):  # a docstring it only inherits says nothing about it
        pass

    with pytest.raises(ValueError, match="has no docstring"):
        reg.register("quiet", Quiet)

    @reg.register("full")
    def full():
        """Reads :mod:`foveal.data` and :class:`~foveal.retina.LocationGrid`."""

    assert reg.entry("full").summary == "Reads foveal.data and LocationGrid."
    reg.register("given", lambda: None, summary="a summary\n  given")
    assert ("given", "a summary given") in reg.describe()


def test_build_hook_validation_and_other_accepted_names():
    built = []

    def build(name, *args, **kwargs):  # what a kind does beyond calling the builder: here, records the name
        built.append(name)
        return reg.get(name)(*args, **kwargs)

    def validate(name, target, meta):
        if meta.get("kind") not in ("a", "b"):
            raise ValueError(f"{name}: kind expected 'a' or 'b', found {meta.get('kind')!r}")

    reg = Registry("widget", field="widget.name", build=build, validate=validate, also="big-<name>")
    reg.register("w", dict, summary="w", kind="a")
    assert reg.build("w", x=1) == {"x": 1} and built == ["w"]
    with pytest.raises(ValueError, match="v: kind expected 'a' or 'b', found None"):
        reg.register("v", dict, summary="v")
    assert "v" not in reg
    with pytest.raises(ValueError, match=r"^widget\.name: expected one of \['w'\] or big-<name>, found 'x'$"):
        reg.check("x")
