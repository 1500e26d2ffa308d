"""Docs that cannot drift: the hook reference is generated, every hook is documented, the MkDocs
site builds with no broken link, and every method page is its plugin README."""

import runpy
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_hook_reference_is_up_to_date():
    render = runpy.run_path(str(DOCS / "gen_hooks.py"))["render"]
    assert (DOCS / "hooks.md").read_text() == render(), "run: python docs/gen_hooks.py"


def test_every_hook_is_documented_with_its_signature():
    from nascore import hookspecs

    text = (DOCS / "hooks.md").read_text()
    for name in hookspecs.ROLES.values():
        assert f"`{name}(register)`" in text


ROOT = DOCS.parent
METHODS = ("spos", "cream", "abs", "rlnas", "neas", "dna", "tnas", "setn", "nse", "pwkd", "zerocost")


def _first_heading(markdown: str) -> str:
    return next(line[2:].strip() for line in markdown.splitlines() if line.startswith("# "))


def test_mkdocs_build_is_strict_clean(tmp_path):
    """The site builds with `mkdocs build --strict`: no broken link or anchor, no page left out of
    the nav, and every method page carries its plugin's README (one source of truth)."""
    import html
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("NASCORE_CI"):
            pytest.fail("mkdocs missing: pip install -e '.[docs]'")
        pytest.skip("mkdocs not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site), "-f", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    for m in METHODS:
        page = site / "methods" / m / "index.html"
        assert page.is_file(), f"no page for {m}"
        heading = _first_heading((ROOT / "plugins" / m / "README.md").read_text())
        text = html.unescape(page.read_text())
        assert heading in text, f"{page} does not include plugins/{m}/README.md ({heading!r})"


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


def test_nav_lists_every_docs_page_and_every_method():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, f"nav vs docs/: missing {sorted(set(pages) - set(nav))}, stale {sorted(set(nav) - set(pages))}"
    for m in METHODS:
        assert f"methods/{m}.md" in nav
        include = f'{{% include-markdown "../../plugins/{m}/README.md" %}}'
        assert (DOCS / "methods" / f"{m}.md").read_text().strip() == include, f"docs/methods/{m}.md must only include the README"


def test_plugin_readmes_have_the_common_sections():
    """Every method README answers the same questions under the same headings, in the same order."""
    wanted = ["What the paper does", "What we implement", "Where we differ from the official code", "Recipe", "Measured"]
    for m in METHODS:
        text = (ROOT / "plugins" / m / "README.md").read_text()
        headings = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
        found = [h for h in headings if h in wanted]
        assert found == wanted, f"plugins/{m}/README.md sections: {headings}"
        recipe = text.split("\n## Recipe\n", 1)[1].split("\n## ", 1)[0]
        assert "nascore run " in recipe, f"plugins/{m}/README.md: the Recipe section names no `nascore run` command"
