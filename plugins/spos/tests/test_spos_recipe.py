"""The ``spos`` recipe runs end to end (smoke budget) and ``examples/spos.yaml`` is the same file."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import nascore_spos.plugin as spos_plugin
from nascore.config import load_yaml
from nascore.testing import make_registry, run_config

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[3]


def test_recipe_is_registered_and_matches_the_example() -> None:
    reg = make_registry(spos_plugin)
    path = Path(reg.get("recipe", "spos").factory)
    assert path.exists()
    example = REPO / "examples" / "spos.yaml"
    assert example.read_text() == path.read_text()


def test_recipe_runs_end_to_end_with_the_smoke_budget(tmp_path: Path) -> None:
    reg = make_registry(spos_plugin)
    data = load_yaml(reg.get("recipe", "spos").factory)
    assert data["space"]["name"] == "shufflenet"
    ctx = run_config(data, tmp_path / "run", registry=reg, smoke=True)
    limit = data["constraint"]["macs_max"]
    assert ctx.candidates and all(c.macs <= limit for c in ctx.candidates)
    assert all(c.origin.startswith("evolution:gen") for c in ctx.candidates)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    best = results["candidates"][0]
    assert best["arch"] == ctx.candidates[0].arch_str and "retrain" in best
    assert 0.0 <= best["retrain"]["test_acc"] <= 1.0
    meta = json.loads((tmp_path / "run" / "export" / "0" / "arch.json").read_text())
    assert meta["arch"] == best["arch"] and meta["macs"] == best["macs"] <= limit
    assert meta["checks"]["torchscript_max_abs_diff"] < 1e-4
