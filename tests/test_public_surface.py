"""The public surface a plugin may import (nascore/public.py): it exists, it is documented, and the
shipped plugins stay inside it."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from nascore.public import PLUGIN_API

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCES = sorted(REPO.glob("plugins/*/src")) + [REPO / "examples" / "nascore-hillclimb" / "src"]


def core_imports(source: str) -> list[tuple[str, str]]:
    """(module, name) for every import from nascore in ``source``, anywhere in it.

    ``import nascore.x`` is reported as ``(nascore.x, "*")``: a plugin imports names, not modules.
    """
    out: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "nascore" or node.module.startswith("nascore."):
                out += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, "*") for a in node.names if a.name == "nascore" or a.name.startswith("nascore.")]
    return out


def outside_surface(source: str) -> list[str]:
    return [f"{m}.{n}" for m, n in core_imports(source) if n not in PLUGIN_API.get(m, ())]


@pytest.mark.parametrize("module", sorted(PLUGIN_API))
def test_every_listed_name_exists(module):
    mod = importlib.import_module(module)
    missing = [n for n in PLUGIN_API[module] if not hasattr(mod, n)]
    assert not missing, f"nascore/public.py lists {module}.{missing}, which do not exist"


def test_the_plugin_docs_list_the_same_names():
    doc = (REPO / "docs" / "writing-plugins.md").read_text()
    section = doc.split("### What a plugin may import", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = tuple(n.strip().strip("`") for n in cells[1].split(","))
    assert rows == PLUGIN_API


def test_the_checker_flags_imports_outside_the_surface():
    src = (
        "from nascore.arch import Architecture\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from nascore.pipeline.context import RunContext\n"
        "def f():\n    from nascore.cost import _analysis\n    import nascore.space\n"
    )
    assert outside_surface(src) == ["nascore.pipeline.context.RunContext", "nascore.cost._analysis", "nascore.space.*"]


@pytest.mark.parametrize("root", PLUGIN_SOURCES, ids=lambda p: p.parent.name)
def test_shipped_plugins_import_only_the_public_surface(root):
    bad = []
    for path in sorted(root.rglob("*.py")):
        bad += [f"{path.relative_to(REPO)}: {name}" for name in outside_surface(path.read_text())]
    assert not bad, "imports from nascore outside nascore/public.py:\n" + "\n".join("  " + b for b in bad)


def _protocol_members(proto: type) -> dict[str, object]:
    members: dict[str, object] = {}
    for klass in proto.__mro__:
        if klass in (object,) or klass.__name__ in ("Protocol", "Generic"):
            continue
        for name in getattr(klass, "__annotations__", {}):
            members.setdefault(name, None)
        for name, value in vars(klass).items():
            if not name.startswith("_"):
                members.setdefault(name, value)
    return members


def test_the_pipeline_context_provides_everything_the_protocol_promises(tmp_path):
    """``RunContext`` satisfies ``nascore.roles.Context``: every attribute, property and method, with
    the protocol's parameter names (checked on a real context, so instance attributes count)."""
    from nascore.pipeline.context import RunContext
    from nascore.roles import Context
    from nascore.testing import make_context, tiny_config

    ctx = make_context(tiny_config(), run_dir=tmp_path / "r")
    try:
        members = _protocol_members(Context)
        assert {"space", "supernet", "data", "cost", "constraint", "log", "checkpoints", "state"} <= set(members)
        for name, proto_value in members.items():
            assert hasattr(type(ctx), name) or name in vars(ctx), f"RunContext has no {name!r}"
            if inspect.isfunction(proto_value):
                want = list(inspect.signature(proto_value).parameters)
                got = list(inspect.signature(getattr(RunContext, name)).parameters)
                assert got == want, f"RunContext.{name}{got} differs from Context.{name}{want}"
            elif isinstance(proto_value, property):
                assert isinstance(inspect.getattr_static(RunContext, name), property), name
    finally:
        ctx.log.close()
