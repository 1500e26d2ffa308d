"""Stages, loops and the run folder."""

import json
import random

import pytest
import torch

from nascore import hookimpl
from nascore.arch import Architecture
from nascore.roles import SearchResult
from nascore.testing import make_context, make_registry, run_config, tiny_config


class ShrinkOnce:
    """Drops one option of decision 0 per call; says done when one is left (like NSE/ABS rounds)."""

    def __init__(self, cfg, ctx=None):
        pass

    def search(self, ctx, evaluator):
        allowed = ctx.space.allowed[0]
        new = ctx.space.restrict({0: allowed[:-1]}) if len(allowed) > 1 else ctx.space
        ctx.state.setdefault("rounds_seen", []).append(len(allowed))
        return SearchResult(space=new, done=len(new.allowed[0]) == 1)


class Plugin:
    @hookimpl
    def register_selectors(self, register):
        register("shrink_once", ShrinkOnce)


def test_loop_stage_runs_rounds_and_stops_when_a_selector_is_done(tmp_path):
    cfg = tiny_config(stages=[{"kind": "loop", "rounds": 5, "stages": [
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 2}}},
        {"kind": "shrink", "selector": "shrink_once"},
    ]}])
    ctx = run_config(cfg, tmp_path, registry=make_registry((Plugin(), "test-plugin")))
    assert ctx.state["rounds_seen"] == [3, 2]
    assert ctx.space.allowed[0] == ("conv3",)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["completed"] == ["0.0.0", "0.0.1", "0.1.0", "0.1.1"]
    assert state["space_allowed"][0] == ["conv3"]
    # training in a restricted space only samples allowed options
    assert all(ctx.space.sample(random.Random(i))[0] == "conv3" for i in range(20))


def test_restricted_space_is_restored_on_resume(tmp_path):
    from nascore.pipeline.run import resume_run

    cfg = tiny_config(stages=[{"kind": "shrink", "selector": "shrink_once"}])
    reg = make_registry((Plugin(), "test-plugin"))
    run_config(cfg, tmp_path, registry=reg)
    ctx = resume_run(tmp_path, registry=reg)
    assert ctx.space.allowed[0] == ("conv3", "conv5")


def test_inactive_candidates_do_not_move_during_a_training_step(tmp_path):
    """Momentum and weight decay must not touch ops that were not on the path."""
    ctx = make_context(tiny_config(), run_dir=None)
    from nascore.trainer import SupernetTrainer, TrainerConfig, make_optimizer

    tr = SupernetTrainer(TrainerConfig(weight_decay=0.1, momentum=0.9), ctx)
    tr.optimizer = make_optimizer(ctx.supernet.parameters(), tr.cfg)
    x, y = next(ctx.data.batches("train"))
    net = ctx.supernet
    for arch in (Architecture(["conv3"] * 4), Architecture(["conv5"] * 4)):  # momentum buffers for both
        tr.sample_arch = lambda _ctx, a=arch: a
        tr.train_step(ctx, x, y, total=10)
    tr.sample_arch = lambda _ctx: Architecture(["conv3"] * 4)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    tr.train_step(ctx, x, y, total=10)
    for n, p in net.named_parameters():
        if "candidates.conv5" in n:
            assert torch.equal(before[n], p), n
        if "candidates.conv3" in n and n.endswith("0.weight"):
            assert not torch.equal(before[n], p), n


def test_nan_loss_stops_with_step_and_path(tmp_path):
    from nascore.errors import TrainingDiverged

    cfg = tiny_config(stages=[{"kind": "train", "trainer": {"name": "single_path", "options": {"lr": 1e30, "grad_clip": None, "epochs": 3}}}])
    with pytest.raises(TrainingDiverged, match=r"at step \d+ \(epoch \d+\) on path"):
        run_config(cfg, tmp_path)


def test_unwritable_run_folder_fails_before_training(tmp_path):
    from nascore.errors import NascoreError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NascoreError, match="cannot write to run folder"):
        run_config(tiny_config(), blocker / "run")


def test_same_seed_same_result_different_seed_different_order(tmp_path):
    stages = [
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 5}}, "evaluator": "accuracy"},
    ]
    a = run_config(tiny_config(stages=stages), tmp_path / "a").candidates
    b = run_config(tiny_config(stages=stages), tmp_path / "b").candidates
    assert [(c.arch_str, c.score) for c in a] == [(c.arch_str, c.score) for c in b]


def test_nan_loss_can_skip_the_batch_when_the_config_says_so(tmp_path):
    from nascore.testing import make_context
    from nascore.trainer import SupernetTrainer, TrainerConfig, make_optimizer

    ctx = make_context(tiny_config(), run_dir=None)
    tr = SupernetTrainer(TrainerConfig(on_nan="skip"), ctx)
    tr.optimizer = make_optimizer(ctx.supernet.parameters(), tr.cfg)
    x, y = next(ctx.data.batches("train"))
    before = {n: p.detach().clone() for n, p in ctx.supernet.named_parameters()}
    out = tr.train_step(ctx, x * float("nan"), y, total=10)
    assert out == {"skipped": 1.0} and tr.step == 1
    assert all(torch.equal(before[n], p) for n, p in ctx.supernet.named_parameters())
