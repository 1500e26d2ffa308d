"""Tests that fail when SETN's own signal is broken: α's gradient must be the joint (softmax(α)-mixed)
network's cross-entropy on the ``val`` split's batches in order (not on the train batch the weights
just stepped on), and selection must take the top-K architectures by α's log-probability (checked
against α set by hand) and rank them by template accuracy on ``val``."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import nascore_setn.plugin as setn_plugin
from nascore.methods.mixed import ALPHA_STATE_KEY, ArchAlpha, path_accuracy, subspace_arch
from nascore.testing import make_context
from nascore.trainer import make_optimizer
from nascore_setn.selector import SETNSelectConfig, SETNSelector
from nascore_setn.trainer import SETNConfig, SETNTrainer

torch.set_num_threads(1)


def _ctx() -> Any:
    cfg = {"name": "t", "seed": 0, "device": "cpu", "space": {"name": "tiny_cell", "options": {"bn_affine": False}},
           "dataset": {"name": "synthetic"}, "data": {"batch_size": 32, "eval_batch_size": 64, "val_fraction": 0.3},
           "stages": [{"kind": "train", "trainer": "setn"}]}
    ctx = make_context(cfg, plugins=[setn_plugin])
    ctx.stage_key = "0"
    return ctx


def _joint_grad(ctx: Any, alpha: ArchAlpha, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d CE(joint network on (x, y)) / dα, every edge mixing all its ops with softmax(α); BN state kept."""
    net = ctx.supernet
    snap = net.snapshot()
    joint = subspace_arch(ctx.space)
    net.set_active(joint, weights=alpha.mix_weights(joint))
    try:
        (g,) = torch.autograd.grad(F.cross_entropy(net(x), y), [alpha.alpha])
    finally:
        net.set_active(joint)
        net.load_snapshot(snap)
    return g


def test_setn_alpha_gradient_is_the_joint_loss_on_val_batches_in_order() -> None:
    """Three full SETN steps. At each α step the gradient handed to Adam equals the gradient of the
    joint network's loss on val batch k (k = 0, 1, 2, the split's seeded order) and differs from the one
    on the train batch of that step: α read from the wrong split, a constant or noisy α loss, or
    another mixing (e.g. un-normalised weights) fail this test."""
    ctx = _ctx()
    tr = SETNTrainer(SETNConfig(arch_lr=1e-2), ctx)
    tr.setup(ctx)
    tr.optimizer = make_optimizer(tr.parameters(ctx), tr.cfg)
    ctx.supernet.train()
    val = list(ctx.data.batches("val", epoch=0, limit=3))
    train = list(ctx.data.batches("train", epoch=0, limit=3))
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real_step = tr.alpha_opt.step

    def capture(*a: Any, **k: Any) -> Any:
        k_ = tr.step - 1
        grad = tr.alpha.alpha.grad.detach().clone()
        want = _joint_grad(ctx, tr.alpha, *val[k_])
        other = _joint_grad(ctx, tr.alpha, *train[k_])
        seen.append((grad, want, other))
        return real_step(*a, **k)

    tr.alpha_opt.step = capture  # type: ignore[method-assign]
    alpha0 = tr.alpha.alpha.detach().clone()
    for x, y in train:
        tr.train_step(ctx, x, y, total=10)
    assert len(seen) == 3
    for k, (grad, want, other) in enumerate(seen):
        assert torch.allclose(grad, want, rtol=1e-4, atol=1e-7), f"α step {k}: not the joint loss on val batch {k}"
        assert not torch.allclose(other, want, rtol=1e-2, atol=1e-6), "the splits must differ for this test to bite"
    assert (tr.alpha.alpha - alpha0).abs().max() > 1e-3


def _hand_alpha(ctx: Any, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(0.0, 2.0) for _ in d.options] for d in ctx.base_space.decisions]


def _hand_logprob(values: list[list[float]], options: list[tuple[str, ...]], ops: tuple[str, ...]) -> float:
    total = 0.0
    for row, opts, o in zip(values, options, ops):
        total += row[opts.index(o)] - math.log(sum(math.exp(v) for v in row))
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_setn_selects_the_top_k_by_alpha_set_by_hand_and_ranks_them_on_val(seed: int) -> None:
    """α written by hand into the run state: the selector's candidates are exactly the K architectures
    with the highest hand-computed log-probability (an α ignored, replaced by noise or sorted the wrong
    way fails), each scored by the template network's accuracy on the val batch (same_batch), best first."""
    ctx = _ctx()
    values = _hand_alpha(ctx, seed)
    options = [tuple(d.options) for d in ctx.base_space.decisions]
    a = ArchAlpha(ctx.base_space, init_std=0.0)
    ctx.state[ALPHA_STATE_KEY] = {**a.to_state(), "values": values}
    k = 5
    res = SETNSelector(SETNSelectConfig(select_num=k, same_batch=True), ctx).search(ctx, None)
    hand = sorted(((_hand_logprob(values, options, arch.ops), ctx.space.format(arch)) for arch in ctx.space.enumerate()
                   if ctx.space.is_valid(arch)), reverse=True)
    assert hand[k - 1][0] > hand[k][0] + 1e-6  # no tie at the cut for this α
    assert {c.arch_str for c in res.candidates} == {s for _, s in hand[:k]}
    for c in res.candidates:
        assert c.metrics["alpha_logprob"] == pytest.approx(_hand_logprob(values, options, c.arch.ops), abs=1e-5)
        acc, _ = path_accuracy(ctx, c.arch, split="val", batches=1, bn="batch", shuffle=True, epoch=0, start=0,
                               batch_size=ctx.data.eval_batch_size)
        assert c.metrics["template_acc"] == acc
    assert [c.score for c in res.candidates] == sorted((c.score for c in res.candidates), reverse=True)
    one = SETNSelector(SETNSelectConfig(select_num=1), ctx).search(ctx, None)
    assert one.candidates[0].arch_str == hand[0][1]  # K = 1: α alone decides
