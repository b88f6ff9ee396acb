"""The shape of the source tree: small modules and an import graph without cycles.

The graph counts every import of a module of the package, wherever it is: at the top,
inside a function, or under ``if TYPE_CHECKING:``. A cycle that only type checkers
follow still ties the modules together for a reader and for the next refactor.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Set
from pathlib import Path

PACKAGE = "resilient_tg"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

MAX_LINES = 520
# Modules allowed over MAX_LINES (none: split a module along its seams instead).
ALLOWED_OVER: set[str] = set()

# Each entry is one strongly connected group of modules tolerated for now; a group
# found in the graph passes if it lies within one entry.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()

Graph = Mapping[str, Set[str]]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_files() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def _imports(module: str, path: Path, known: Set[str]) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                # `from . import name` names a submodule when there is one.
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in known else target)
    ours = {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}
    unresolved = ours - known
    assert not unresolved, f"{module} imports modules that do not exist: {sorted(unresolved)}"
    return ours - {module}


def import_graph() -> dict[str, set[str]]:
    files = _source_files()
    return {module: _imports(module, path, files.keys()) for module, path in files.items()}


def strongly_connected(graph: Graph) -> list[set[str]]:
    """Groups of modules that import each other, directly or not (Tarjan's algorithm,
    iterative); only groups of two or more, or a module that imports itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group: set[str] = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1 or node in graph.get(node, ()):
                        groups.append(group)
    return groups


def cycle_path(graph: Graph, group: Set[str]) -> list[str]:
    """One cycle through the group, as a path that ends where it starts."""
    start = min(group)
    # Breadth-first from start back to start, staying inside the group: a shortest cycle.
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ())):
                if nxt not in group:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {sorted(group)}")


def unexpected_cycles(graph: Graph, known: tuple[frozenset[str], ...] = ()) -> list[list[str]]:
    """A cycle path for each group of mutually importing modules not within ``known``."""
    return [
        cycle_path(graph, group)
        for group in strongly_connected(graph)
        if not any(group <= allowed for allowed in known)
    ]


def test_no_source_module_is_over_the_line_limit() -> None:
    over = {
        str(path.relative_to(SRC)): lines
        for path in SRC.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        and path.name not in ALLOWED_OVER
    }
    assert not over, "modules over {} lines: {}".format(
        MAX_LINES, ", ".join(f"{name} ({lines})" for name, lines in sorted(over.items()))
    )


def test_the_import_graph_has_no_cycles() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.testing._api" in graph[f"{PACKAGE}.testing._server"]  # the graph is real
    cycles = unexpected_cycles(graph, KNOWN_CYCLES)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_known_cycles_are_still_there() -> None:
    """An entry nothing in the graph needs any more is removed, so it cannot hide a
    new cycle."""
    groups = strongly_connected(import_graph())
    stale = [sorted(allowed) for allowed in KNOWN_CYCLES if not any(g <= allowed for g in groups)]
    assert not stale, f"KNOWN_CYCLES entries with no cycle left: {stale}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"e"}}
    assert unexpected_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert unexpected_cycles(graph, (frozenset("abc"), frozenset("e"))) == []
    assert unexpected_cycles({"a": {"b"}, "b": set()}) == []


def test_imports_resolve_relative_and_submodule_names(tmp_path: Path) -> None:
    """`from . import x` is an edge to the submodule x; `from .. import y` to the
    package when y is not a module."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import _b, helper\n"
        "from .. import _errors\n"
        "if TYPE_CHECKING:\n"
        "    from ._c import C\n"
        "def f():\n"
        "    import resilient_tg._d\n"
    )
    known = {
        "resilient_tg",
        "resilient_tg._errors",
        "resilient_tg._d",
        "resilient_tg.sub",
        "resilient_tg.sub._b",
        "resilient_tg.sub._c",
        "resilient_tg.sub.mod",
    }
    assert _imports("resilient_tg.sub.mod", source, known) == {
        "resilient_tg.sub._b",
        "resilient_tg.sub",
        "resilient_tg._errors",
        "resilient_tg.sub._c",
        "resilient_tg._d",
    }
