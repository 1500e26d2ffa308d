"""What a new user hit (issue 19): --help without descriptions, --quiet hiding the stage headers, resume
of a finished run, compare's labels/smoke/units, a constraint one architecture meets, a disabled
plugin reported as unknown, `nascore spaces` misaligned. One small finished run is shared.
"""

from __future__ import annotations

import re
import shutil
import types
from pathlib import Path

import pytest
import torch

from nascore import cli
from nascore.io import read_json, write_json
from nascore.testing import make_registry, run_config, tiny_config


def _config(**over) -> dict:
    return tiny_config(log_every=2, stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 4}}, "evaluator": "accuracy"},
        {"kind": "retrain", "epochs": 1},
    ], **over)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("newcomer") / "run"
    run_config(_config(), run)
    return run


def _copy(run: Path, to: Path) -> Path:
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run, to)
    return to


# -- --help ----------------------------------------------------------------------------------
@pytest.mark.parametrize("verb", ["export", "report", "compare", "list", "resume"])
def test_help_of_each_verb_says_what_it_does(verb, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    usage, _, rest = out.partition("\n\n")
    description = rest.split("\n\n", 1)[0]
    assert not description.startswith(("positional arguments", "options")), out
    assert len(description.split()) >= 15, description  # a sentence or two, not a restated name
    positional = rest.split("positional arguments:", 1)[1].split("\n\n", 1)[0] if "positional arguments:" in rest else ""
    for line in positional.strip().splitlines():
        if line.startswith("  ") and not line.startswith("   " * 4):
            assert len(line.split()) >= 2, f"{verb}: positional argument without help: {line!r}"


# -- --quiet ---------------------------------------------------------------------------------
def test_quiet_still_prints_the_stage_headers(tmp_path, capsys):
    run_config(tiny_config(), tmp_path / "q")  # run_config runs quiet
    err = capsys.readouterr().err
    assert "[0] train (single_path)" in err and "%|" not in err


# -- resume of a finished run ------------------------------------------------------------------
def test_resume_of_a_finished_run_says_so_and_shows_the_original_times(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert cli.main(["resume", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "had already finished; nothing to run" in err
    times = read_json(run / "state.json")["timings"]
    assert f"its stages took {sum(times.values()):.1f} s" in out
    for key, name in (("0", "train (single_path)"), ("1", "search (random)"), ("2", "retrain")):
        assert re.search(rf"\[{key}\] {re.escape(name)}\s+{times[key]:.1f} s", out), out
    best = read_json(run / "results.json")["candidates"][0]
    assert best["arch"] in out and f"{100 * best['retrain']['test_acc']:.2f}%" in out
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # nothing ran, nothing was rewritten


# -- compare ---------------------------------------------------------------------------------
def test_compare_tells_same_named_folders_apart_and_marks_smoke_runs(finished, tmp_path, capsys):
    a = _copy(finished, tmp_path / "a" / "run")
    b = _copy(finished, tmp_path / "b" / "run")
    state = read_json(b / "state.json")
    state["smoke"] = True
    write_json(b / "state.json", state)
    assert cli.main(["compare", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("a/run ") and lines[3].startswith("b/run [smoke]")
    assert any(line.startswith("note: [smoke] runs (b/run)") for line in lines)
    # the score says what it is, in the same unit as the retrained accuracy
    best = read_json(a / "results.json")["candidates"][0]
    assert f"{100 * best['score']:.2f}% acc" in lines[2] and f"{100 * best['retrain']['test_acc']:.2f}%" in lines[2]


def test_compare_notes_scores_from_different_metrics(finished, tmp_path, capsys):
    a = _copy(finished, tmp_path / "a")
    b = _copy(finished, tmp_path / "b")
    results = read_json(b / "results.json")
    for c in results["candidates"]:
        c["metrics"] = {"angle": c["score"] * 90}
        c["score"] = c["score"] * 90
    write_json(b / "results.json", results)
    assert cli.main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "angle" in out and "note: the scores come from different metrics (acc, angle)" in out


# -- a constraint that only one architecture meets --------------------------------------------
def _min_macs() -> int:
    from nascore.testing import make_context

    ctx = make_context(tiny_config())
    ctx.log.close()
    return min(ctx.cost.cost(a)[0] for a in ctx.space.enumerate())


def test_a_constraint_only_one_architecture_meets_is_warned_about(tmp_path, capsys):
    stages = [{"kind": "search", "selector": {"name": "random", "options": {"samples": 4}}, "evaluator": "accuracy"}]
    run_config(tiny_config(stages=stages, constraint={"macs_max": _min_macs()}), tmp_path / "one")
    err = capsys.readouterr().err
    assert "warning: only one architecture of the 81 in the space meets the constraint" in err
    events = [m for m in map(__import__("json").loads, (tmp_path / "one" / "metrics.jsonl").read_text().splitlines())
              if m.get("event") == "few_feasible"]
    assert len(events) == 1 and events[0]["feasible"] == 1
    # a constraint most architectures meet: no warning, even though random search kept only 4 of keep=10
    run_config(tiny_config(stages=stages, constraint={"macs_max": 10 * _min_macs()}), tmp_path / "many")
    assert "warning: only" not in capsys.readouterr().err


# -- a disabled plugin ------------------------------------------------------------------------
class _FakeEntryPoint:
    """An installed plugin's entry point, without installing one."""

    name = "fakeplugin"
    value = "fake_plugin_module"
    dist = types.SimpleNamespace(name="nascore-fake", version="1.0")

    def load(self):
        from nascore.hookspecs import hookimpl

        mod = types.ModuleType("fake_plugin_module")

        @hookimpl
        def register_trainers(register):
            register("fake_trainer", lambda cfg, ctx: None, summary="a trainer of a disabled plugin")

        mod.register_trainers = register_trainers
        return mod


@pytest.mark.parametrize("env", [{"NASCORE_DISABLE_PLUGINS": "nascore-fake"}, {"NASCORE_LOAD_PLUGINS": "nascore-spos"}])
def test_a_disabled_plugins_component_is_reported_as_disabled(env, monkeypatch, capsys):
    from nascore import registry
    from nascore.errors import UnknownComponent

    monkeypatch.delenv("NASCORE_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("NASCORE_DISABLE_PLUGINS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(registry, "entry_points", lambda: [_FakeEntryPoint()])
    reg = registry.build_registry()
    assert "fake_trainer" not in reg.components["trainer"]
    with pytest.raises(UnknownComponent) as e:
        reg.get("trainer", "fake_trainer")
    text = str(e.value) + str(getattr(e.value, "hint", ""))
    assert "comes from plugin 'nascore-fake', which is disabled" in text
    assert ("NASCORE_DISABLE_PLUGINS" if "NASCORE_DISABLE_PLUGINS" in env else "NASCORE_LOAD_PLUGINS") in text
    with pytest.raises(UnknownComponent) as e:  # a name nobody provides stays plainly unknown
        reg.get("trainer", "nobody_has_this")
    assert "disabled" not in str(e.value)
    monkeypatch.setattr(cli, "_registry", lambda: reg)
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert out.count("nascore-fake  [disabled: ") == 1  # `nascore plugins` lists it, once


# -- nascore spaces ----------------------------------------------------------------------------
def test_spaces_are_listed_in_aligned_columns(capsys):
    assert cli.main(["spaces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    from nascore.registry import get_registry

    reg = get_registry()  # what the CLI lists: built-ins and installed plugins
    assert lines[0].split()[:3] == ["space", "decisions", "architectures"]
    summary_at = lines[0].index("summary")
    arch_end = lines[0].index("architectures") + len("architectures")
    for line in lines[1:]:
        name = line.split()[0]
        if "failed to build" in line:
            continue
        assert line[summary_at:].startswith(reg.components["space"][name].summary[:20]), line
        assert line[arch_end - 1] != " " and line[arch_end] == " ", line  # sizes right-aligned under the header
