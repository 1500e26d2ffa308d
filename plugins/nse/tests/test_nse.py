"""NSE behaviour: the pool space and its exact multi-branch costs, gates and the differentiable MACs
penalty, round-by-round space evolution (≤ K ops, front ops kept, no op tried twice),
re-initialisation, and the front's hypervolume on standalone ground truth across rounds."""

from __future__ import annotations

import itertools
import json
import math
import random
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import nascore_nse.plugin as nse_plugin
from nascore import hookimpl
from nascore.arch import Architecture
from nascore.config import validate
from nascore.cost import check_table
from nascore.errors import ConfigError
from nascore.pipeline.run import open_run, run_pipeline
from nascore.testing import make_context, make_registry, run_config, tiny_config
from nascore_nse.pareto import hypervolume, pareto_front
from nascore_nse.pool import SKIP, NSEPoolSpace, sample_gated
from nascore_nse.state import ensure_state, initial_state

torch.set_num_threads(1)

REG = make_registry(nse_plugin)
POOL6 = ["conv1", "conv3", "conv5", "sep3", "avg3", "max3"]
GROUND_TRUTH = Path(__file__).parent / "data" / "nse_pool_mnist5k.json"


def pool_space(**opts) -> NSEPoolSpace:
    ctx = SimpleNamespace(data=SimpleNamespace(input_shape=(1, 16, 16), num_classes=10))
    return REG.get("space", "nse_pool").build({"layers": 3, "ops": POOL6, "active": 2, "max_branches": 2, **opts}, ctx)


def nse_config(rounds: int = 4, space: dict | None = None, trainer: dict | None = None, samples: int = 8,
               recal: int = 1, selector: dict | None = None, **over) -> dict:
    space = space or {"layers": 3, "ops": POOL6, "active": 2, "max_branches": 2}
    return tiny_config(space={"name": "nse_pool", "options": space}, stages=[
        {"kind": "loop", "rounds": rounds, "stages": [
            {"kind": "train", "trainer": {"name": "nse", "options": {"epochs": 1, "steps_per_epoch": 4, "alpha_lr": 0.05,
                                                                      **(trainer or {})}}},
            {"kind": "search", "keep": 50, "selector": {"name": "nse", "options": {"samples": samples, **(selector or {})}},
             "evaluator": {"name": "accuracy", "options": {"recal_batches": recal, "eval_batches": None}}}]},
    ], **over)


# -- the pool space -----------------------------------------------------------------------------
def test_nse_pool_space_options_sets_and_skip():
    space = pool_space()
    opts = space.layer_options(0)
    assert len(opts) == 1 + 6 + 15 and opts[0] == SKIP
    assert space.size() == len(opts) ** 3 == sum(1 for _ in space.enumerate())
    sub = space.restrict_active([["conv1", "conv3"], ["sep3", "avg3"], ["conv5", "max3"]])
    assert sub.size() == 4 ** 3  # skip, two singles, one pair per layer
    rng = random.Random(0)
    for _ in range(100):
        a = sub.sample(rng)
        assert sub.contains(a) and sub.parse(sub.format(a)) == a
        assert all(len(o) <= 2 for o in sub.ops_of(a))
    a = sub.parse("conv1+conv3-skip-max3")
    assert a[0] == frozenset({"conv1", "conv3"}) and a[1] == SKIP
    assert not sub.contains(space.parse("conv5-skip-skip"))  # conv5 is not active in layer 0
    assert not space.is_valid(Architecture([frozenset({"conv1", "skip"}), SKIP, SKIP]))
    assert not space.is_valid(Architecture([frozenset({"conv1", "conv3", "conv5"}), SKIP, SKIP]))  # > max_branches


def test_nse_pool_multi_branch_costs_are_exact_against_fvcore():
    space = pool_space(max_branches=None)
    rng = random.Random(1)
    archs = [space.sample(rng) for _ in range(8)] + [Architecture([frozenset(POOL6)] * 3), space.first()]
    rows = check_table(space, archs)
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]][:2]
    table = space.cost_table()
    a = space.parse("conv1+conv3-skip-skip")
    b, c = space.parse("conv1-skip-skip"), space.parse("conv3-skip-skip")
    assert table.macs(a) - table.macs(space.first()) == (table.macs(b) - table.macs(space.first())) + (
        table.macs(c) - table.macs(space.first()))  # a multi-branch layer costs the sum of its ops


