"""Tests of nascore-setn: what each half-step may change, α's ranking against the tiny-cell ground
truth, α in checkpoints and run state, the selector, the α evaluator and the recipe."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
import torch

import nascore_setn.plugin as setn_plugin
from nascore.arch import Architecture
from nascore.errors import NascoreError
from nascore.methods.mixed import ALPHA_STATE_KEY, ArchAlpha
from nascore.testing import make_context, make_registry, run_config
from nascore.trainer import make_optimizer
from nascore_setn.trainer import SETNConfig, SETNTrainer

torch.set_num_threads(1)


def _ctx(dataset: str = "synthetic", **data: Any) -> Any:
    cfg = {"name": "t", "seed": 0, "device": "cpu", "space": {"name": "tiny_cell", "options": {"bn_affine": False}},
           "dataset": {"name": dataset}, "data": {"batch_size": 32, "val_fraction": 0.3, **data},
           "stages": [{"kind": "train", "trainer": "setn"}]}
    return make_context(cfg, plugins=[setn_plugin])


def _ready_trainer(ctx: Any, **opts: Any) -> SETNTrainer:
    tr = SETNTrainer(SETNConfig(**opts), ctx)
    tr.setup(ctx)
    tr.optimizer = make_optimizer(tr.parameters(ctx), tr.cfg)
    ctx.supernet.train()
    return tr


def _params(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def test_weight_step_changes_only_the_sampled_path() -> None:
    ctx = _ctx()
    tr = _ready_trainer(ctx)
    arch = Architecture(["nor_conv_3x3", "skip_connect", "nor_conv_3x3"])
    tr.sample_arch = lambda c: arch  # type: ignore[method-assign]
    tr.after_step = lambda *a, **k: {}  # type: ignore[method-assign]  # the weight half-step alone
    net = ctx.supernet
    before, alpha0 = _params(net), tr.alpha.alpha.detach().clone()
    x, y = next(iter(ctx.data.batches("train")))
    for _ in range(2):  # two steps: momentum must not leak into unsampled ops either
        tr.train_step(ctx, x, y, total=10)
    after = _params(net)
    active = {n for n, _ in net.active_parameters(arch)}
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, "the sampled path was trained"
    assert changed <= active, f"unsampled ops changed: {sorted(changed - active)[:3]}"
    assert any(".nor_conv_3x3." in n for n in changed)
    assert torch.equal(tr.alpha.alpha, alpha0), "the weight step must not touch α"


def test_alpha_step_changes_only_alpha() -> None:
    ctx = _ctx()
    tr = _ready_trainer(ctx, arch_lr=1e-2)
    net = ctx.supernet
    before, alpha0 = _params(net), tr.alpha.alpha.detach().clone()
    x, y = next(iter(ctx.data.batches("val")))
    out = tr.alpha_step(ctx, x, y)
    assert (tr.alpha.alpha - alpha0).norm() > 0, "α moved"
    assert all(torch.equal(before[n], p) for n, p in net.named_parameters()), "weights untouched by the α step"
    assert all(p.grad is None for p in net.parameters())
    assert 0.0 <= out["alpha_acc"] <= 1.0


def test_alpha_is_checkpointed_written_to_state_and_resumed(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from nascore.pipeline.run import resume_run, run_pipeline

    cfg = {"name": "s", "seed": 0, "device": "cpu", "space": {"name": "tiny_cell"}, "dataset": {"name": "synthetic"},
           "data": {"batch_size": 32, "val_fraction": 0.3}, "checkpoint_every": 3,
           "stages": [{"kind": "train", "trainer": {"name": "setn", "options": {"epochs": 1, "steps_per_epoch": 6,
                                                                               "arch_lr": 1e-2}}}]}
    reg = make_registry(setn_plugin)
    ctx = run_config(cfg, tmp_path / "a", registry=reg)
    alpha = ArchAlpha.from_state(ctx.base_space, ctx.state[ALPHA_STATE_KEY]).alpha
    saved = torch.load(sorted((tmp_path / "a" / "checkpoints").glob("stage-0-*.pt"))[-1], weights_only=True)
    assert torch.allclose(saved["extra"]["alpha"], alpha)
    assert saved["extra"]["alpha_opt"]["state"], "Adam's moments are checkpointed too"

    class Killed(Exception):
        pass

    real = SETNTrainer.after_step

    def dies_at_step_4(self: SETNTrainer, *args: Any) -> Any:
        out = real(self, *args)
        if self.step == 4:
            raise Killed
        return out

    monkeypatch.setattr(SETNTrainer, "after_step", dies_at_step_4)
    with pytest.raises(Killed):
        run_config(cfg, tmp_path / "b", registry=reg)
    monkeypatch.setattr(SETNTrainer, "after_step", real)
    resumed = resume_run(tmp_path / "b", quiet=True, registry=reg)
    run_pipeline(resumed)
    resumed.log.close()
    again = ArchAlpha.from_state(resumed.base_space, resumed.state[ALPHA_STATE_KEY]).alpha
    assert torch.allclose(again, alpha, atol=1e-6), "resuming from step 3 reproduces α exactly"


def test_top_k_by_alpha_beats_the_space_mean_on_tiny_cell_ground_truth() -> None:
    from nascore.groundtruth.testbed import load_testbed

    truth = load_testbed("tiny_cell_mnist5k")
    cfg = {"name": "gt", "seed": 0, "device": "cpu", "space": {"name": "tiny_cell", "options": {"bn_affine": False}},
           "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64, "val_fraction": 0.3},
           "stages": [{"kind": "train", "trainer": {"name": "setn", "options": {
               "epochs": 4, "arch_lr": 3e-3}}},
               {"kind": "search", "selector": {"name": "setn", "options": {"select_num": 5}}}]}
    ctx = run_config(cfg, None, plugins=[setn_plugin])
    alpha = ArchAlpha.from_state(ctx.base_space, ctx.state[ALPHA_STATE_KEY])
    top = [ctx.space.format(a) for a, _ in alpha.top_k(ctx.space, 5)]
    mean_top = statistics.mean(truth[a] for a in top)
    mean_all = statistics.mean(truth.values())
    median_all = statistics.median(truth.values())
    pick = truth[ctx.candidates[0].arch_str]
    print(f"tiny_cell ground truth: top-5 by α {mean_top:.4f}, space mean {mean_all:.4f}, "
          f"pick {pick:.4f} (median {median_all:.4f})")
    assert mean_top > mean_all
    assert pick >= median_all


def test_selector_ranks_top_k_by_template_accuracy_and_annotates() -> None:
    cfg = {"name": "sel", "seed": 0, "device": "cpu", "space": {"name": "tiny_cell"}, "dataset": {"name": "synthetic"},
           "data": {"batch_size": 32, "val_fraction": 0.3},
           "stages": [{"kind": "train", "trainer": {"name": "setn", "options": {"epochs": 1, "steps_per_epoch": 4}}},
                      {"kind": "search", "selector": {"name": "setn", "options": {"select_num": 6, "same_batch": True}},
                       "evaluator": "setn_alpha"}]}
    ctx = run_config(cfg, None, plugins=[setn_plugin])
    cands = ctx.candidates
    assert len(cands) == 6
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
    alpha = ArchAlpha.from_state(ctx.base_space, ctx.state[ALPHA_STATE_KEY])
    top6 = {a for a, _ in alpha.top_k(ctx.space, 6)}
    assert {c.arch for c in cands} == top6
    for c in cands:  # the stage's evaluator only annotates: here α's own log-probability
        assert c.metrics["alpha_logprob"] == pytest.approx(alpha.log_prob(c.arch))


def test_selector_without_alpha_says_what_to_add() -> None:
    cfg = {"name": "x", "seed": 0, "device": "cpu", "space": {"name": "tiny_cell"}, "dataset": {"name": "synthetic"},
           "stages": [{"kind": "search", "selector": "setn"}]}
    with pytest.raises(NascoreError, match="setn"):
        run_config(cfg, None, plugins=[setn_plugin])


def test_bad_options_name_the_field() -> None:
    from pydantic import ValidationError

    reg = make_registry(setn_plugin)
    with pytest.raises(ValidationError, match="arch_lr"):
        reg.get("trainer", "setn").config.model_validate({"arch_lr": -1})
    with pytest.raises(ValidationError, match="select_num"):
        reg.get("selector", "setn").config.model_validate({"select_num": 0})


def test_setn_recipe_validates_and_smoke_runs(tmp_path: Any) -> None:
    import yaml

    from nascore.config import validate

    reg = make_registry(setn_plugin)
    recipe = yaml.safe_load((setn_plugin.RECIPES / "setn.yaml").read_text())
    validate(recipe, reg)
    recipe["device"] = "cpu"
    recipe["stages"] = recipe["stages"][:2]
    ctx = run_config(recipe, tmp_path / "smoke", registry=reg, smoke=True)
    best = ctx.candidates[0]
    assert "nb201_cifar10_test" in best.metrics and "template_acc" in best.metrics
