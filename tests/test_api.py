"""The Python API (nascore.api): a recipe run from Python, read back, resumed, exported; the CLI runs through it."""

from __future__ import annotations

import json
import types

import pytest
import torch
import yaml

import nascore.api as nas
from nascore import hookimpl
from nascore.errors import NascoreError, UnknownComponent
from nascore.testing import make_registry, tiny_config

torch.set_num_threads(1)

STAGES = [
    {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
    {"kind": "search", "selector": {"name": "random", "options": {"samples": 6}}, "evaluator": "accuracy"},
    {"kind": "export", "formats": ["json"]},
    {"kind": "retrain", "epochs": 1, "top": 1},
]
RECIPE = tiny_config(name="api-demo", stages=STAGES)


@hookimpl
def register_recipes(register):
    register("api-demo", RECIPE, summary="tiny chain: train, random search, export, retrain")


PLUGIN = types.ModuleType("api_demo_plugin")
PLUGIN.register_recipes = register_recipes


@pytest.fixture(scope="module")
def registry():
    return make_registry(PLUGIN)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, registry):
    out = tmp_path_factory.mktemp("api") / "run"
    limit = 300_000
    run = nas.run("api-demo", overrides={"constraint.macs_max": limit, "seed": 3}, out=out, registry=registry)
    return run, out, limit


def test_a_recipe_runs_from_python_with_overrides(finished):
    run, out, limit = finished
    assert run.run_dir == out and (out / "results.json").is_file() and (out / "report.html").is_file()
    assert run.config["seed"] == 3 and run.config["constraint"]["macs_max"] == limit  # the overrides took
    assert run.candidates and all(c.macs <= limit for c in run.candidates)
    assert run.best == run.candidates[0]
    rows = run.table()
    assert rows[0]["arch"] == run.best.arch_str and "retrain" in rows[0]  # the retrain stage's figures
    assert "retrain" not in rows[-1] or len(rows) == 1


def test_open_reads_back_the_same_run_without_building_anything(finished):
    run, out, _ = finished
    opened = nas.open(out)
    assert opened.context is None
    assert [(c.arch_str, c.score) for c in opened.candidates] == [(c.arch_str, c.score) for c in run.candidates]
    on_disk = json.loads((out / "results.json").read_text())
    assert opened.results["candidates"] == on_disk["candidates"] and opened.results["run"] == "api-demo"
    with pytest.raises(NascoreError, match="not a run folder"):
        nas.open(out / "nothing")


def test_resume_of_a_finished_run_runs_nothing_and_export_writes_a_model(finished, registry):
    run, out, _ = finished
    starts = (out / "metrics.jsonl").read_text().count('"stage_start"')
    again = nas.resume(out, registry=registry)
    assert [(c.arch_str, c.score) for c in again.candidates] == [(c.arch_str, c.score) for c in run.candidates]
    assert (out / "metrics.jsonl").read_text().count('"stage_start"') == starts == len(STAGES)  # no stage ran again
    folder = nas.export(out, 0, "torchscript")
    meta = json.loads((folder / "arch.json").read_text())
    assert meta["arch"] == run.best.arch_str
    model = torch.jit.load(str(folder / "model.ts"))
    x = torch.randn(2, *run.results["input_shape"])
    assert model(x).shape == (2, 10)


def test_a_yaml_path_and_a_dict_give_the_same_result_as_the_recipe(finished, tmp_path, registry):
    run, _, limit = finished
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "seed": 3, "constraint": {"macs_max": limit}}))
    data, source = nas.load_config(path)
    assert source == str(path) and data["name"] == "api-demo"
    dict_run = nas.run({**RECIPE, "stages": STAGES[:2]}, overrides=[f"constraint.macs_max={limit}", "seed=3"],
                       in_memory=True, registry=registry)
    assert dict_run.run_dir is None
    # the same seed and stages up to the search: the same ranking as the recipe run
    assert [(c.arch_str, c.score) for c in dict_run.candidates] == [(c.arch_str, c.score) for c in run.candidates]


def test_unknown_recipe_is_a_nascore_error_with_a_suggestion(registry):
    with pytest.raises(UnknownComponent, match="did you mean 'api-demo'"):
        nas.load_config("api-dem", registry=registry)


def test_the_cli_runs_through_the_api(monkeypatch, tmp_path):
    """``nascore run`` / ``resume`` / ``export`` call nascore.api (a sentinel there stops them)."""
    from nascore import cli

    class Sentinel(Exception):
        pass

    def boom(*a, **k):
        raise Sentinel

    for name in ("start", "resume_context"):
        monkeypatch.setattr(nas, name, boom)
    for argv in (["run", "whatever.yaml"], ["resume", str(tmp_path)], ["export", str(tmp_path)]):
        with pytest.raises(Sentinel):
            cli.main(["--debug", *argv])


def test_space_outside_a_run_gets_a_context_with_the_input_shape():
    sp = nas.space("tiny_chain", {"width": 4}, input_shape=(3, 32, 32), num_classes=7)
    assert tuple(sp.input_shape) == (3, 32, 32) and sp.num_classes == 7
    net = sp.build_supernet().child(sp.first()).eval()
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(NascoreError, match="C, H, W"):
        nas.space("tiny_chain", input_shape=(3, 32))
