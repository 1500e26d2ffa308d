"""The ranking protocol (nascore.ranking, `nascore rank`): each figure on cases with a known answer."""

from __future__ import annotations

import json
import math
import random

import pytest

from nascore.ranking import cost_brackets, rank_metrics, spearman_rho


def test_spearman_matches_hand_computation_with_ties() -> None:
    # x ranks: 1, 2.5, 2.5, 4 ; y ranks: 2, 1, 3, 4 -> Pearson of the ranks
    x, y = [1.0, 2.0, 2.0, 5.0], [20.0, 10.0, 30.0, 40.0]
    rx, ry = [1, 2.5, 2.5, 4], [2, 1, 3, 4]
    mx, my = sum(rx) / 4, sum(ry) / 4
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    assert spearman_rho(x, y) == pytest.approx(num / den)
    assert spearman_rho(x, [3.0, 3.0, 3.0, 3.0]) != spearman_rho(x, [3.0, 3.0, 3.0, 3.0])  # NaN: constant


def test_perfect_reversed_and_constant_scorers() -> None:
    truth = [float(i) for i in range(50)]
    costs = [float(i % 7) for i in range(50)]
    good = rank_metrics(truth, truth, costs)
    assert good["tau"] == good["rho"] == good["tau_top"] == good["tau_bracket"] == pytest.approx(1.0)
    assert good["p_at_5"] == good["p_at_top"] == 1.0
    bad = rank_metrics([-t for t in truth], truth, costs)
    assert bad["tau"] == pytest.approx(-1.0) and bad["tau_top"] == pytest.approx(-1.0)
    assert bad["p_at_5"] == 0.0
    const = rank_metrics([1.0] * 50, truth, costs)
    assert all(math.isnan(const[k]) for k in ("tau", "rho", "tau_top", "p_at_5", "tau_bracket"))


def test_tau_within_brackets_catches_a_cost_proxy() -> None:
    """Accuracy rises with cost, but inside each cost level it falls: the cost count ranks
    well overall and not at all where a constrained search must decide."""
    levels = [c for c in range(5) for _ in range(10)]
    within = [i for _ in range(5) for i in range(10)]
    truth = [10.0 * c - 0.5 * w for c, w in zip(levels, within)]
    cost = [float(c) for c in levels]
    tie_breaker = [c + 0.01 * w for c, w in zip(levels, within)]  # cost, then the wrong way inside a level
    m = rank_metrics(tie_breaker, truth, cost)
    assert m["tau"] == pytest.approx((1000 - 225) / 1225)  # 225 of 1,225 pairs lie inside a level
    assert m["tau_bracket"] == pytest.approx(-1.0)
    # the same scorer with the right order inside a level is perfect everywhere
    right = rank_metrics([c - 0.01 * w for c, w in zip(levels, within)], truth, cost)
    assert right["tau_bracket"] == pytest.approx(1.0) and right["tau"] == pytest.approx(1.0)


def test_tau_top_looks_only_at_the_true_best() -> None:
    rng = random.Random(0)
    truth = [float(i) for i in range(100)]
    # right order among the bottom 90, reversed among the top 10
    pred = [t if t < 90 else 189.0 - t for t in truth]
    m = rank_metrics(pred, truth)
    assert m["tau"] > 0.9
    assert m["tau_top"] == pytest.approx(-1.0)
    noisy = [t + rng.gauss(0, 1000) for t in truth]
    assert abs(rank_metrics(noisy, truth)["tau"]) < 0.3


def test_cost_brackets_never_split_equal_costs() -> None:
    costs = [1.0] * 7 + [2.0] * 3 + [3.0] * 10
    bins = cost_brackets(costs, 4)
    for b in bins:
        assert len({costs[i] for i in b}) >= 1
    edges = [(costs[b[0]], costs[b[-1]]) for b in bins]
    seen = [c for lo, hi in edges for c in (lo, hi)]
    assert sorted(seen) == seen  # bins are ordered and disjoint in cost
    assert cost_brackets([5.0] * 20, 5) == [list(range(20))]


def test_noise_ceiling_and_ground_truth_of_a_bed() -> None:
    from nascore.ranking import bed_context, load_ground_truth

    ctx = bed_context("tiny_chain", 0)
    gt = load_ground_truth("tiny_chain", ctx)
    assert len(gt.archs) == 81 and len(gt.per_seed) == 3
    rows = gt.noise_rows()
    assert len(rows) == 3
    from nascore.groundtruth.testbed import load_testbed_file

    meta = load_testbed_file("tiny_chain_mnist5k")["meta"]
    assert sum(r["tau"] for r in rows) / 3 == pytest.approx(meta["seed_tau"])


def test_rank_cli_on_a_scorer_with_a_known_answer(tmp_path, monkeypatch, capsys) -> None:
    """`nascore rank` with an evaluator that reads the ground truth itself (a plugin of the test)
    tops every column; one that reads it reversed is at -1; the protocol and baselines are printed."""
    import types

    from nascore import cli
    from nascore.registry import build_registry, hookimpl, set_registry
    from nascore.groundtruth.testbed import load_testbed

    truth = load_testbed("tiny_chain_mnist5k")

    class Oracle:
        metric = "acc"

        def __init__(self, cfg, ctx=None):
            self.sign = -1.0 if cfg.get("reverse") else 1.0
            self.higher_is_better = True

        def score(self, archs, ctx):
            return [{"acc": self.sign * truth[ctx.space.format(a)]} for a in archs]

    from pydantic import BaseModel, ConfigDict

    class OracleConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        reverse: bool = False

    def make(cfg, ctx=None):
        return Oracle(cfg.model_dump(), ctx)

    mod = types.ModuleType("oracle_plugin")

    @hookimpl
    def register_evaluators(register):
        register("oracle", make, config=OracleConfig, summary="test oracle")

    mod.register_evaluators = register_evaluators
    reg = build_registry(load_entry_points=False, extra=[(mod, "oracle")])
    set_registry(reg)
    try:
        out = tmp_path / "rank.json"
        assert cli.main(["rank", "tiny_chain", "--evaluator", "oracle", "--baselines", "none", "--seeds", "0",
                         "--json", str(out), "--quiet"]) == 0
        text = capsys.readouterr().out
        assert "protocol: 81 architectures of tiny_chain" in text and "noise ceiling" in text
        rows = {r["label"]: r for r in json.loads(out.read_text())["rows"]}
        assert rows["oracle"]["mean"]["tau"] == pytest.approx(1.0)
        assert rows["oracle"]["mean"]["p_at_5"] == 1.0
        assert cli.main(["rank", "tiny_chain", "--evaluator", "oracle", "--options", '{"reverse": true}',
                         "--baselines", "none", "--seeds", "0", "--json", str(out), "--quiet"]) == 0
        rows = {r["label"]: r for r in json.loads(out.read_text())["rows"]}
        assert rows["oracle"]["mean"]["tau"] == pytest.approx(-1.0)
        assert cli.main(["rank", "tiny_chain", "--evaluator", "oracle", "--options", "{nope"]) == 2
        assert "--options: not JSON" in capsys.readouterr().err
        assert cli.main(["rank", "no_such_bed"]) == 2
    finally:
        set_registry(None)
