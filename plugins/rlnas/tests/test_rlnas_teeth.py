"""Tests that fail when RLNAS's own signals are broken (issue 18, "tests with teeth").

* The angle decides the search: on a supernet whose weights are set by hand (only the four ops of
  one architecture moved away from W0) the architecture with the largest angle is known by
  construction, and ``rlnas_search`` (random search over all 81 paths) must return it first.
* No labelled data is read: after random-label training the dataset's real labels are replaced by
  an object that raises when indexed, so any read of them — through the batch iterator or around
  it, where the access log cannot see — stops the search.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import nascore_rlnas.plugin as rlnas_plugin
import nascore_spos.plugin as spos_plugin
from nascore.arch import Architecture
from nascore.builtin.angle import AngleConfig, AngleEvaluator
from nascore.registry import hookimpl
from nascore.testing import make_context, make_registry, run_config, tiny_config
from nascore.trainer import SupernetTrainer, TrainerConfig
from nascore_rlnas.search import RlnasSearch, RlnasSearchConfig

torch.set_num_threads(1)
TARGET = Architecture(["conv5", "conv3", "conv5", "conv3"])


def test_rlnas_search_returns_the_architecture_with_the_largest_angle() -> None:
    ctx = make_context(tiny_config(data={"batch_size": 32, "random_labels": True}), plugins=[rlnas_plugin])
    ctx.stage_key = "1"
    net = ctx.supernet
    torch.manual_seed(3)
    with torch.no_grad():  # "training" that moved exactly TARGET's four ops (fresh random draws)
        for i, op in enumerate(TARGET.ops):
            for name, p in net.named_parameters():
                if name.startswith(f"layers.{i}.") and f".{op}." in f".{name}." and p.dim() > 1:
                    p.copy_(torch.randn_like(p) * p.std())
    search = RlnasSearch(RlnasSearchConfig(selector="random", options={"samples": 81, "batch": 81}), ctx)
    result = search.search(ctx, AngleEvaluator(AngleConfig()))
    assert len(result.candidates) == 81  # the whole space was scored
    assert result.candidates[0].arch == TARGET
    angles = {c.arch: c.metrics["angle"] for c in result.candidates}
    # one op fewer moved (the same arch with one layer unmoved) always has a smaller angle
    for i in range(4):
        other = "conv3" if TARGET.ops[i] == "conv5" else "conv5"
        assert angles[TARGET.replace(i, other)] < angles[TARGET]


class LabelRead(RuntimeError):
    """Someone read a real label."""


class PoisonedLabels:
    """Stands for the dataset's label tensor: reading any of it raises."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: Any) -> Any:
        raise LabelRead("a real label was read during the RLNAS search")


class PoisonAfterTraining(SupernetTrainer):
    """single_path on the (random) labels, then the real labels are poisoned for later stages."""

    def fit(self, ctx: Any) -> None:
        super().fit(ctx)
        x, y = ctx.data.spec.tensors
        ctx.data.spec.tensors = (x, PoisonedLabels(len(y)))


class PoisonPlugin:
    @staticmethod
    @hookimpl
    def register_trainers(register: Any) -> None:
        register("poison_after", PoisonAfterTraining, config=TrainerConfig, summary="single_path, then poison labels")


def _run(evaluator: str) -> Any:
    reg = make_registry(rlnas_plugin, spos_plugin, (PoisonPlugin, "poison"))
    evo = {"population": 8, "generations": 2, "top_k": 3, "mutations": 3, "crossovers": 3}
    cfg = tiny_config(data={"batch_size": 32, "random_labels": True}, stages=[
        {"kind": "train", "trainer": {"name": "poison_after", "options": {"epochs": 1, "steps_per_epoch": 6}}},
        {"kind": "search", "evaluator": evaluator,
         "selector": {"name": "rlnas_search", "options": {"selector": "evolution", "options": evo}}}])
    return run_config(cfg, None, registry=reg)


def test_the_search_runs_with_the_real_labels_poisoned() -> None:
    ctx = _run("angle")
    assert ctx.candidates and ctx.candidates[0].metrics["angle"] > 0
    assert ctx.state["rlnas"]["1"]["labelled_reads"] == 0
    # control: the poison works — an evaluator that reads labelled data hits it
    with pytest.raises(LabelRead):
        _run("accuracy")
