"""Tests that fail when PWKD's own signal is broken: in stage i the loss must be logit KD against the
*i-th* width of the slimmable teacher (computed here straight from the supernet, each width with its
own BatchNorm statistics) on the student's own batch, partial to whole; and the slimmable trainer's
loss must be the sum of every width's cross-entropy, each width updating its own BatchNorm."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

import nascore_pwkd.plugin as pwkd_plugin
from nascore.arch import Architecture
from nascore.testing import make_context, tiny_config
from nascore.trainer import make_optimizer

torch.set_num_threads(1)

SYN = {"name": "synthetic", "options": {"size": 384, "test_size": 64, "shape": [1, 16, 16]}}
SLIM = {"name": "slimmable_chain", "options": {"width": 8}}
WIDTHS = ["w25", "w50", "w75", "w100"]


def _ctx() -> Any:
    """A slimmable teacher trained jointly for a few steps (so its widths differ, depend on the input and
    each has BatchNorm statistics of its own)."""
    from nascore_pwkd.trainer import SlimmableConfig, SlimmableTrainer

    ctx = make_context(tiny_config(space=SLIM, dataset=SYN), plugins=[pwkd_plugin])
    torch.manual_seed(0)
    SlimmableTrainer(SlimmableConfig(epochs=1, steps_per_epoch=12, lr=0.1), ctx).fit(ctx)
    with torch.no_grad():  # confident teachers: on these noise images the logits are small and alike
        ctx.supernet.classifier.weight.mul_(30.0)
    return ctx


@torch.no_grad()
def _hand_kd(ctx: Any, width: str, s: torch.Tensor, x: torch.Tensor, T: float = 4.0) -> float:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), batch mean, t = the supernet at ``width`` in eval mode."""
    net = ctx.supernet
    was, prev = net.training, net.active_arch
    net.eval()
    net.set_active(Architecture([width]))
    t = net(x)
    net.train(was)
    if prev is not None:
        net.set_active(prev)
    pt = torch.softmax(t / T, 1)
    return float(T * T * (pt * (torch.log(pt) - torch.log_softmax(s / T, 1))).sum(1).mean())


def test_pwkd_stage_loss_is_kd_against_that_stage_width_on_the_students_batch() -> None:
    """Each stage's loss equals the hand KD against its own width (w25 → w100) and not against any
    other width, nor against the right width on another batch: a teacher schedule out of order, stuck
    on the whole teacher, a constant loss or a teacher fed other data fails."""
    from nascore_pwkd.distiller import PWKDConfig, PWKDDistiller

    ctx = _ctx()
    d = PWKDDistiller(PWKDConfig(), ctx)
    x, y = next(iter(ctx.data.batches("train", epoch=9, limit=1)))
    x2 = 3.0 * x.flip(0) + 1.0  # other images (synthetic images are noise: pooled features barely vary)
    s = 0.5 * torch.randn(x.shape[0], 10, generator=torch.Generator().manual_seed(0))
    total = 8
    for step in range(total):
        d.lr_factor(step, total)
        got = float(d.loss(s, x, y, None, ctx, None))
        stage = WIDTHS[step // 2]
        hand = {w: _hand_kd(ctx, w, s, x) for w in WIDTHS}
        assert got == pytest.approx(hand[stage], rel=1e-5), (step, stage, got, hand)
        assert all(abs(got - v) > 1e-3 * abs(v) for w, v in hand.items() if w != stage)
        assert abs(got - _hand_kd(ctx, stage, s, x2)) > 1e-3 * got  # the teacher must see the student's batch


def test_slimmable_teacher_loss_is_the_sum_over_every_width_each_with_its_own_bn() -> None:
    """The teacher's joint training: the step's loss is Σ_w CE(width w on the batch), computed here width
    by width, and one step changes every width's own BatchNorm affine parameters — training only the
    widest path (or any one width) fails this test."""
    from nascore_pwkd.trainer import SlimmableConfig, SlimmableTrainer

    ctx = _ctx()
    tr = SlimmableTrainer(SlimmableConfig(epochs=1, lr=0.05), ctx)
    tr.setup(ctx)
    assert [ctx.space.format(p) for p in tr.paths] == WIDTHS  # narrow to wide
    tr.optimizer = make_optimizer(tr.parameters(ctx), tr.cfg)
    net = ctx.supernet
    net.train()
    x, y = next(iter(ctx.data.batches("train", epoch=3, limit=1)))
    snap = net.snapshot()
    hand = 0.0
    for w in WIDTHS:
        net.set_active(Architecture([w]))
        with torch.no_grad():
            hand += float(F.cross_entropy(net(x), y))
    net.load_snapshot(snap)
    loss, _ = tr.compute_loss(ctx, x, y, tr.paths[-1])
    assert float(loss.detach()) == pytest.approx(hand, rel=1e-5)
    net.load_snapshot(snap)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    tr.train_step(ctx, x, y, total=10)
    for w in WIDTHS:
        own = [n for n in before if n.startswith("norms.") and f".bns.{w}." in n]  # width w's own BN set
        assert own and any(not torch.equal(before[n], dict(net.named_parameters())[n]) for n in own), w
