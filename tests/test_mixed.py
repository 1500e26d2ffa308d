"""``nascore.methods.mixed``: α over a space's decisions, sub-space training and scoring (TNAS, SETN)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from nascore.arch import Architecture, option_members
from nascore.errors import NascoreError
from nascore.evaluate import bn_state
from nascore.methods.mixed import ArchAlpha, path_accuracy, subspace_arch, subspace_members, subspace_size, train_steps
from nascore.testing import make_context

torch.set_num_threads(1)


def _ctx(**space_options: Any) -> Any:
    return make_context({"name": "m", "seed": 0, "device": "cpu", "space": {"name": "tiny_cell", "options": space_options},
                         "dataset": {"name": "synthetic"}, "data": {"batch_size": 32},
                         "stages": [{"kind": "search", "selector": "random"}]})


def test_mix_weights_follow_option_members_order_and_are_differentiable() -> None:
    ctx = _ctx()
    alpha = ArchAlpha(ctx.space, init_std=0.0)
    with torch.no_grad():
        alpha.alpha[0, :3] = torch.tensor([0.0, 1.0, 2.0])  # none, skip_connect, nor_conv_3x3
    arch = Architecture([frozenset({"nor_conv_3x3", "none"}), "skip_connect", frozenset(ctx.space.allowed[2])])
    w = alpha.mix_weights(arch)
    assert w[1] is None
    members = option_members(arch.ops[0])  # sorted: none, nor_conv_3x3
    assert members == ("none", "nor_conv_3x3")
    assert torch.allclose(w[0], torch.softmax(torch.tensor([0.0, 2.0]), 0))
    w[0][1].backward()
    assert alpha.alpha.grad is not None and alpha.alpha.grad[0].abs().sum() > 0


def test_log_prob_top_k_and_state_roundtrip() -> None:
    ctx = _ctx()
    alpha = ArchAlpha(ctx.space, init_std=1.0, generator=torch.Generator().manual_seed(3))
    top = alpha.top_k(ctx.space, 5)
    assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    best = max(ctx.space.enumerate(), key=alpha.log_prob)
    assert top[0][0] == best
    total = sum(math.exp(alpha.log_prob(a)) for a in ctx.space.enumerate())
    assert 0 < total <= 1.0 + 1e-6  # a distribution over all cells, valid ones a subset
    again = ArchAlpha.from_state(ctx.space, alpha.to_state())
    assert torch.equal(again.alpha, alpha.alpha)
    other = _ctx(ops=["none", "nor_conv_3x3"])
    with pytest.raises(NascoreError, match="other decisions/options"):
        ArchAlpha.from_state(other.space, alpha.to_state())


def test_subspace_helpers() -> None:
    ctx = _ctx()
    full = subspace_arch(ctx.space)
    assert subspace_size(full) == 27
    members = list(subspace_members(ctx.space, full))
    assert len(members) == ctx.space.size() == 22 and all(ctx.space.is_valid(m) for m in members)


def test_train_steps_changes_only_the_sub_space_and_scoring_keeps_bn() -> None:
    ctx = _ctx()
    net = ctx.supernet
    sub = Architecture([frozenset({"skip_connect", "nor_conv_3x3"}), "nor_conv_3x3", "skip_connect"])
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    out = train_steps(ctx, sub, 3, lr=0.05)
    assert out["steps"] == 3 and math.isfinite(out["loss"])
    active = {n for n, _ in net.active_parameters(sub)}
    changed = {n for n, p in net.named_parameters() if not torch.equal(before[n], p)}
    assert changed and changed <= active
    stats = bn_state(net)
    acc, loss = path_accuracy(ctx, sub, split="archval", batches=1, bn="batch")
    assert 0.0 <= acc <= 1.0 and math.isfinite(loss)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(stats, bn_state(net)))
