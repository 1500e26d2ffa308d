"""Tests that fail when Cream's own signals are broken (issue 18, "tests with teeth").

* The meta matching network's choice of teacher: with a hand-set matching layer the right teacher
  is known by construction (not the first, not the last board entry), and the distillation loss
  must use that teacher's logits and that entry's rho.
* The board score is the path's top-1 on the scored batch (hand-made logits with a known top-1).
* Splits: the paper's meta step and ``score: val`` read the ``val`` split and nothing else; on a
  dataset whose val labels are shifted by one class, the measured values are those of val.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import nascore_cream.plugin as cream_plugin
from nascore.arch import Architecture
from nascore.testing import make_context
from nascore_cream.board import BoardEntry
from nascore_cream.distill import PathDistillOptions, PrioritizedPaths, frozen_bn

torch.set_num_threads(1)

STUDENT = Architecture(["conv3", "skip", "conv5", "skip"])
BOARD = [Architecture(["conv5", "conv5", "conv3", "conv3"]), Architecture(["conv3", "conv3", "conv5", "conv5"]),
         Architecture(["skip", "conv5", "conv5", "conv3"])]


@pytest.fixture(autouse=True)
def _fresh_registry():
    from nascore.registry import set_registry

    set_registry(None)
    yield
    set_registry(None)


def _ctx():
    cfg = {"name": "t", "seed": 0, "device": "cpu", "space": {"name": "tiny_chain"},
           "dataset": {"name": "synthetic", "options": {"size": 256}}, "data": {"batch_size": 16},
           "stages": [{"kind": "train", "trainer": "single_path"}]}
    ctx = make_context(cfg, plugins=[cream_plugin])
    ctx.stage_key = "0"
    return ctx


def shift_labels(ctx, split: str) -> None:
    """Replace every label ``y`` of ``split`` by ``(y + 1) % C`` (the other splits keep theirs)."""
    x, y = ctx.data.spec.tensors
    idx = torch.as_tensor(ctx.data.splits[split])
    y = y.clone()
    y[idx] = (y[idx] + 1) % ctx.data.num_classes
    ctx.data.spec.tensors = (x, y)


def _board_with_known_class0_probs(engine, ctx, x, p0=(0.2, 0.9, 0.5)):
    """Board entries (best first: scores 0.9, 0.8, 0.7) on the same images, whose stored softmax
    gives class 0 the probability ``p0[k]`` (the rest spread evenly)."""
    s, c = engine.opts.slice, ctx.data.num_classes
    for k, (a, p) in enumerate(zip(BOARD, p0)):
        probs = torch.full((s, c), (1 - p) / (c - 1))
        probs[:, 0] = p
        engine.board.offer(BoardEntry(a, ctx.space.format(a), 0.9 - 0.1 * k, ctx.cost.macs(a), 0, x[:s].clone(), probs))
    assert [e.arch for e in engine.board] == BOARD


def _class0_matcher(engine) -> None:
    """M(d) = -sum over the slice of d[:, class 0]: the entry whose stored class-0 probability is
    highest matches best (the student's own term is the same for every entry: same images)."""
    with torch.no_grad():
        w = torch.zeros(engine.opts.slice, engine.meta.num_classes)
        w[:, 0] = -1.0
        engine.meta.layer.weight.copy_(w.reshape(1, -1))
        engine.meta.layer.bias.zero_()


def test_meta_network_picks_the_best_matching_entry_and_distils_from_it() -> None:
    ctx = _ctx()
    net = ctx.supernet
    x, y = next(ctx.data.batches("train"))
    engine = PrioritizedPaths(PathDistillOptions(update_iter=1000), ctx, owner="test")
    _board_with_known_class0_probs(engine, ctx, x)
    _class0_matcher(engine)
    with torch.no_grad(), frozen_bn(net):
        s0 = F.softmax(net(x[: engine.opts.slice], STUDENT), 1)[:, 0].sum()
    expected_m = [engine.opts.slice * p - float(s0) for p in (0.2, 0.9, 0.5)]
    j, rho, m = engine.select_teacher(net, STUDENT)
    assert m.detach().tolist() == pytest.approx(expected_m, abs=1e-5)
    assert j == 1  # the middle entry: neither the board's best nor its last
    assert float(rho.detach()) == pytest.approx(1 / (1 + math.exp(-expected_m[1])), abs=1e-6)

    net.train()
    net.set_active(STUDENT)
    logits = net(x)
    snap = net.snapshot()
    loss = engine.loss(net, logits, x, y, STUDENT, ctx, epoch=1, step=1)
    net.load_snapshot(snap)
    with torch.no_grad(), frozen_bn(net):
        p_t = F.softmax(net(x, BOARD[1]), 1)
    r = 1 / (1 + math.exp(-expected_m[1]))
    kd = -(p_t * F.log_softmax(logits, 1)).sum(1).mean()
    expected = (r * kd + (2 - r) * F.cross_entropy(logits, y)) / 2
    assert engine.last["teacher_score"] == pytest.approx(0.8)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-5)
    # the other entries would give another loss: the choice of teacher matters to the student
    for other in (BOARD[0], BOARD[2]):
        with torch.no_grad(), frozen_bn(net):
            q = F.softmax(net(x, other), 1)
        alt = (r * -(q * F.log_softmax(logits, 1)).sum(1).mean() + (2 - r) * F.cross_entropy(logits, y)) / 2
        assert abs(float(alt.detach()) - float(expected.detach())) > 1e-4


