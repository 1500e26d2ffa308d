"""The ``params`` and ``macs`` evaluators: cost-table counts as scores, more is better."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from nascore.cost import count_params, fvcore_macs
from nascore.groundtruth.testbed import kendall_tau, load_testbed_file
from nascore.testing import make_context, make_registry, run_config, tiny_config

torch.set_num_threads(1)


def _ctx(space: str = "tiny_chain", dataset: str = "synthetic") -> object:
    return make_context(tiny_config(space={"name": space}, dataset={"name": dataset},
                                    stages=[{"kind": "search", "selector": {"name": "random"}}]))


def test_registered_in_the_core_with_no_options() -> None:
    reg = make_registry()
    for name in ("params", "macs"):
        comp = reg.get("evaluator", name)
        assert comp.dist == "nascore"
        with pytest.raises(ValidationError):
            comp.config.model_validate({"higher_is_better": False})
        ev = comp.build({}, None)
        assert ev.metric == name and ev.higher_is_better is True


def test_scores_are_the_standalone_childs_counts() -> None:
    ctx = _ctx()
    reg = ctx.registry
    params, macs = reg.get("evaluator", "params").build({}, ctx), reg.get("evaluator", "macs").build({}, ctx)
    archs = [ctx.space.parse("conv3-skip-conv5-skip"), ctx.space.parse("skip-skip-skip-skip"),
             ctx.space.parse("conv5-conv5-conv5-conv5")]
    p = [m["params"] for m in params.score(archs, ctx)]
    m = [m["macs"] for m in macs.score(archs, ctx)]
    for arch, pv, mv in zip(archs, p, m):
        child = ctx.supernet.child(arch)
        assert pv == count_params(child)
        assert mv == fvcore_macs(child, ctx.data.input_shape)
    assert p[1] < p[0] < p[2] and m[1] < m[0] < m[2]


def test_tau_on_the_tiny_chain_bed_matches_the_fixtures_counts() -> None:
    """Over all 81 test-bed architectures the scores equal the fixture's own counts (made by
    benchmarks/make_testbed.py with fvcore), so their τ against accuracy is the bed's cost τ."""
    ctx = _ctx(dataset="mnist5k")
    fixture = load_testbed_file("tiny_chain_mnist5k")
    archs = list(ctx.space.enumerate())
    keys = [ctx.space.format(a) for a in archs]
    truth = [fixture["archs"][k]["acc"] for k in keys]
    for name in ("params", "macs"):
        ev = ctx.registry.get("evaluator", name).build({}, ctx)
        scores = [r[name] for r in ev.score(archs, ctx)]
        assert scores == [float(fixture["archs"][k][name]) for k in keys]
        tau = kendall_tau(scores, truth)
        if name == "macs":
            assert tau == pytest.approx(fixture["meta"]["macs_acc_tau"], abs=1e-9)
        assert tau > 0.5  # bigger is better on tiny_chain: the baseline a method must beat


def test_random_search_by_params_keeps_the_biggest(tmp_path: Path) -> None:
    cfg = tiny_config(stages=[{"kind": "search", "selector": {"name": "random", "options": {"samples": 12}},
                               "evaluator": {"name": "params"}, "keep": 12}])
    ctx = run_config(cfg, tmp_path / "run")
    cands = ctx.candidates
    assert len(cands) == 12
    assert [c.score for c in cands] == sorted((float(c.params) for c in cands), reverse=True)