def test_nse_gated_sampling_follows_the_gates():
    space = pool_space().restrict_active([["conv1", "conv3"]] * 3)
    rng = random.Random(0)
    on = sample_gated(space, rng, [{"conv1": 1.0, "conv3": 1.0}] * 3)
    assert on == Architecture([frozenset({"conv1", "conv3"})] * 3)
    assert sample_gated(space, rng, [{"conv1": 0.0, "conv3": 0.0}] * 3) == Architecture([SKIP] * 3)
    draws = [sample_gated(space, rng, [{"conv1": 0.8, "conv3": 0.1}] * 3)[0] for _ in range(2000)]
    share = sum("conv1" in (d if isinstance(d, frozenset) else {d}) for d in draws) / len(draws)
    assert abs(share - 0.8) < 0.04
    capped = pool_space(max_branches=1).restrict_active([["conv1", "conv3"]] * 3)
    assert all(len(o) <= 1 for _ in range(50) for o in capped.ops_of(sample_gated(capped, rng, [{"conv1": 0.9, "conv3": 0.9}] * 3)))


def test_nse_pool_options_are_validated():
    with pytest.raises(ConfigError, match="active"):
        validate(tiny_config(space={"name": "nse_pool", "options": {"ops": ["conv1", "conv3"], "active": 3}}), REG)
    with pytest.raises(ConfigError, match="unknown pool op"):
        validate(tiny_config(space={"name": "nse_pool", "options": {"ops": ["conv1", "conv9"]}}), REG)
    with pytest.raises(ConfigError, match="sample_rate"):
        validate(nse_config(trainer={"sample_rate": 1.5}), REG)


# -- gates, α and the MACs penalty -----------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["gate", "pair"])
def test_nse_expected_macs_is_the_gate_expectation_and_the_penalty_pulls_alpha_to_the_target(estimator):
    ctx = make_context(nse_config(rounds=1), plugins=[nse_plugin])
    trainer = REG.get("trainer", "nse").build({"epochs": 1, "alpha_lr": 0.2, "mac_weight": 10.0, "mac_target": 1.0,
                                               "alpha_estimator": estimator}, ctx)
    trainer.setup(ctx)
    space, table = ctx.space, ctx.cost
    alpha = torch.randn_like(trainer.alpha)
    # E[MACs] under independent gates, by enumerating every gate pattern of every layer
    brute = float(table.fixed_macs)
    for j in range(len(space.decisions)):
        ops = space.layer_ops(j)
        p = {o: torch.sigmoid(alpha[j, trainer.index[o]]).item() for o in ops}
        for bits in itertools.product([0, 1], repeat=len(ops)):
            prob = math.prod(p[o] if b else 1 - p[o] for o, b in zip(ops, bits))
            brute += prob * sum(table.macs_table[j][o] for o, b in zip(ops, bits) if b)
    assert trainer.expected_macs(space, alpha).item() == pytest.approx(brute, rel=1e-5)
    # a tiny MACs target: α steps close every active gate with a cost and lower E[MACs];
    # ops outside the active sub-space are untouched
    trainer.target = float(table.fixed_macs) * 1.05
    start = trainer.expected_macs(space, trainer.alpha.detach()).item()
    for _ in range(10):
        info = trainer.alpha_step(ctx)
    assert info["mac_penalty"] >= 0
    # gate: the logged term is E[MACs]; pair: the code's two-point term, so check the expectation itself
    assert info["exp_macs"] < 0.8 * start if estimator == "gate" else \
        trainer.expected_macs(space, trainer.alpha.detach()).item() < 0.8 * start
    for j in range(len(space.decisions)):
        for o in ctx.base_space.pool:
            a = trainer.alpha[j, trainer.index[o]].item()
            if o not in space.layer_ops(j):
                assert a == 0.0
            elif estimator == "gate" and table.macs_table[j][o] > 0:
                assert a < 0, (j, o)
    if estimator == "pair":
        # the two-subset estimator moves an op's α only when the drawn subsets differ in it, and the
        # penalty's pull is proportional to the MACs difference: the costliest op of every layer
        # closes (ops of ~500 MACs, a pool + BN, may go either way: seeds 0-2 tried)
        for j in range(len(space.decisions)):
            costly = max(space.layer_ops(j), key=lambda o: table.macs_table[j][o])
            assert trainer.alpha[j, trainer.index[costly]].item() < 0, (j, costly)