def test_board_score_is_the_top1_of_the_scored_logits() -> None:
    ctx = _ctx()
    engine = PrioritizedPaths(PathDistillOptions(board_size=2), ctx, owner="test")
    x, y = next(ctx.data.batches("train"))
    c = ctx.data.num_classes
    for arch, right in ((BOARD[0], 12), (BOARD[1], 4)):  # 12/16 and 4/16 correct by construction
        logits = F.one_hot((y + 1) % c, c).float()
        logits[:right] = F.one_hot(y[:right], c).float()
        assert engine.offer(ctx.supernet, logits, None, x, y, arch, ctx, step=0) == "not full"
    assert [(e.arch, e.score) for e in engine.board] == [(BOARD[0], 0.75), (BOARD[1], 0.25)]
    logits = F.one_hot(y, c).float()  # full board: a perfect path is admitted, the worst evicted
    assert engine.offer(ctx.supernet, logits, None, x, y, BOARD[2], ctx, step=1) == "better"
    assert [e.score for e in engine.board] == [1.0, 0.75]


# -- splits ---------------------------------------------------------------------------------------
def _lookahead_val_loss(engine, net, x, y, xv, yv, lr):
    """L_val(w - lr * grad_w L_train(w, rho)) on (xv, yv), written out independently of the engine."""
    j, rho, _ = engine.select_teacher(net, STUDENT)
    named = list(net.active_parameters(STUDENT))
    with frozen_bn(net):
        with torch.no_grad():
            t = net(x, engine.board.entries[j].arch)
        s = net(x, STUDENT)
        kd = -(F.softmax(t, 1) * F.log_softmax(s, 1)).sum(1).mean()
        l_train = (rho * kd + (2 - rho) * F.cross_entropy(s, y)) / 2
        grads = torch.autograd.grad(l_train, [p for _, p in named], create_graph=True)
        w2 = {n: p - lr * g for (n, p), g in zip(named, grads)}
        net.set_active(STUDENT)
        return float(F.cross_entropy(torch.func.functional_call(net, w2, (xv,)), yv).detach())


