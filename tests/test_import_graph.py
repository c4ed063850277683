"""The package's static import graph, built from the source with `ast`: no cycle among its
modules, and no import that goes up the layers io -> merge -> models -> evals -> path -> tune ->
commands -> cli. A module's layer is its first component under mergekit_sg; modules at the
package root (errors, version, options) may be imported from anywhere, and the package's own
__init__ and __main__ sit above every layer. Imports inside functions count too (they are the
lazy edges), and so do module names written as string literals in the package (the CLI's and
the commands face's lazy tables)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).parents[1] / "mergekit_sg"
LAYERS = ["io", "merge", "models", "evals", "path", "tune", "commands", "cli"]
TOP = ("mergekit_sg", "mergekit_sg.__main__")


def module_names() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in (`pkg.mod.attr` -> `pkg.mod`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import sub` imports the submodule pkg.sub when there is one, else the
            # name from pkg itself
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules
        ):
            found.add(node.value)
    edges = {_resolve(n, modules) for n in found if n.split(".")[0] == "mergekit_sg"}
    edges.discard(None)
    edges.discard(module)
    return {e for e in edges if e is not None}


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def layer(module: str) -> int | None:
    """Index in LAYERS; None for the package-root modules everyone may use."""
    if module in TOP:
        return len(LAYERS)
    parts = module.split(".")
    if parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None (iterative DFS, three colours)."""
    colour = dict.fromkeys(edges, 0)
    for root in sorted(edges):
        if colour[root]:
            continue
        stack = [(root, iter(sorted(edges[root])))]
        path = [root]
        colour[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour[nxt] == 1:
                return [*path[path.index(nxt) :], nxt]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(edges[nxt]))))
                path.append(nxt)
    return None


def test_every_subpackage_is_a_known_layer() -> None:
    subpackages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert subpackages <= set(LAYERS), subpackages - set(LAYERS)


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_no_upward_import_between_layers() -> None:
    upward = []
    for module, targets in graph().items():
        here = layer(module)
        for target in targets:
            there = layer(target)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} -> {target}")
    assert not upward, "\n".join(sorted(upward))


def test_root_modules_import_no_layer() -> None:
    """errors, version and options are imported by every layer, so they import none."""
    g = graph()
    for module, targets in g.items():
        if layer(module) is None:
            assert all(layer(t) is None for t in targets), (module, targets)


@pytest.mark.parametrize(
    ("edges", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"a2"}, "a2": {"b"}, "b": {"a2"}}, ["a2", "b", "a2"]),
    ],
)
def test_find_cycle(edges: dict[str, set[str]], cycle: list[str] | None) -> None:
    """The detector itself: it finds a cycle that is there and none that is not."""
    assert find_cycle(edges) == cycle


def test_no_cycle_outside_tune() -> None:
    """Until the tune split lands: the rest of the package has no cycle, tune/ left out."""
    g = {m: {t for t in ts if ".tune" not in t} for m, ts in graph().items() if ".tune" not in m}
    cycle = find_cycle(g)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_graph_sees_lazy_and_string_edges() -> None:
    """The CLI imports each command lazily by name; those edges must be in the graph."""
    g = graph()
    assert "mergekit_sg.cli.interpolate" in g["mergekit_sg.cli.app"]
    assert "mergekit_sg.commands.interpolate" in g["mergekit_sg.cli.interpolate"]
    assert "mergekit_sg.commands.scan" in g["mergekit_sg.commands.registry"]
