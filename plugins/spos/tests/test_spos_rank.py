"""`nascore rank --run` on a supernet trained by the ``spos-testbed`` recipe: the figures it prints
are those of the run's own supernet, scored with the run's own search evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nascore_spos.plugin as spos_plugin
from nascore import cli
from nascore.config import load_yaml
from nascore.ranking import bed_context, load_ground_truth, rank_metrics
from nascore.registry import set_registry
from nascore.testing import make_registry, run_config

torch.set_num_threads(1)


@pytest.fixture
def trained_run(tmp_path: Path) -> Path:
    """The spos-testbed recipe on tiny_chain (its fixture ships with every checkout), 2 epochs."""
    reg = make_registry(spos_plugin)
    data = load_yaml(reg.get("recipe", "spos-testbed").factory)
    assert data["space"]["name"] == "tiny_matched"
    data["space"] = {"name": "tiny_chain"}
    data["stages"][0]["trainer"]["options"]["epochs"] = 2
    data["stages"] = data["stages"][:1]
    run_config(data, tmp_path / "run", registry=reg)
    return tmp_path / "run"


def test_rank_reports_the_runs_own_supernet(trained_run: Path, tmp_path: Path, capsys) -> None:
    reg = make_registry(spos_plugin)
    set_registry(reg)
    try:
        out = tmp_path / "rank.json"
        assert cli.main(["rank", "tiny_chain", "--run", str(trained_run), "--baselines", "none", "--seeds", "0",
                         "--evaluator", "accuracy", "--json", str(out), "--quiet"]) == 0
        printed = capsys.readouterr().out
        assert "supernet (accuracy)" in printed and "noise ceiling" in printed
        row = json.loads(out.read_text())["rows"][0]
        assert row["kind"] == "subject" and row["error"] is None

        # the same figures, computed by hand from the resumed run's supernet
        from nascore.pipeline.run import resume_run

        ctx = resume_run(trained_run, quiet=True)
        ctx.stage_key = "rank"
        gt = load_ground_truth("tiny_chain", bed_context("tiny_chain", 0, registry=reg))
        ev = reg.get("evaluator", "accuracy").build({}, ctx)
        scores = [m["acc"] for m in ev.score(gt.archs, ctx)]
        assert len(set(scores)) > 10  # a trained supernet tells paths apart
        want = rank_metrics(scores, gt.truth, gt.macs)
        assert row["mean"]["tau"] == pytest.approx(want["tau"])
        assert row["mean"]["tau_bracket"] == pytest.approx(want["tau_bracket"])

        # the run's supernet is not the bed's space: a clear error in the row, exit 1
        assert cli.main(["rank", "tiny_matched", "--run", str(trained_run), "--baselines", "none",
                         "--seeds", "0", "--quiet"]) == 1
        assert "searched space 'tiny_chain', not the bed's 'tiny_matched'" in capsys.readouterr().out
    finally:
        set_registry(None)
