"""Tests that fail when DNA's own signal is broken: the block score must be the normalised L1 between
the student block (fed the *teacher's* input feature) and the *teacher's* output feature, on the
``archval`` split; a teacher that is a member of the space must be found by the selector."""

from __future__ import annotations

import pytest
import torch

import nascore_dna.plugin as dna_plugin
from nascore.arch import Architecture
from nascore.methods.teacher import Teacher
from nascore.testing import make_context, tiny_config
from nascore_dna.evaluator import BlockDistillConfig, BlockDistillEvaluator
from nascore_dna.selector import DNASelector, DNASelectorConfig
from nascore_dna.teacher import _MEMORY, MEMORY, STATE_KEY

torch.set_num_threads(1)

SYN = {"name": "synthetic", "options": {"size": 384, "test_size": 64, "shape": [1, 16, 16]}}


def _ctx(seed: int = 0):
    cfg = tiny_config(dataset=SYN, seed=seed, data={"batch_size": 32, "eval_batch_size": 48},
                      stages=[{"kind": "search", "selector": "dna", "evaluator": "block_distill"}])
    ctx = make_context(cfg, plugins=[dna_plugin])
    ctx.stage_key = "0"
    return ctx


def _use_teacher(ctx, model: torch.nn.Module, arch: Architecture) -> None:
    """Hand the run an in-memory teacher, as the dna trainer does when the run has no folder."""
    ctx.state[STATE_KEY] = {"teacher": MEMORY}
    _MEMORY[ctx] = Teacher(model, kind="child", source="test teacher", space=ctx.base_space, arch=arch)


@torch.no_grad()
def _hand_block_losses(student, teacher, arch, t_arch, batches) -> list[float]:
    """Normalised L1 per block, computed from the two networks' modules directly (eval mode, stored BN):
    block 0 = stem + layers[:2] on the image; block 1 = down + layers[2:] on the teacher's block-0 output."""
    student.eval()
    teacher.eval()
    student.set_active(arch)
    teacher.set_active(t_arch)
    tot, n = [0.0, 0.0], 0

    def run(net, x, b):
        if b == 0:
            x = net.stem(x)
            mods = net.layers[:2]
        else:
            x = net.down(x)
            mods = net.layers[2:]
        for m in mods:
            x = m(x)
        return x

    for x, _ in batches:
        t1 = run(teacher, x, 0)
        t2 = run(teacher, t1, 1)
        s1 = run(student, x, 0)
        s2 = run(student, t1, 1)  # the student's block 1 sees the teacher's feature, not its own
        k = x.shape[0]
        tot[0] += float((s1 - t1).abs().mean() / t1.std()) * k
        tot[1] += float((s2 - t2).abs().mean() / t2.std()) * k
        n += k
    return [v / n for v in tot]


def test_dna_block_score_is_the_normalised_l1_to_the_teacher_on_archval() -> None:
    """An independent teacher (another random network of the space) and a student path: the evaluator's
    per-block scores equal the hand computation on the archval batches — and differ from the same
    computation on the train split (so reading the wrong split, feeding the student its own features,
    comparing with the wrong teacher feature or normalising differently all fail this test)."""
    ctx = _ctx()
    torch.manual_seed(123)
    other = ctx.base_space.build_supernet()
    t_arch = Architecture(["conv5", "conv3", "conv5", "skip"])
    _use_teacher(ctx, other.child(t_arch), t_arch)
    ev = BlockDistillEvaluator(BlockDistillConfig(bn_mode="stored", eval_batches=2), ctx)
    arch = Architecture(["conv3", "skip", "conv3", "conv5"])
    got = ev.score([arch], ctx)[0]

    def split(name):
        return ctx.data.batches(name, shuffle=False, batch_size=48, drop_last=False, limit=2)

    want = _hand_block_losses(ctx.supernet, other, arch, t_arch, split("archval"))
    assert [got["block0_loss"], got["block1_loss"]] == pytest.approx(want, rel=1e-5)
    assert got["block_loss"] == pytest.approx(sum(want), rel=1e-5)
    wrong = _hand_block_losses(ctx.supernet, other, arch, t_arch, split("train"))
    assert all(abs(w - v) > 1e-4 * v for w, v in zip(wrong, want)), "the splits must differ for this test to bite"


