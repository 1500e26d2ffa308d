"""The ``regularized_evolution`` selector (aging evolution, NAS-Bench-201's REA baseline)."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest
import torch

from nascore.arch import Architecture
from nascore.builtin.evaluators import NB201TableEvaluator
from nascore.builtin.regularized import RegularizedEvolution, RegularizedEvolutionConfig
from nascore.builtin.selectors import RandomSearch, RandomSearchConfig
from nascore.errors import ConfigError
from nascore.testing import make_context, run_config

torch.set_num_threads(1)


def _nb201_ctx() -> Any:
    return make_context({"name": "rea", "seed": 0, "device": "cpu", "space": {"name": "nb201", "options": {"C": 4, "N": 1}},
                         "dataset": {"name": "synthetic"}, "stages": [{"kind": "search", "selector": "random"}]})


class CountingTable(NB201TableEvaluator):
    """The final NB201 table (validation accuracy) that also records the order of its queries."""

    def __init__(self) -> None:
        super().__init__("cifar10_200ep", "valid_top1")
        self.order: list[str] = []

    def score(self, archs: list[Architecture], ctx: Any) -> list[dict[str, float]]:
        self.order += [ctx.space.format(a) for a in archs]
        return super().score(archs, ctx)


def test_mutation_changes_exactly_one_decision_to_another_allowed_op() -> None:
    ctx = _nb201_ctx()
    sel = RegularizedEvolution(RegularizedEvolutionConfig())
    rng = random.Random(0)
    for _ in range(200):
        parent = ctx.space.sample(rng)
        child = sel.mutate(ctx, parent, rng)
        diff = [i for i, (a, b) in enumerate(zip(parent.ops, child.ops)) if a != b]
        assert len(diff) == 1 and ctx.space.is_valid(child)


def test_aging_evolution_budget_and_population() -> None:
    ctx = _nb201_ctx()
    ctx.stage_key = "budget"
    ev = CountingTable()
    res = RegularizedEvolution(RegularizedEvolutionConfig(population=10, sample_size=3, cycles=50)).search(ctx, ev)
    # one evaluation per new architecture: ≤ population + cycles distinct lookups, none repeated
    assert len(ev.order) == len(set(ev.order)) == len(res.candidates) <= 60
    assert res.candidates[0].score == max(c.score for c in res.candidates)
    assert res.info["cycles"] == 50 and res.info["population"] == 10


def test_beats_random_search_at_equal_budget_on_the_nb201_table() -> None:
    ctx = _nb201_ctx()
    rea, rnd = [], []
    for seed in range(12):
        ctx.stage_key = f"s{seed}"
        ev = CountingTable()  # searches on validation accuracy; the pick's test accuracy is read for the report
        r = RegularizedEvolution(RegularizedEvolutionConfig(cycles=140)).search(ctx, ev)
        rea.append(ev.report_metrics([r.candidates[0].arch], ctx)[0]["nb201_cifar10_test"])
        q = RandomSearch(RandomSearchConfig(samples=150, batch=50)).search(ctx, ev)
        rnd.append(ev.report_metrics([q.candidates[0].arch], ctx)[0]["nb201_cifar10_test"])
    print(f"CIFAR-10 test (final table) of the pick, 150 lookups: REA {statistics.mean(rea):.2f}, "
          f"random {statistics.mean(rnd):.2f}")
    assert statistics.mean(rea) > statistics.mean(rnd)


def test_sample_size_larger_than_population_is_refused() -> None:
    with pytest.raises(ConfigError, match="sample_size"):
        RegularizedEvolution(RegularizedEvolutionConfig(population=3, sample_size=5))


def test_runs_in_a_pipeline_under_a_constraint() -> None:
    cfg = {"name": "rea", "seed": 0, "device": "cpu", "space": {"name": "tiny_chain"}, "dataset": {"name": "synthetic"},
           "data": {"batch_size": 32}, "constraint": {"macs_max": 1.5e6},
           "stages": [{"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 3}}},
                      {"kind": "search", "selector": {"name": "regularized_evolution",
                                                      "options": {"population": 4, "cycles": 8}},
                       "evaluator": {"name": "accuracy", "options": {"recal_batches": 1, "eval_batches": 1}}}]}
    ctx = run_config(cfg, None)
    assert ctx.candidates and all(c.macs <= 1.5e6 for c in ctx.candidates)