def test_paper_meta_step_reads_the_val_split_and_only_it() -> None:
    ctx = _ctx()
    shift_labels(ctx, "val")
    net = ctx.supernet
    x, y = next(ctx.data.batches("train"))
    engine = PrioritizedPaths(PathDistillOptions(), ctx, owner="test")
    _board_with_known_class0_probs(engine, ctx, x)
    step = 3
    nb = ctx.data.num_batches("val", drop_last=False)
    xv, yv = next(iter(ctx.data.batches("val", epoch=step // nb, start=step % nb, limit=step % nb + 1,
                                        drop_last=False)))
    expected = _lookahead_val_loss(engine, net, x, y, xv, yv, lr=0.1)
    start = len(ctx.data.access_log)
    info = engine.meta_update(net, x, y, STUDENT, ctx, step=step, lr=0.1)
    assert ctx.data.access_log[start:] == ["val"]
    assert info["meta_val_loss"] == pytest.approx(expected, rel=1e-4)
    # precondition of the check: the same look-ahead on the train split's batch gives another loss
    xt, yt = next(iter(ctx.data.batches("train", epoch=step // nb, start=step % nb, limit=step % nb + 1)))
    assert abs(_lookahead_val_loss(engine, net, x, y, xt, yt, lr=0.1) - expected) > 1e-3


def test_score_val_scores_board_paths_on_the_val_split() -> None:
    """``score: val``: the board score is the path's top-1 on the val batch of the step (val labels
    shifted by one class, so the val answer is not the one any other split gives)."""
    ctx = _ctx()
    shift_labels(ctx, "val")
    engine = PrioritizedPaths(PathDistillOptions(score="val"), ctx, owner="test")
    x, y = next(ctx.data.batches("train"))
    net = ctx.supernet

    def top1_on(split: str) -> float:
        xs, ys = next(iter(ctx.data.batches(split, epoch=0, start=0, limit=1, drop_last=False)))
        with torch.no_grad(), frozen_bn(net):
            return float((net(xs, BOARD[0]).argmax(1) == ys).float().mean())

    expected = top1_on("val")
    assert top1_on("train") != expected and top1_on("archval") != expected  # precondition: splits differ
    start = len(ctx.data.access_log)
    engine.offer(net, torch.zeros(len(y), ctx.data.num_classes), None, x, y, BOARD[0], ctx, step=0)
    assert ctx.data.access_log[start:] == ["val"]
    assert engine.board.entries[0].score == pytest.approx(expected)


# -- the board selector: what decides the final architecture ------------------------------------
class KnownAccuracy:
    """A synthetic evaluator whose order is the REVERSE of the board's (so either source of the
    ranking gives a different answer), and which records what it was asked to score."""

    metric = "acc"
    higher_is_better = True
    VALUES = {BOARD[0]: 0.1, BOARD[1]: 0.5, BOARD[2]: 0.9}

    def __init__(self) -> None:
        self.asked: list[Architecture] = []

    def score(self, archs, ctx):
        self.asked += list(archs)
        return [{"acc": self.VALUES[a]} for a in archs]


def _board_state(ctx, scores=(0.9, 0.8, 0.7)) -> None:
    ctx.state["cream_board"] = {"owner": "test", "entries": [
        {"arch": ctx.space.format(a), "ops": a.to_json(), "score": s, "macs": ctx.cost.macs(a)}
        for a, s in zip(BOARD, scores)]}


def test_board_selector_ranks_by_the_rescoring_evaluator_or_by_the_board_score() -> None:
    from nascore_cream.selector import BoardSelector, BoardSelectorConfig

    ctx = _ctx()
    ctx.stage_key = "1"
    _board_state(ctx)
    ev = KnownAccuracy()
    res = BoardSelector(BoardSelectorConfig()).search(ctx, ev)  # rescore: on, the stage has an evaluator
    assert [c.arch for c in res.candidates] == BOARD[::-1]  # the evaluator's order, not the board's
    assert [c.score for c in res.candidates] == [0.9, 0.5, 0.1]
    assert sorted(map(tuple, ev.asked)) == sorted(map(tuple, BOARD))  # every board path, nothing else
    assert [c.metrics["board_score"] for c in res.candidates] == [0.7, 0.8, 0.9]
    ev2 = KnownAccuracy()
    res = BoardSelector(BoardSelectorConfig(rescore=False)).search(ctx, ev2)  # the paper: the board's order
    assert [c.arch for c in res.candidates] == BOARD and [c.score for c in res.candidates] == [0.9, 0.8, 0.7]
    assert ev2.asked == []
    # a different board score order changes the paper's answer (the score read is the board's own)
    _board_state(ctx, scores=(0.2, 0.95, 0.6))
    res = BoardSelector(BoardSelectorConfig(rescore=False)).search(ctx, None)
    assert [c.arch for c in res.candidates] == [BOARD[1], BOARD[2], BOARD[0]]
