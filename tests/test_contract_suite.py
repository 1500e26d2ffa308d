"""Every built-in and shipped component passes nascore.testing's contract suite (tiny inputs, smoke budgets)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

from nascore import testing
from nascore.testing import (ContractError, check_distiller, check_evaluator, check_selector, check_space,
                             check_trainer, make_registry)

torch.set_num_threads(1)

PLUGINS = ["spos", "cream", "abs", "rlnas", "neas", "dna", "tnas", "setn", "nse", "pwkd", "zerocost", "hillclimb"]


@pytest.fixture(scope="module")
def reg():
    return make_registry(*[importlib.import_module(f"nascore_{p}.plugin") for p in PLUGINS])


SPACES = {
    "tiny_chain": {}, "tiny_matched": {}, "tiny_cell": {},
    "mobilenet": {"stage_depths": [1, 1], "stage_channels": [8, 16], "stage_strides": [2, 2], "last_channels": 16,
                  "head_channels": 16},
    "shufflenet": {"stem_channels": 8, "stage_depths": [1, 1], "stage_channels": [16, 32], "last_channels": 32},
    "nb201": {"C": 4, "N": 1},
    "neas_ensemble": {"members": 2, "base": {"name": "tiny_chain"}},
    "nse_pool": {"layers": 2, "width": 4},
    "slimmable_chain": {"width": 8},
}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_contract(name, reg):
    check_space(name, SPACES[name], registry=reg, samples=4)


def test_every_registered_space_is_covered(reg):
    assert set(reg.names("space")) == set(SPACES)


# -- runs: per component, the smallest config it works in ------------------------------------------------------
def train(name, **options):
    return {"kind": "train", "trainer": {"name": name, "options": {"epochs": 1, **options}}}


TINY = {"space": {"name": "tiny_chain"}}
NB201 = {"space": {"name": "nb201", "options": {"C": 4, "N": 1}}}
NEAS = {"space": {"name": "neas_ensemble", "options": {"members": 2, "base": {"name": "tiny_chain"}}}}
NSE = {"space": {"name": "nse_pool", "options": {"layers": 2, "width": 4, "active": 2, "max_branches": 2}}}
SLIM = {"space": {"name": "slimmable_chain", "options": {"width": 8}}}
ACC = {"name": "accuracy", "options": {"recal_batches": 1}}
TABLE = {"name": "nb201_table", "options": {"table": "cifar10_200ep", "metric": "test_top1"}}

EVALUATORS = {  # name: (config, stages before, options)
    "accuracy": (TINY, None, {"recal_batches": 1}), "angle": (TINY, None, {}), "macs": (TINY, None, {}),
    "params": (TINY, None, {}), "nb201_table": (NB201, None, TABLE["options"]),
    "setn_alpha": (NB201, [train("setn")], {}), "block_distill": (TINY, [train("dna", teacher_epochs=1)], {}),
    "ensemble_accuracy": (NEAS, [train("neas")], {}),
    **{z: (TINY, None, {}) for z in ("synflow", "snip", "grad_norm", "fisher", "jacov", "naswot")},
}
SELECTORS = {  # name: (config, stages before, options, evaluator)
    "random": (TINY, None, {"samples": 4}, "params"),
    "evolution": (TINY, None, {}, "params"),
    "regularized_evolution": (TINY, None, {}, "params"),
    "hillclimb": (TINY, None, {"budget": 8}, "params"),
    "board": (TINY, [train("cream")], {}, ACC),
    "abs_shrink": (TINY, [train("spos")], {"target_size": 16, "drop_per_round": 2, "sample_num": 8}, "angle"),
    "rlnas_search": ({**TINY, "data": {"batch_size": 32, "random_labels": True}}, [train("spos")],
                     {"selector": "random", "options": {"samples": 4}}, "angle"),
    "diversity_shrink": (NEAS, [train("neas")], {"samples_per_op": 1, "drop": 2}, "ensemble_accuracy"),
    "ensemble_evolution": (NEAS, [train("neas")], {}, "ensemble_accuracy"),
    "dna": (TINY, [train("dna", teacher_epochs=1)], {"top": 3}, "block_distill"),
    "tnas": (NB201, None, {"grouping": "fixed", "child_score": "evaluator", "subspace_samples": 2, "d_a": 6,
                           "top_k": 2, "repeats": 1}, TABLE),
    "setn": (NB201, [train("setn")], {"select_num": 8}, TABLE),
    "nse": (NSE, [train("nse")], {"samples": 6, "keep": 2}, ACC),
}
TRAINERS = {  # name: (config, options, trains every op by design)
    "single_path": (TINY, {}, False), "spos": (TINY, {}, False), "cream": (TINY, {}, False),
    "dna": (TINY, {"teacher_epochs": 1}, False), "neas": (NEAS, {}, False), "nse": (NSE, {}, False),
    "setn": (NB201, {}, False), "tnas_warmup": (NB201, {}, False), "slimmable": (SLIM, {}, False),
}
DISTILLERS = {  # name: (config, trainer, options)
    "kd": (TINY, "single_path", {"teacher": "supernet"}),
    "feature_kd": (TINY, "single_path", {"teacher": "supernet"}),
    "prioritized_path": (TINY, "spos", {"warmup_epochs": 0, "update_iter": 1, "board_size": 4}),
    "block_feature": (TINY, "single_path", {"teacher": "supernet"}),
    "pwkd": (SLIM, "slimmable", {"teacher": "supernet"}),
}


@pytest.mark.parametrize("name", sorted(EVALUATORS))
def test_evaluator_contract(name, reg):
    config, before, options = EVALUATORS[name]
    check_evaluator(name, options=options, registry=reg, config=config, before=before or [train("single_path")])


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selector_contract(name, reg, tmp_path):
    config, before, options, evaluator = SELECTORS[name]
    check_selector(name, tmp_path, options=options, registry=reg, config=config, before=before, evaluator=evaluator)


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_trainer_contract(name, reg, tmp_path):
    config, options, every = TRAINERS[name]
    check_trainer(name, tmp_path, options=options, registry=reg, config=config, trains_every_op=every)


@pytest.mark.parametrize("name", sorted(DISTILLERS))
def test_distiller_contract(name, reg, tmp_path):
    config, trainer, options = DISTILLERS[name]
    check_distiller(name, tmp_path, options=options, registry=reg, config=config, trainer=trainer)


@pytest.mark.parametrize("role, table", [("evaluator", EVALUATORS), ("selector", SELECTORS), ("trainer", TRAINERS),
                                         ("distiller", DISTILLERS)])
def test_every_registered_component_is_covered(role, table, reg):
    assert set(reg.names(role)) == set(table)
