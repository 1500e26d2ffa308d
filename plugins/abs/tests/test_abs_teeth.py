"""Tests that fail when ABS's own signals are broken (issue 18, "tests with teeth").

* The angle decides the drops: on a supernet whose weights are set by hand (only layer 0's conv3
  moved away from W0) the answer is known by construction — the two other ops of layer 0 score
  angle 0 and are dropped; noise, a constant, the wrong reference (W0 := current weights) or a
  reversed order all drop something else.
* The shrinking rule: with a synthetic evaluator whose per-op values are known, the operators
  dropped are exactly the lowest-valued ones.
* Splits: an angle shrink reads no data at all, and its training phases read only ``train``.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

import nascore_abs.plugin as abs_plugin
import nascore_spos.plugin as spos_plugin
from nascore.builtin.angle import AngleConfig, AngleEvaluator
from nascore.testing import make_context, tiny_config
from nascore_abs.shrink import AbsShrink, AbsShrinkConfig, shrink_history

torch.set_num_threads(1)
PLUGINS = (abs_plugin, spos_plugin)


def _ctx(layers: int = 4) -> Any:
    ctx = make_context(tiny_config(space={"name": "tiny_chain", "options": {"layers": layers}}), plugins=PLUGINS)
    ctx.stage_key = "1"
    ctx.supernet  # noqa: B018 - builds the supernet and records W0
    return ctx


def _one_round(**options: Any) -> AbsShrink:
    opts = {"target_size": 1, "max_rounds": 1, "epochs_between": 0, "sample_num": 1000, "reinit": False, **options}
    return AbsShrink(AbsShrinkConfig(**opts))


def _dropped(ctx: Any) -> set[tuple[int, str]]:
    return {(lay, op) for lay, op in shrink_history(ctx)[0]["dropped"]}


def test_angle_drops_the_ops_whose_weights_did_not_move() -> None:
    ctx = _ctx()
    net = ctx.supernet
    torch.manual_seed(5)
    with torch.no_grad():  # "training" that moved only layer 0's conv3 (a fresh random draw of it)
        for name, p in net.named_parameters():
            if name.startswith("layers.0.") and ".conv3." in f".{name}." and p.dim() > 1:
                p.copy_(torch.randn_like(p) * p.std())
    moved = [n for n, p in net.named_parameters() if not torch.equal(p, ctx.initial_weights[n])]
    assert moved and all(n.startswith("layers.0.") and "conv3" in n for n in moved), moved
    _one_round(drop_per_round=2).search(ctx, AngleEvaluator(AngleConfig()))
    assert _dropped(ctx) == {(0, "conv5"), (0, "skip")}
    assert ctx.space.allowed[0] == ("conv3",) and all(len(a) == 3 for a in ctx.space.allowed[1:])


class KnownValues:
    """A synthetic evaluator: the score of an architecture is the sum of known per-(layer, op)
    values, zero-mean in every layer, so an operator's mean score over all architectures that
    contain it is exactly its own value."""

    metric = "value"
    higher_is_better = True

    VALUES = {(0, "conv3"): 0.5, (0, "conv5"): -0.9, (0, "skip"): 0.4,
              (1, "conv3"): -0.25, (1, "conv5"): 0.6, (1, "skip"): -0.35,
              (2, "conv3"): 0.1, (2, "conv5"): 0.0, (2, "skip"): -0.1,
              (3, "conv3"): -0.8, (3, "conv5"): -0.2, (3, "skip"): 1.0}

    def __init__(self) -> None:
        self.calls = 0

    def score(self, archs: list, ctx: Any) -> list[dict[str, float]]:
        self.calls += 1
        return [{"value": sum(self.VALUES[(i, o)] for i, o in enumerate(a.ops))} for a in archs]


def test_the_lowest_mean_score_operators_are_dropped() -> None:
    """Lowest values: (0, conv5) -0.9, (3, conv3) -0.8, (1, skip) -0.35, then (1, conv3) -0.25:
    dropping 3 takes the first three, in ascending order."""
    assert set(KnownValues.VALUES) == set(itertools.product(range(4), ("conv3", "conv5", "skip")))
    assert all(abs(sum(v for (lay, _), v in KnownValues.VALUES.items() if lay == i)) < 1e-12 for i in range(4))
    ctx = _ctx()
    ev = KnownValues()
    _one_round(drop_per_round=3).search(ctx, ev)
    rec = shrink_history(ctx)[0]
    assert [tuple(d) for d in rec["dropped"]] == [(0, "conv5"), (3, "conv3"), (1, "skip")]
    scores = {(lay, op): s for lay, op, s in rec["scores"]}
    for k, v in KnownValues.VALUES.items():  # every pool is the whole set of 27 archs with the op
        assert abs(scores[k] - v) < 1e-9, (k, scores[k], v)
    assert ctx.space.size() == 2 * 2 * 3 * 2


def test_an_angle_shrink_reads_no_data_and_its_training_reads_only_train() -> None:
    ctx = _ctx()
    start = len(ctx.data.access_log)
    _one_round(drop_per_round=2).search(ctx, AngleEvaluator(AngleConfig()))
    assert ctx.data.access_log[start:] == []  # scoring: weights only
    ctx = _ctx()
    start = len(ctx.data.access_log)
    AbsShrink(AbsShrinkConfig(target_size=1, max_rounds=2, drop_per_round=2, sample_num=1000, epochs_between=1,
                              reinit=False, trainer="spos", trainer_options={"steps_per_epoch": 2})
              ).search(ctx, AngleEvaluator(AngleConfig()))
    read = ctx.data.access_log[start:]
    assert read and set(read) == {"train"}, read  # the phase between rounds trains; nothing else is read
    assert len(shrink_history(ctx)) == 2

