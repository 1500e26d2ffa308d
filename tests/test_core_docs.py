"""Docs that cannot drift: the hook reference is generated and every hook is documented."""

import runpy
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_hook_reference_is_up_to_date():
    render = runpy.run_path(str(DOCS / "gen_hooks.py"))["render"]
    assert (DOCS / "hooks.md").read_text() == render(), "run: python docs/gen_hooks.py"


def test_every_hook_is_documented_with_its_signature():
    from nascore import hookspecs

    text = (DOCS / "hooks.md").read_text()
    for name in hookspecs.ROLES.values():
        assert f"`{name}(register)`" in text
