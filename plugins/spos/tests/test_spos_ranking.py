"""SPOS on the test bed: BN recalibration matters, and the supernet ranks architectures well.

The ground truth is every tiny_chain architecture trained standalone on mnist5k
(``nascore/resources/testbed/tiny_chain_mnist5k.json``; its seed-to-seed tau, the noise ceiling, is
0.73). Measured with this budget (uniform sampler, 10 epochs = 500 steps, seed 0): tau 0.70 with BN
recalibration, 0.51 with the supernet's stored statistics (seed 1: 0.67 and 0.52).
"""

from __future__ import annotations

import random

import pytest
import torch

from nascore.evaluate import bn_layers, bn_state, recalibrate_bn
from nascore.groundtruth.testbed import align, kendall_tau, load_testbed, topk_hit_rate
from nascore_spos.ranking import score_all, train_supernet

torch.set_num_threads(1)

TAU_FLOOR = 0.5


@pytest.fixture(scope="module")
def trained():
    return train_supernet("uniform", seed=0)


@pytest.fixture(scope="module")
def scores(trained):
    return {"recal": score_all(trained, "recalibrate"), "stored": score_all(trained, "stored")}


def test_recalibration_recomputes_the_statistics_as_a_cumulative_average(trained) -> None:
    net, ctx = trained.supernet, trained
    arch = ctx.space.sample(random.Random(1))
    net.set_active(arch)
    stored = bn_state(net)
    batches = list(ctx.data.batches("train", epoch=0, limit=3))
    stem_bn = bn_layers(net.stem)[0]
    try:
        assert recalibrate_bn(net, batches) == 3
        after = bn_state(net)
        changed = [not torch.equal(a[0], b[0]) for a, b in zip(stored, after)]
        assert any(changed)
        # momentum=None: the running mean is the exact average of the three batch means
        with torch.no_grad():
            conv = net.stem[0]
            means = [conv(x).mean((0, 2, 3)) for x, _ in batches]
        torch.testing.assert_close(stem_bn.running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)
        assert stem_bn.momentum is not None  # the layer's own momentum is restored afterwards
    finally:
        from nascore.evaluate import load_bn_state

        load_bn_state(net, stored)


def test_scoring_leaves_the_supernet_statistics_untouched(trained) -> None:
    before = trained.supernet.snapshot()
    score_all(trained, "recalibrate", recal_batches=2, eval_batches=1)
    after = trained.supernet.snapshot()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bn_recalibration_raises_accuracy_on_a_trained_supernet(scores) -> None:
    recal, stored = scores["recal"], scores["stored"]
    mean_recal = sum(recal.values()) / len(recal)
    mean_stored = sum(stored.values()) / len(stored)
    assert mean_recal > mean_stored + 0.05, (mean_recal, mean_stored)
    better = sum(recal[a] > stored[a] for a in recal)
    assert better > 0.75 * len(recal)


def test_spos_ranks_the_test_bed_above_a_tau_floor(scores) -> None:
    truth = load_testbed("tiny_chain_mnist5k")
    pred, gt = align(scores["recal"], truth)
    assert len(pred) == 81
    tau = kendall_tau(pred, gt)
    tau_stored = kendall_tau(*align(scores["stored"], truth))
    print(f"SPOS uniform: kendall tau {tau:.3f} (no recal {tau_stored:.3f}), top-5 hit {topk_hit_rate(pred, gt, 5):.2f}")
    assert tau >= TAU_FLOOR, tau
    assert tau >= tau_stored + 0.05, (tau, tau_stored)