# -- rounds -------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [None, 1])
def test_nse_rounds_keep_front_ops_stay_within_k_and_never_retry_an_op(tmp_path, keep):
    ctx = run_config(nse_config(rounds=4, samples=6, selector={"keep": keep}), tmp_path, registry=REG)
    ns = ctx.state["nse"]
    pool_space_ = ctx.base_space
    k = pool_space_.active_k
    hist = ns["history"]
    assert len(hist) >= 3
    assert sum(map(len, ns["tried"])) > 3 * k  # new ops were tried
    for j in range(3):  # every op tried once, in an order, and never queued again
        assert len(ns["tried"][j]) == len(set(ns["tried"][j]))
        assert sorted(ns["tried"][j] + ns["queue"][j]) == sorted(POOL6)
    seen = [set(a) for a in initial_state(pool_space_, 0)["active"]]
    for prev, cur in zip(hist, hist[1:]):
        for j in range(3):
            active = set(cur["active"][j])
            assert len(active) <= k
            carried_ops = {o for row in prev["front"] if row["carried"]
                           for o in pool_space_.ops_of(pool_space_.parse(row["arch"]))[j]}
            if keep is None:  # NSE's update_space: the whole front is carried
                assert all(row["carried"] for row in prev["front"])
            assert carried_ops <= active  # all ops of the previous (carried) front stay active
            new = active - set(prev["active"][j])
            assert new == set(prev["added_next"][j]) and not new & seen[j]  # new ops were never tried
            seen[j] |= new
        assert any(row["carried"] for row in prev["front"])
    assert (tmp_path / "plots" / "nse_round0.png").stat().st_size > 1000
    if ctx.state["loop_done"].get("0"):
        assert not any(hist[-1]["added_next"]) and all(not q for q in ns["queue"])
    # the returned candidates are the last round's front, best accuracy first
    last = {row["arch"] for row in hist[-1]["front"]}
    assert {c.arch_str for c in ctx.candidates} == last
    assert [c.score for c in ctx.candidates] == sorted((c.score for c in ctx.candidates), reverse=True)


def test_nse_round_prints_the_front(tmp_path, capsys):
    ctx = open_run(nse_config(rounds=1, samples=4), run_dir=tmp_path, registry=REG, quiet=False, overwrite=True)
    try:
        run_pipeline(ctx)
    finally:
        ctx.log.close()
    out = capsys.readouterr().out
    assert "NSE round 0:" in out and "Pareto front of" in out and "architecture" in out


def test_nse_new_round_reinitialises_weights_and_alpha(tmp_path):
    ctx = run_config(nse_config(rounds=1), tmp_path, registry=REG)
    ns = ctx.state["nse"]
    assert ns["reinit"] is True and ns["alpha"] is not None
    assert any(abs(v) > 0 for layer in ns["alpha"] for v in layer.values())  # α was learned
    end_of_round = ctx.supernet.snapshot()
    trainer = REG.get("trainer", "nse").build({"epochs": 1}, ctx)
    trainer.setup(ctx)
    now = ctx.supernet.state_dict()
    weights = [k for k, v in end_of_round.items() if k.endswith("weight") and v.dim() > 1]  # conv / linear
    assert weights and all(not torch.equal(end_of_round[k], now[k]) for k in weights)
    bn_means = [k for k in end_of_round if k.endswith("running_mean")]
    assert all(torch.count_nonzero(now[k]) == 0 for k in bn_means)  # BN statistics reset
    assert torch.count_nonzero(trainer.alpha) == 0 and ns["alpha"] is None and ns["reinit"] is False
    assert trainer.reinitialised
    # without the selector's request nothing is reset
    snap = ctx.supernet.snapshot()
    trainer2 = REG.get("trainer", "nse").build({"epochs": 1}, ctx)
    trainer2.setup(ctx)
    assert all(torch.equal(snap[k], v) for k, v in ctx.supernet.state_dict().items())


