"""Test a plugin the way nascore loads it, with synthetic data (seconds)."""

import torch

import nascore_hillclimb.plugin
from nascore.testing import run_config, tiny_config


def test_hillclimb_runs_a_search_within_budget_and_constraint(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(
        constraint={"macs_max": 400_000},
        stages=[
            {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
            {"kind": "search", "selector": {"name": "hillclimb", "options": {"budget": 12}}, "evaluator": "accuracy"},
        ],
    )
    ctx = run_config(cfg, tmp_path, plugins=[nascore_hillclimb.plugin])
    assert 0 < len(ctx.candidates) <= 10
    assert all(c.macs <= 400_000 for c in ctx.candidates)
    scores = [c.score for c in ctx.candidates]
    assert scores == sorted(scores, reverse=True)


def test_hillclimb_keeps_the_selector_contract(tmp_path):
    """nascore's contract suite: the constraint, the space, the same ranking for the same seed and after a kill."""
    from nascore.testing import check_selector, make_registry

    torch.set_num_threads(1)
    check_selector("hillclimb", tmp_path, registry=make_registry(nascore_hillclimb.plugin), options={"budget": 8})
