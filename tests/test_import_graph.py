"""The core's import graph: no cycles (counting type-only and function-level imports), and layers.

Every module under ``nascore/`` is parsed with ``ast`` (nothing is imported), and every import in
it becomes an edge: module level, under ``if TYPE_CHECKING:``, inside functions. Relative imports
are resolved; ``from nascore import x`` is an edge to ``nascore.x`` when that is a module and to the
package ``nascore`` otherwise. The registry's dynamic loading of the built-ins
(``nascore.builtin.DEFAULT_PLUGINS``, imported with ``importlib``) counts as edges too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "nascore"

# Lowest first. A module may import only from its own layer or a lower one. Every module of the
# package must be named here (a new module has to be placed before the test passes).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("values", ("nascore.errors", "nascore._version", "nascore.arch", "nascore.cost", "nascore.space", "nascore.width",
                "nascore.config", "nascore.data", "nascore.io")),
    ("contracts", ("nascore.roles", "nascore.hookspecs")),
    ("toolkit", ("nascore.trainer", "nascore.training", "nascore.evaluate", "nascore.prefix", "nascore.search", "nascore.methods",
                 "nascore.groundtruth", "nascore.latency")),
    ("components", ("nascore.builtin",)),
    ("registry", ("nascore.registry",)),
    ("pipeline", ("nascore.pipeline",)),
    ("surfaces", ("nascore", "nascore.__main__", "nascore.api", "nascore.cli", "nascore.report", "nascore.ranking", "nascore.testing",
                  "nascore.public")),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    """The absolute module a (possibly relative) ``from`` import names."""
    if level == 0:
        return target or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _owner(name: str, modules: dict[str, Path] | set[str]) -> str | None:
    """The deepest module of the package that ``name`` (a dotted import path) lies in."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def _dynamic_edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """The registry imports the built-in plugin modules listed in DEFAULT_PLUGINS by name."""
    tree = ast.parse(modules["nascore.builtin"].read_text())
    names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value in modules}
    assert names, "DEFAULT_PLUGINS not found in nascore/builtin/__init__.py"
    return {"nascore.registry": names}


def edges_of(mod: str, is_pkg: bool, source: str, modules: dict[str, Path] | set[str]) -> set[str]:
    """The modules of the package that ``source`` (module ``mod``) imports, anywhere in its body."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(mod, is_pkg, node.level, node.module)
            for a in node.names:
                sub = f"{base}.{a.name}"
                targets.append(sub if sub in modules else base)
        for t in targets:
            owner = _owner(t, modules)
            if owner is not None and owner != mod:
                out.add(owner)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph = {m: edges_of(m, p.name == "__init__.py", p.read_text(), modules) for m, p in modules.items()}
    for src, dsts in _dynamic_edges(modules).items():
        graph[src] |= dsts
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def _shortest_path(graph: dict[str, set[str]], comp: set[str], a: str, b: str) -> list[str]:
    prev: dict[str, str] = {a: a}
    queue = [a]
    while queue:
        v = queue.pop(0)
        if v == b:
            path = [b]
            while path[-1] != a:
                path.append(prev[path[-1]])
            return path[::-1]
        for w in sorted(graph[v] & comp):
            if w not in prev:
                prev[w] = v
                queue.append(w)
    raise AssertionError("not strongly connected")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: per edge inside a strongly connected component, the shortest cycle
    through it (deduplicated), so a failure names each loop a reader has to cut."""
    out: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for comp in strongly_connected(graph):
        members = set(comp)
        for u in comp:
            for v in sorted(graph[u] & members):
                cyc = [u] + _shortest_path(graph, members, v, u)[:-1]
                i = cyc.index(min(cyc))
                key = tuple(cyc[i:] + cyc[:i])
                if key not in seen:
                    seen.add(key)
                    out.append(list(key) + [key[0]])
    return sorted(out, key=lambda c: (len(c), c))


def layer_of(mod: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if mod == p or (p != "nascore" and mod.startswith(p + ".")):  # the package itself: exact
                if best is None or len(p) > best[0]:
                    best = (len(p), i)
    return None if best is None else best[1]


def test_the_graph_sees_every_kind_of_import():
    """The parser has teeth: type-only, function-level, relative and package-attribute imports count."""
    assert "nascore.registry" in import_graph()["nascore"]  # `from nascore.registry import ...`
    src = (
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "from nascore import c, not_a_module\n"
        "if TYPE_CHECKING:\n    from nascore.d import X\n"
        "def f():\n    import nascore.e.f\n"
    )
    mods = {"nascore", "nascore.a", "nascore.b", "nascore.c", "nascore.d", "nascore.e", "nascore.e.f"}
    assert edges_of("nascore.a", False, src, mods) == {"nascore.b", "nascore.c", "nascore", "nascore.d", "nascore.e.f"}
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(g) == [["a", "b", "c", "a"]]


def test_no_import_cycles_in_the_core():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in nascore/:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


def test_every_module_has_a_layer():
    missing = [m for m in all_modules() if layer_of(m) is None]
    assert not missing, f"modules with no layer in tests/test_import_graph.py LAYERS: {missing}"


def test_lower_layers_never_import_upper_ones():
    graph = import_graph()
    bad = []
    for src, dsts in sorted(graph.items()):
        ls = layer_of(src)
        for dst in sorted(dsts):
            ld = layer_of(dst)
            if ls is not None and ld is not None and ld > ls:
                bad.append(f"{src} ({LAYERS[ls][0]}) imports {dst} ({LAYERS[ld][0]})")
    assert not bad, "layering violations:\n" + "\n".join("  " + b for b in bad)


@pytest.mark.parametrize("contract", ["nascore.roles", "nascore.trainer", "nascore.hookspecs"])
def test_the_contracts_do_not_name_the_pipeline(contract):
    """What a plugin is written against describes the context as a protocol, not the pipeline's class."""
    graph = import_graph()
    assert not {d for d in graph[contract] if d.startswith("nascore.pipeline")}