@pytest.mark.parametrize("t_ops", [["conv5", "skip", "conv5", "conv3"], ["skip", "conv5", "skip", "skip"]])
def test_dna_finds_a_teacher_that_is_a_path_of_the_supernet(t_ops) -> None:
    """Known answer: the teacher *is* one path of the student supernet (same weights), so that path's
    block candidates reproduce the teacher exactly (loss 0) and every other candidate does not. The
    dna selector must return exactly that architecture; a noisy or constant score would not."""
    ctx = _ctx()
    t_arch = Architecture(t_ops)
    _use_teacher(ctx, ctx.supernet.child(t_arch), t_arch)
    ev = BlockDistillEvaluator(BlockDistillConfig(bn_mode="stored", eval_batches=1), ctx)
    res = DNASelector(DNASelectorConfig(top=3), ctx).search(ctx, ev)
    best = res.candidates[0]
    assert best.arch == t_arch
    assert best.metrics["block0_loss"] == pytest.approx(0.0, abs=1e-6)
    assert best.metrics["block1_loss"] == pytest.approx(0.0, abs=1e-6)
    # every other candidate of each block is strictly worse
    for b in (0, 1):
        key = tuple(t_ops[2 * b : 2 * b + 2])
        others = [v for (bb, k), v in ev.cache.items() if bb == b and k != key]
        assert len(others) == 8 and min(others) > 1e-3


# -- the default teacher is not a member of the searched space -------------------------------------------
def test_dna_default_teacher_on_tiny_matched_is_a_non_member_and_is_what_the_blocks_learn(tmp_path) -> None:
    """``teacher_space: auto`` on ``tiny_matched`` trains tiny_chain's conv5x4 (5x5 convs are no option of
    tiny_matched), saves it with its own space, and the evaluator of the next stage scores against *its*
    features (reloaded from the export); ``teacher_space: own`` keeps the member teacher."""
    from nascore.pipeline.run import run_pipeline
    from nascore.errors import NascoreError
    from nascore_dna.teacher import resolve, TeacherOptions

    def cfg(**opts):
        return tiny_config(space={"name": "tiny_matched"}, dataset=SYN, data={"batch_size": 32}, stages=[
            {"kind": "train", "trainer": {"name": "dna", "options": {"epochs": 1, "steps_per_epoch": 3,
                                                                     "teacher_epochs": 1, **opts}}},
            {"kind": "search", "selector": {"name": "dna", "options": {"top": 2}},
             "evaluator": {"name": "block_distill", "options": {"recal_batches": 1, "eval_batches": 1}}}])

    ctx = make_context(cfg(), plugins=[dna_plugin], run_dir=tmp_path / "auto")
    run_pipeline(ctx)
    rec = ctx.state[STATE_KEY]
    assert rec["teacher_space"] == "tiny_chain" and rec["teacher_arch"] == "conv5-conv5-conv5-conv5"
    with pytest.raises(NascoreError):
        ctx.base_space.check(ctx.base_space.parse(rec["teacher_arch"]))
    tb = resolve(ctx, TeacherOptions(), dna_plugin_blocks(ctx))
    assert tb.teacher.space.name == "tiny_chain"
    # the teacher's first block really is the 5x5 network: its conv kernels are 5x5
    kernels = {m.kernel_size for u in tb.blocks.units[0] for m in u.modules() if isinstance(m, torch.nn.Conv2d)}
    assert (5, 5) in kernels

    own_cfg = cfg(teacher_space="own")
    own_cfg["stages"] = own_cfg["stages"][:1]
    own = make_context(own_cfg, plugins=[dna_plugin], run_dir=tmp_path / "own")
    run_pipeline(own)
    rec = own.state[STATE_KEY]
    assert rec["teacher_space"] == "tiny_matched"
    own.base_space.check(own.base_space.parse(rec["teacher_arch"]))  # a member


def dna_plugin_blocks(ctx):
    from nascore_dna.blocks import student_blocks

    return student_blocks(ctx.supernet)
