"""Tests that fail when SPOS's own signals are broken (issue 18, "tests with teeth").

* The samplers' distributions are checked on ``sample_arch`` in ``test_spos_trainer.py``; here:
  the training loop really trains the paths the sampler yields (fair: every op once per cycle).
* Scoring reads ``archval``: on a dataset whose archval labels are shifted by one class, a trained
  supernet scores far below chance; had scoring read ``train`` it would score far above.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

import nascore_spos.plugin as spos_plugin
from nascore.config import load_yaml
from nascore.testing import make_context, make_registry, run_config, tiny_config
from nascore.trainer import make_optimizer
from nascore_spos.trainer import SposConfig, SposTrainer

torch.set_num_threads(1)


def shift_archval_labels(ctx: Any) -> None:
    """Replace every archval label ``y`` by ``(y + 1) % C`` (train and val keep the true labels)."""
    x, y = ctx.data.spec.tensors
    idx = torch.as_tensor(ctx.data.splits["archval"])
    y = y.clone()
    y[idx] = (y[idx] + 1) % ctx.data.num_classes
    ctx.data.spec.tensors = (x, y)


# -- the loop trains the sampler's paths ---------------------------------------------------------
def test_training_loop_trains_exactly_the_fair_paths() -> None:
    """6 layers x {conv3, conv5}: a fair cycle is 2 paths that together run every op once. After
    one cycle of the ordinary SPOS step (2 steps), every op moved; after the first step exactly one op
    per layer moved. A uniform sampler leaves some op untouched after 2 steps with probability
    1 - 2^-6 (seed 0: it does), so a loop that ignored the fair sampler fails here."""
    ctx = make_context(tiny_config(space={"name": "tiny_chain", "options": {"layers": 6}}), plugins=[spos_plugin])
    ctx.space = ctx.space.restrict({i: ["conv3", "conv5"] for i in range(6)})
    ctx.stage_key = "0"
    tr = SposTrainer(SposConfig(sampler="fair", lr=0.1), ctx)
    tr.rng = random.Random(0)
    tr.setup(ctx)
    tr.optimizer = make_optimizer(tr.parameters(ctx), tr.cfg)
    net = ctx.supernet.train()
    ops = net.candidate_parameters()
    before = {(i, o): [p.detach().clone() for p in ps] for i, layers in enumerate(ops) for layer in layers
              for o, ps in layer.items() if o in ("conv3", "conv5")}

    def moved() -> set[tuple[int, str]]:
        now = {(i, o): list(ps) for i, layers in enumerate(ops) for layer in layers for o, ps in layer.items()
               if o in ("conv3", "conv5")}
        return {k for k, ps in now.items() if any(not torch.equal(a, b) for a, b in zip(before[k], ps))}

    batches = list(ctx.data.batches("train", epoch=0, limit=2))
    tr.train_step(ctx, *batches[0], 100)
    first = moved()
    assert sorted(i for i, _ in first) == list(range(6))  # one op per layer: the path of step 1
    for x, y in batches[1:]:
        tr.train_step(ctx, x, y, 100)
    assert moved() == set(before), sorted(set(before) - moved())


# -- scoring reads archval --------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_on_synthetic():
    """A SPOS supernet trained 6 epochs on synthetic gratings (tiny_chain), archval labels shifted."""
    reg = make_registry(spos_plugin)
    cfg = tiny_config(dataset={"name": "synthetic", "options": {"size": 1024, "noise": 0.3}},
                      data={"batch_size": 32, "archval_fraction": 0.2},
                      stages=[{"kind": "train", "trainer": {"name": "spos", "options": {"epochs": 6, "lr": 0.2}}}])
    ctx = run_config(cfg, None, registry=reg)
    shift_archval_labels(ctx)
    ctx.stage_key = "search"
    return ctx, reg


def test_spos_recipe_scores_candidates_on_archval_not_train(trained_on_synthetic) -> None:
    """The evaluator of the shipped SPOS recipe's search stage, built as the run builds it, on the
    trained supernet: with archval labels shifted every path scores below chance (it predicts the
    true class); on the train split (the wrong split) the same paths score far above."""
    ctx, reg = trained_on_synthetic
    recipe = load_yaml(reg.get("recipe", "spos").factory)
    spec = next(s for s in recipe["stages"] if s["kind"] == "search")["evaluator"]
    ev = reg.get("evaluator", spec["name"]).build(spec.get("options", {}), ctx)
    archs = [a for a in ctx.space.enumerate() if "skip" not in a.ops][:8]  # paths that learn
    start = len(ctx.data.access_log)
    scores = [m["acc"] for m in ev.score(archs, ctx)]
    read = set(ctx.data.access_log[start:])
    wrong_cfg = {**spec.get("options", {}), "split": "train"}
    wrong = [m["acc"] for m in reg.get("evaluator", spec["name"]).build(wrong_cfg, ctx).score(archs, ctx)]
    print("archval (shifted labels)", [round(s, 2) for s in scores], "train", [round(s, 2) for s in wrong])
    assert min(wrong) > 0.5  # the supernet learned: the wrong split would score it high
    assert max(scores) < 0.1  # archval (shifted labels) is what was scored
    assert read == {"train", "archval"}  # recalibration on train, scoring on archval
