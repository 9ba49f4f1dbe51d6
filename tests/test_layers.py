"""The package's dependency direction: no import cycles, and no import against the layer order.

Every ``import`` of a foveal module counts, at module level or inside a function (``if TYPE_CHECKING:``
blocks are left out: they never run), and so does a ``"foveal.module:function"`` string (a builder
imported by name on first use, as :mod:`foveal.policies` registers its built-ins). A module may import
from its own layer and the layers before it, never from a later one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The declared order, first to last; a module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("foveal", "foveal.runtime", "foveal.config", "foveal.configs", "foveal.checkpoint",
                     "foveal.files", "foveal.logits", "foveal.retina", "foveal.saliency", "foveal.registry")),
    ("data", ("foveal.data",)),
    ("models", ("foveal.models",)),
    ("policies", ("foveal.policies",)),
    ("sequences", ("foveal.sequences",)),
    ("training", ("foveal.training",)),
    ("boed", ("foveal.boed",)),
    ("evaluation", ("foveal.evaluation",)),
    ("recipes", ("foveal.recipes",)),
    ("cli", ("foveal.cli", "foveal.__main__")),
]
_BUILDER = re.compile(r"^(foveal(?:\.\w+)+):\w+$")


def modules(src: Path, package: str = "foveal") -> dict[str, Path]:
    """``{"foveal.training.engine": path, "foveal.training": path/__init__.py, ...}``"""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(src: Path, package: str = "foveal") -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` over every import of a module of ``package``."""
    known = modules(src, package)
    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for n in ast.walk(node)}
        edges: dict[str, int] = {}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    stem = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" for a in node.names] + [stem]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _BUILDER.match(node.value):
                targets = [node.value.partition(":")[0]]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != package:
                    continue
                resolved = _resolve(target, known)
                # a module is not an edge to itself, nor to the package that contains it
                if resolved and resolved != module and not module.startswith(resolved + ".") and resolved != package:
                    edges.setdefault(resolved, node.lineno)
        graph[module] = edges
    return graph


def layer_of(module: str, layers=LAYERS) -> int | None:
    best, index = -1, None
    for i, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    return index


def layer_violations(graph: dict[str, dict[str, int]], layers=LAYERS) -> list[str]:
    out = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            a, b = layer_of(module, layers), layer_of(target, layers)
            if a is not None and b is not None and b > a:
                out.append(f"{module} (layer {layers[a][0]}) imports {target} (layer {layers[b][0]}) at line "
                           f"{line}: a module may import only from its own layer and earlier ones")
    return out


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan), each sorted."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe_cycle(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    members = set(cycle)
    links = [f"{a} -> {b} (line {line})" for a in cycle for b, line in sorted(graph[a].items()) if b in members]
    return "import cycle: " + "; ".join(links)


# ----------------------------------------------------------------------------------------- the package
def test_the_package_has_no_import_cycle():
    graph = import_graph(SRC)
    cycles = import_cycles(graph)
    assert not cycles, "\n".join(describe_cycle(graph, c) for c in cycles)


def test_every_import_follows_the_layer_order():
    assert layer_violations(import_graph(SRC)) == []


def test_every_module_has_a_layer():
    assert [m for m in modules(SRC) if layer_of(m) is None] == []


# --------------------------------------------------------------------------- the checks catch mistakes
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "src"


def test_a_cycle_is_found_and_both_modules_named(tmp_path):
    src = _package(tmp_path, {
        "foveal/__init__.py": "",
        "foveal/training/__init__.py": "",
        "foveal/training/engine.py": "from foveal.training.loop import step\n",
        # an import inside a function is still an edge: hiding it there does not break the cycle
        "foveal/training/loop.py": "def step():\n    from foveal.training import engine\n",
    })
    graph = import_graph(src)
    cycles = import_cycles(graph)
    assert cycles == [["foveal.training.engine", "foveal.training.loop"]]
    message = describe_cycle(graph, cycles[0])
    assert "foveal.training.engine -> foveal.training.loop (line 1)" in message
    assert "foveal.training.loop -> foveal.training.engine (line 2)" in message


def test_an_import_against_the_layers_is_found_and_both_modules_named(tmp_path):
    src = _package(tmp_path, {
        "foveal/__init__.py": "",
        "foveal/retina.py": "",
        "foveal/training/__init__.py": "",
        "foveal/training/run.py": "import foveal.retina\n\ndef train():\n    from foveal.recipes.run import train_run\n",
        "foveal/recipes/__init__.py": "",
        "foveal/recipes/run.py": "from foveal.training import run\n",
        "foveal/policies/__init__.py": "BUILTIN = 'foveal.cli.things:build'\n",
        "foveal/cli/__init__.py": "",
        "foveal/cli/things.py": "",
    })
    assert import_cycles(import_graph(src)) == [["foveal.recipes.run", "foveal.training.run"]]
    assert layer_violations(import_graph(src)) == [
        "foveal.policies (layer policies) imports foveal.cli.things (layer cli) at line 1: a module may import "
        "only from its own layer and earlier ones",
        "foveal.training.run (layer training) imports foveal.recipes.run (layer recipes) at line 4: a module may "
        "import only from its own layer and earlier ones"]


def test_type_checking_imports_and_other_packages_do_not_count(tmp_path):
    src = _package(tmp_path, {
        "foveal/__init__.py": "",
        "foveal/models/__init__.py": ("from typing import TYPE_CHECKING\nimport torch\nif TYPE_CHECKING:\n"
                                      "    from foveal.cli import main\n"),
        "foveal/cli/__init__.py": "from foveal.models import x\n",
    })
    assert import_graph(src)["foveal.models"] == {}
    assert layer_violations(import_graph(src)) == []


@pytest.mark.parametrize("module, layer", [("foveal", "foundations"), ("foveal.retina", "foundations"),
                                           ("foveal.sequences.format", "sequences"), ("foveal.recipes.compare.run", "recipes"),
                                           ("foveal.__main__", "cli")])
def test_layer_of(module, layer):
    assert LAYERS[layer_of(module)][0] == layer
