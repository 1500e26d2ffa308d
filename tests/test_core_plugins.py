"""Plugin discovery through entry points, including broken plugins that must not break the rest."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nascore.errors import PluginError, UnknownComponent
from nascore.registry import build_registry

REPO = Path(__file__).resolve().parents[1]


def make_dist(root: Path, dist: str, entry: str, module: str, source: str) -> None:
    """A fake installed distribution: ``<dist>-0.1.dist-info`` with an entry point, plus its module."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[nascore]\n{entry} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
from pydantic import BaseModel, ConfigDict
from nascore import hookimpl
from nascore.roles import SearchResult

class Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = 3

class First:
    '''Returns the first k architectures of the space, scored.'''
    def __init__(self, cfg, ctx=None):
        self.cfg = cfg
    def search(self, ctx, evaluator):
        from nascore.search import evaluate, rank
        archs = [a for _, a in zip(range(self.cfg.k), ctx.space.enumerate())]
        return SearchResult(candidates=rank(evaluate(ctx, evaluator, archs, origin="first")))

@hookimpl
def register_selectors(register):
    register("first_k", First, config=Cfg)
"""
BROKEN_IMPORT = "import not_a_module_anywhere\n"
BROKEN_HOOK = """
from nascore import hookimpl

@hookimpl
def register_trainers(register):
    raise RuntimeError("boom in hook")
"""
BAD_SPEC = """
from nascore import hookimpl

@hookimpl
def register_trainers(register, surprise):
    pass
"""
EXITS = "raise SystemExit(3)\n"


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    make_dist(tmp_path, "nascore-good", "good", "nascore_good_mod", GOOD)
    make_dist(tmp_path, "nascore-broken", "broken", "nascore_broken_mod", BROKEN_IMPORT)
    make_dist(tmp_path, "nascore-hookfail", "hookfail", "nascore_hookfail_mod", BROKEN_HOOK)
    make_dist(tmp_path, "nascore-badspec", "badspec", "nascore_badspec_mod", BAD_SPEC)
    make_dist(tmp_path, "nascore-exits", "exits", "nascore_exits_mod", EXITS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("NASCORE_LOAD_PLUGINS", "good,broken,hookfail,badspec,exits")
    return tmp_path


def test_builtins_register_through_the_same_hooks():
    reg = build_registry(load_entry_points=False)
    for role, name in [("space", "tiny_chain"), ("dataset", "mnist5k"), ("evaluator", "accuracy"),
                       ("selector", "random"), ("trainer", "single_path")]:
        comp = reg.get(role, name)
        assert comp.dist == "nascore"
        assert comp.plugin.startswith("nascore.builtin.")


def test_entry_point_plugins_load_and_failures_are_isolated(plugin_dir):
    reg = build_registry()
    assert reg.get("selector", "first_k").dist == "nascore-good"
    failed = {f.dist: f for f in reg.failures}
    assert set(failed) == {"nascore-broken", "nascore-hookfail", "nascore-badspec", "nascore-exits"}
    assert failed["nascore-broken"].phase == "import" and "not_a_module_anywhere" in failed["nascore-broken"].error
    assert failed["nascore-hookfail"].phase == "register_trainers" and "boom in hook" in failed["nascore-hookfail"].error
    assert failed["nascore-badspec"].phase == "validate"
    assert failed["nascore-exits"].phase == "import"
    # the built-ins still work
    assert reg.get("selector", "random").dist == "nascore"


def test_config_naming_a_component_of_a_failed_plugin_says_why(plugin_dir):
    reg = build_registry()
    with pytest.raises(UnknownComponent) as e:
        reg.get("trainer", "boom")
    assert "nascore-hookfail" in str(e.value) and "boom in hook" in str(e.value)


def test_unknown_component_suggests_the_closest_name():
    reg = build_registry(load_entry_points=False)
    with pytest.raises(UnknownComponent, match="did you mean 'random'"):
        reg.get("selector", "randm")


def test_duplicate_names_are_refused_naming_both_plugins():
    from nascore import hookimpl

    class Dup:
        @hookimpl
        def register_selectors(self, register):
            register("random", object)

    reg = build_registry(load_entry_points=False, extra=[(Dup(), "dup-plugin")])
    (failure,) = reg.failures
    assert "registered by both 'nascore' and 'dup-plugin'" in failure.error


def test_disable_switch_blocks_a_plugin(plugin_dir, monkeypatch):
    monkeypatch.setenv("NASCORE_DISABLE_PLUGINS", "good")
    reg = build_registry()
    assert "first_k" not in reg.components["selector"]


def test_third_party_component_runs_a_search(plugin_dir, tmp_path):
    from nascore.testing import run_config, tiny_config

    cfg = tiny_config(stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 2}}},
        {"kind": "search", "selector": {"name": "first_k", "options": {"k": 4}}, "evaluator": "accuracy"},
    ])
    ctx = run_config(cfg, tmp_path / "run", registry=build_registry())
    assert len(ctx.candidates) == 4
    assert {c.origin for c in ctx.candidates} == {"first"}


def _cli(args, env_extra, cwd):
    import os

    env = {**os.environ, **env_extra, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nascore", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


def test_cli_plugins_lists_failures_and_exits_zero(plugin_dir):
    env = {"PYTHONPATH": f"{plugin_dir}", "NASCORE_LOAD_PLUGINS": "good,broken,hookfail"}
    out = _cli(["plugins"], env, plugin_dir)
    assert out.returncode == 0, out.stderr
    assert "nascore-good 0.1  [ok]" in out.stdout and "first_k" in out.stdout
    assert "nascore-broken 0.1  [failed]" in out.stdout and "not_a_module_anywhere" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    js = json.loads(_cli(["plugins", "--json"], env, plugin_dir).stdout)
    status = {r["distribution"]: r["status"] for r in js}
    assert status["nascore-good"] == "ok" and status["nascore-hookfail"] == "failed"
    assert _cli(["plugins", "--strict"], env, plugin_dir).returncode == 1


def test_example_plugin_loads_through_its_entry_point(tmp_path, monkeypatch):
    """The example in examples/ is found by the same entry-point machinery as an installed package."""
    src = REPO / "examples" / "nascore-hillclimb" / "src"
    info = tmp_path / "nascore_hillclimb-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nascore-hillclimb\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[nascore]\nhillclimb = nascore_hillclimb.plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setenv("NASCORE_LOAD_PLUGINS", "hillclimb")
    reg = build_registry()
    assert reg.get("selector", "hillclimb").dist == "nascore-hillclimb"


def test_factory_errors_name_the_plugin():
    from nascore import hookimpl

    class Bad:
        @hookimpl
        def register_selectors(self, register):
            def factory(cfg, ctx):
                raise ValueError("nope")

            register("bad_sel", factory)

    reg = build_registry(load_entry_points=False, extra=[(Bad(), "bad-plugin")])
    with pytest.raises(PluginError, match="bad-plugin.*ValueError: nope"):
        reg.get("selector", "bad_sel").build({}, None)
