"""Tests that fail when TNAS's own signal is broken: the score of a *trained* child sub-supernet must be
its accuracy on the ``archval`` split with the weights it was just fine-tuned to (from its parent's
weights), the winner's weights must seed the next level of the tree, and the trained path must pick
by that score along the operation tree (a case with a known optimum)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

import nascore_tnas.plugin as tnas_plugin
import nascore_tnas.selector as tnas_selector
from nascore.arch import Architecture
from nascore.methods.mixed import path_accuracy, subspace_members
from nascore.testing import make_context
from nascore_tnas.selector import TNASConfig, TNASSelector

torch.set_num_threads(1)

TINY4 = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3"]
TINY4_TREE = [["none", "skip_connect"], ["nor_conv_1x1", "nor_conv_3x3"]]  # 2 levels, binary


def _ctx(seed: int = 0) -> Any:
    cfg = {"name": "t", "seed": seed, "device": "cpu", "space": {"name": "tiny_cell", "options": {"ops": TINY4}},
           "dataset": {"name": "synthetic"}, "data": {"batch_size": 32, "eval_batch_size": 64, "limit": 800},
           "stages": [{"kind": "search", "selector": "random"}]}
    ctx = make_context(cfg, plugins=[tnas_plugin])
    ctx.stage_key = "0"
    return ctx


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tnas_trained_child_score_is_its_archval_accuracy_after_fine_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every child's recorded score equals an independent re-measurement: the accuracy on archval (first
    eval batch, batch-statistics BN) of the weights right after that child's fine-tuning. Siblings all
    start from their parent's weights, and the next level starts from the winner's. The same
    re-measurement on ``val`` or ``train`` disagrees, so a wrong split, a constant, noise, or a score
    taken before training fails here."""
    ctx = _ctx()
    trained: list[dict[str, Any]] = []
    real = tnas_selector.train_steps

    def spy(c: Any, arch: Architecture, steps: int, **kw: Any) -> dict[str, float]:
        before = c.supernet.snapshot()
        out = real(c, arch, steps, **kw)
        trained.append({"arch": ctx.space.format(arch), "before": before, "after": c.supernet.snapshot(),
                        "split": kw.get("split", "train")})
        return out

    monkeypatch.setattr(tnas_selector, "train_steps", spy)
    start = ctx.supernet.snapshot()
    sel = TNASSelector(TNASConfig(grouping="fixed", tree=TINY4_TREE, child_score="train", d_a=3, order="fixed",
                                  top_k=1, decision_steps=2, stabilize_steps=0, eval_batches=1, lr=0.05))
    res = sel.search(ctx, None)
    trace = ctx.state["tnas"]["0"]["trace"]
    scored = [(step["step"], arch, score) for step in trace for arch, score in step["children"]]
    assert len(scored) == len(trained) >= 6 and all(t["split"] == "train" for t in trained)
    wrong = {"val": 0, "train": 0}
    parent = start
    for step in trace:
        rows = [(t, score) for (s, arch, score), t in zip(scored, trained) if s == step["step"]]
        assert rows
        for t, score in rows:
            assert _same(t["before"], parent), "each sibling is fine-tuned from its parent's weights"
            assert not _same(t["before"], t["after"])
            ctx.supernet.load_snapshot(t["after"])
            child = ctx.space.parse(t["arch"])
            acc, _ = path_accuracy(ctx, child, split="archval", batches=1, bn="batch")
            assert score == acc, (t["arch"], score, acc)
            for split in wrong:
                wrong[split] += path_accuracy(ctx, child, split=split, batches=1, bn="batch")[0] != acc
        parent = next(t for t, _ in rows if t["arch"] == step["winner"])["after"]  # the winner seeds the next level
    assert all(v > 0 for v in wrong.values()), f"the splits must differ for this test to bite: {wrong}"
    final = res.candidates[0]
    assert final.arch_str == trace[-1]["winner"]
    assert final.metrics["tnas_val_acc"] == dict(trace[-1]["children"])[final.arch_str]


def test_tnas_trained_path_follows_the_score_down_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """A known optimum: the trained child's score is replaced by a table (a sub-space scores the best
    additive value among its members) and training by a no-op. The trained path must then return the
    table's optimum for every table: it chooses by the score, level by level, keeping the winner."""
    ctx = _ctx()
    for seed in range(8):
        rng = random.Random(seed)
        unary = [{o: rng.gauss(0.0, 1.0) for o in d.options} for d in ctx.space.decisions]

        def true(a: Architecture) -> float:
            return sum(unary[i][o] for i, o in enumerate(a.ops))

        def table_score(c: Any, arch: Architecture, **kw: Any) -> tuple[float, float]:
            return max(true(m) for m in subspace_members(c.space, arch)), 0.0

        monkeypatch.setattr(tnas_selector, "train_steps", lambda *a, **k: {"loss": 0.0, "acc": 0.0, "steps": 1.0})
        monkeypatch.setattr(tnas_selector, "path_accuracy", table_score)
        ctx.stage_key = f"k{seed}"
        sel = TNASSelector(TNASConfig(grouping="fixed", tree=TINY4_TREE, child_score="train", d_a=3,
                                      top_k=2, decision_steps=1, stabilize_steps=0, eval_batches=1))
        res = sel.search(ctx, None)
        best = max((a for a in ctx.space.enumerate()), key=true)
        assert res.candidates[0].arch == best, f"table seed {seed}"
        assert sel.children_evaluated <= 2 * 2 ** 3
