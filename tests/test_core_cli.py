"""The CLI as a user meets it: help, inspection verbs, errors without tracebacks, a smoke run."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from nascore.cli import main
from nascore.testing import tiny_config


@pytest.fixture(autouse=True)
def _builtins_only(monkeypatch):
    monkeypatch.setenv("NASCORE_LOAD_PLUGINS", "")


def test_help_lists_every_verb(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for verb in ("run", "resume", "export", "plugins", "spaces", "sample", "cost", "schema", "recipes"):
        assert verb in out


def test_sample_prints_valid_architectures(capsys):
    assert main(["sample", "tiny_chain", "-n", "4", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 4 and all(len(line.split("-")) == 4 for line in lines)


def test_cost_check_agrees_with_fvcore(capsys):
    assert main(["cost", "tiny_chain", "conv3-skip-conv5-skip", "--input", "1x28x28", "--check"]) == 0
    out = capsys.readouterr().out
    assert "agree" in out and "MACs" in out


def test_bad_architecture_string_is_one_clear_line(capsys):
    assert main(["cost", "tiny_chain", "conv3-conv9-skip-skip"]) == 2
    err = capsys.readouterr().err
    assert "decision 1 (layer1): option 'conv9' is not allowed" in err and "conv3, conv5, skip" in err
    assert "Traceback" not in err


def test_bad_config_exits_2_with_field_paths(tmp_path, capsys):
    cfg = tiny_config(stages=[{"kind": "train", "trainer": {"name": "single_path", "options": {"lr": "fast"}}}])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "stages[0].trainer.options.lr" in err and "'fast'" in err
    assert not (tmp_path / "r").exists(), "nothing may be written before the config is valid"


def test_unknown_recipe_suggests(capsys):
    assert main(["run", "no-such-recipe"]) == 2
    assert "neither a config file nor a recipe" in capsys.readouterr().err


def test_missing_dataset_root_is_a_clear_error(tmp_path, capsys):
    cfg = tiny_config(dataset={"name": "cifar10", "options": {"root": str(tmp_path / "nowhere")}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err


def test_schema_prints_json_schema(capsys):
    assert main(["schema", "trainer", "single_path"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "lr" in schema["properties"]


def test_smoke_run_end_to_end_in_a_subprocess(tmp_path):
    cfg = tiny_config(dataset={"name": "mnist5k"}, stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 50}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 500}}, "evaluator": "accuracy"},
        {"kind": "export", "formats": ["json", "torchscript"]},
        {"kind": "retrain", "epochs": 30},
    ])
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NASCORE_LOAD_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-m", "nascore", "run", str(path), "--smoke", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "retrained acc" in out.stdout
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["candidates"] and "retrain" in results["candidates"][0]
    assert (tmp_path / "r" / "export" / "0" / "model.ts").exists()
    state = json.loads((tmp_path / "r" / "state.json").read_text())
    assert state["completed"] == ["0", "1", "2", "3"] and state["smoke"] is True
    # nothing half-written is left behind
    assert not list((tmp_path / "r").rglob("*.tmp"))