def test_nse_resumed_run_continues_the_rounds_exactly(tmp_path):
    import yaml

    from nascore.pipeline.run import resume_run

    full = run_config(nse_config(rounds=2, samples=4), tmp_path / "full", registry=REG)
    part_dir = tmp_path / "part"
    run_config(nse_config(rounds=1, samples=4), part_dir, registry=REG)  # "killed" after round 0
    cfg = yaml.safe_load((part_dir / "config.yaml").read_text())
    cfg["stages"][0]["rounds"] = 2
    (part_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    ctx = resume_run(part_dir, quiet=True, registry=REG)
    try:
        run_pipeline(ctx)
    finally:
        ctx.log.close()
    a, b = full.state["nse"], ctx.state["nse"]
    assert [h["front"] for h in a["history"]] == [h["front"] for h in b["history"]]
    assert a["queue"] == b["queue"] and a["tried"] == b["tried"] and a["alpha"] == b["alpha"]


# -- hypervolume on ground truth ----------------------------------------------------------------------
GT_SPACE = {"layers": 2, "width": 8, "ops": ["avg3", "conv1", "conv3", "conv5"], "active": 2, "max_branches": 2}


class GroundTruthEvaluator:
    """Scores an architecture by its standalone accuracy in the ground-truth file (an oracle)."""

    metric = "acc"
    higher_is_better = True

    def __init__(self, cfg=None, ctx=None) -> None:
        self.truth = json.loads(GROUND_TRUTH.read_text())["archs"]

    def score(self, archs, ctx):
        return [{"acc": self.truth[ctx.space.format(a)]["acc"] / 100} for a in archs]


def _gt_plugin():
    mod = types.ModuleType("nse_test_groundtruth")

    @hookimpl
    def register_evaluators(register):
        register("nse_groundtruth", GroundTruthEvaluator, summary="test oracle: standalone accuracy")

    mod.register_evaluators = register_evaluators
    return mod


def true_hypervolumes(history, truth) -> list[float]:
    ref = max(v["macs"] for v in truth.values())
    out = []
    for h in history:
        pts = [(truth[row["arch"]]["macs"], truth[row["arch"]]["acc"] / 100) for row in h["front"]]
        out.append(hypervolume(pareto_front(pts, macs=lambda p: p[0], acc=lambda p: p[1]), ref))
    return out


def test_nse_front_hypervolume_on_ground_truth_does_not_fall_across_rounds():
    """Each round's Pareto front measured with *standalone* accuracy (ground truth).

    Ground truth: every architecture of the 2-layer test pool space (4 ops, pairs allowed: 121
    archs) trained standalone on mnist5k (``tests/data``, ``benchmarks/nse_groundtruth.py``). Here
    the selector's evaluator is that ground truth, so the test isolates what NSE's loop guarantees:
    sampling, the Pareto front, carrying it into the next round and rebuilding the sub-space around
    it. With every front op kept (default, NSE's ``update_space``) the whole front is carried and
    re-scored in the next round, so the hypervolume must not fall in any seed — and it rises as new
    ops enter. (With ``keep`` < K part of the front is dropped and it can fall; with the supernet as
    evaluator at test budgets its ranking noise dominates: both are measured by
    ``benchmarks/nse_hypervolume.py``, not asserted.)
    """
    truth = json.loads(GROUND_TRUTH.read_text())["archs"]
    reg = make_registry(nse_plugin, _gt_plugin())
    ok, report = 0, []
    for seed in range(5):
        cfg = tiny_config(seed=seed, dataset={"name": "mnist5k"}, space={"name": "nse_pool", "options": GT_SPACE}, stages=[
            {"kind": "loop", "rounds": 4, "stages": [
                {"kind": "search", "keep": 50, "evaluator": "nse_groundtruth",
                 "selector": {"name": "nse", "options": {"samples": 10, "plot": False}}}]}])
        ctx = run_config(cfg, None, registry=reg)
        hvs = true_hypervolumes(ctx.state["nse"]["history"], truth)
        assert len(hvs) >= 2
        report.append([round(v, 4) for v in hvs])
        ok += all(b >= a - 1e-12 for a, b in zip(hvs, hvs[1:]))
    print("true hypervolume per round, per seed:", report)
    assert ok == 5, report
    assert sum(r[-1] > r[0] for r in report) >= 3, report  # and new ops improve the front


# -- pareto helpers ---------------------------------------------------------------------------------
def test_nse_pareto_front_and_hypervolume():
    pts = [(1, 0.5), (2, 0.4), (2, 0.7), (3, 0.7), (4, 0.9), (0.5, 0.1)]
    front = pareto_front(pts, macs=lambda p: p[0], acc=lambda p: p[1])
    assert front == [(0.5, 0.1), (1, 0.5), (2, 0.7), (4, 0.9)]
    assert hypervolume(front, 5) == pytest.approx((0.5 * 0.1 + 1 * 0.5 + 2 * 0.7 + 1 * 0.9) / 5)
    assert hypervolume(front + [(3, 0.6)], 5) == hypervolume(front, 5)  # dominated points add nothing


def test_nse_state_starts_with_k_random_ops_per_layer():
    space = pool_space(active=3)
    a, b = initial_state(space, 0), initial_state(space, 1)
    for ns in (a, b):
        for j in range(3):
            assert len(ns["active"][j]) == 3 and sorted(ns["active"][j] + ns["queue"][j]) == sorted(POOL6)
    assert a != b and initial_state(space, 0) == a
    fixed = initial_state(pool_space(initial=["conv3", "avg3"]), 0)
    assert all(set(x) == {"conv3", "avg3"} for x in fixed["active"])
    ctx = SimpleNamespace(base_space=space, state={}, cfg=SimpleNamespace(seed=0), space=space, log=SimpleNamespace(event=lambda *a, **k: None))
    ensure_state(ctx)
    assert [list(ctx.space.layer_ops(j)) for j in range(3)] == ctx.state["nse"]["active"]


def test_nse_recipe_validates():
    import yaml

    data = yaml.safe_load(open(REG.components["recipe"]["nse"].factory).read())
    cfg, _ = validate(data, REG)
    assert cfg.stages[0].kind == "loop"
