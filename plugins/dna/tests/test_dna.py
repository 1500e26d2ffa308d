"""Tests of nascore-dna: block-wise training on teacher inputs, exhaustive per-block scoring, the
exact constrained combiner, teachers from files and torchvision, the pipeline and resume."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nascore_dna.plugin as dna_plugin
from nascore.arch import Architecture
from nascore.cost import ResourceConstraint
from nascore.errors import NascoreError
from nascore.methods.teacher import Teacher
from nascore.testing import make_context, run_config, tiny_config
from nascore_dna.blocks import check_blocks, cut_by_shape, student_blocks, torchvision_units, unit_shapes
from nascore_dna.selector import BlockItem, best_combinations
from nascore_dna.teacher import cut_teacher
from nascore_dna.trainer import blockwise_losses

torch.set_num_threads(1)

SYN = {"name": "synthetic", "options": {"size": 384, "test_size": 64, "shape": [1, 16, 16]}}


def _dna_config(**trainer_opts):
    opts = {"epochs": 1, "steps_per_epoch": 6, "teacher_epochs": 1, "lr": 0.005, **trainer_opts}
    return tiny_config(
        dataset=SYN, constraint={"macs_max": 1.6e5},
        stages=[
            {"kind": "train", "trainer": {"name": "dna", "options": opts}},
            {"kind": "search", "selector": {"name": "dna", "options": {"top": 3}},
             "evaluator": {"name": "block_distill", "options": {"recal_batches": 1, "eval_batches": 1}}},
        ],
    )


# -- blocks and the block-wise loss ---------------------------------------------------------------------
def test_dna_block_trains_on_teacher_inputs() -> None:
    """Identity blocks reproduce identity teacher blocks exactly (zero loss), and each block's loss
    depends only on the teacher's input feature, not on the student's earlier blocks."""
    from nascore.builtin.tiny import TinyChainSpace

    space = TinyChainSpace(input_shape=(1, 16, 16))
    net = space.build_supernet()
    arch = Architecture(["skip"] * 4)
    net.set_active(arch)
    teacher = Teacher(net.child(arch), kind="child", source="identity teacher", space=space, arch=arch)
    blocks = student_blocks(net)
    check_blocks(net, blocks, space.input_shape)
    tb = cut_teacher(teacher, blocks, space.input_shape)
    assert len(tb) == 2 and tb.shapes == [(8, 8, 8), (16, 4, 4)]
    net.eval()
    x = torch.randn(6, 1, 16, 16)
    assert [float(v.detach()) for v in blockwise_losses(blocks, tb, x)] == [0.0, 0.0]
    with torch.no_grad():
        net.stem[0].weight.add_(0.5)  # perturb the student's block 0 only
    guided = [float(v.detach()) for v in blockwise_losses(blocks, tb, x)]
    assert guided[0] > 0 and guided[1] == 0.0  # block 1 still gets the teacher's input
    unguided = [float(v.detach()) for v in blockwise_losses(blocks, tb, x, guide_input=False)]
    assert unguided[1] > 0  # fed its own (perturbed) input, block 1 is affected


def test_dna_trainer_updates_blocks_not_head(tmp_path) -> None:
    cfg = _dna_config()
    cfg["stages"] = cfg["stages"][:1]
    ctx = make_context(cfg, plugins=[dna_plugin], run_dir=tmp_path)
    head = {k: v.clone() for k, v in ctx.supernet.head.state_dict().items()}
    stem = ctx.supernet.stem[0].weight.detach().clone()
    from nascore.pipeline.run import run_pipeline

    run_pipeline(ctx)
    assert all(torch.equal(head[k], v) for k, v in ctx.supernet.head.state_dict().items())
    assert not torch.equal(stem, ctx.supernet.stem[0].weight)
    rec = ctx.state["dna"]
    assert rec["trained_in_run"] and rec["teacher"].startswith("export:") and rec["teacher_arch"] == "conv5-conv5-conv5-conv5"
    assert rec["blocks"] == [["layer0", "layer1"], ["layer2", "layer3"]]
    assert (tmp_path / "dna" / "teacher" / "model.pt").exists()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r.get("kind") == "train"]
    assert train and all("block0" in r and "block1" in r and "acc" not in r for r in train)


# -- the combiner ---------------------------------------------------------------------------------------
def _brute(blocks, c, fm, fp, combine):
    out = []
    for idx in itertools.product(*(range(len(b)) for b in blocks)):
        its = [blocks[b][i] for b, i in enumerate(idx)]
        macs = fm + sum(it.macs for it in its)
        params = fp + sum(it.params for it in its)
        if c.admits(macs, params):
            losses = [it.loss for it in its]
            out.append((sum(losses) if combine == "sum" else math.prod(losses), idx))
    return sorted(out)


item = st.builds(BlockItem, st.floats(0.01, 5.0), st.integers(0, 100), st.integers(0, 50))


@settings(max_examples=150, deadline=None)
@given(blocks=st.lists(st.lists(item, min_size=1, max_size=6), min_size=1, max_size=4),
       macs_max=st.one_of(st.none(), st.integers(0, 400)), macs_min=st.one_of(st.none(), st.integers(0, 200)),
       params_max=st.one_of(st.none(), st.integers(0, 200)), k=st.integers(1, 4),
       combine=st.sampled_from(["sum", "product"]), fixed=st.integers(0, 30))
def test_dna_combiner_equals_brute_force(blocks, macs_max, macs_min, params_max, k, combine, fixed) -> None:
    if macs_min is not None and macs_max is not None and macs_min > macs_max:
        macs_min = None
    c = ResourceConstraint(macs_min=macs_min, macs_max=macs_max, params_max=params_max)
    got = best_combinations(blocks, c, k=k, fixed_macs=fixed, fixed_params=fixed, combine=combine)
    want = _brute(blocks, c, fixed, fixed, combine)[:k]
    assert len(got) == len(want)
    for (gs, gi), (ws, _) in zip(got, want):
        assert gs == pytest.approx(ws, rel=1e-9, abs=1e-12)
        its = [blocks[b][i] for b, i in enumerate(gi)]
        assert c.admits(fixed + sum(it.macs for it in its), fixed + sum(it.params for it in its))


def test_dna_combiner_picks_true_best_under_budget() -> None:
    """A table where the per-block favourites do not fit: the best feasible mix is returned."""
    blocks = [
        [BlockItem(0.1, 90, 0, "big0"), BlockItem(0.3, 40, 0, "mid0"), BlockItem(0.9, 5, 0, "small0")],
        [BlockItem(0.2, 80, 0, "big1"), BlockItem(0.25, 60, 0, "mid1"), BlockItem(0.8, 5, 0, "small1")],
    ]
    c = ResourceConstraint(macs_max=130)
    (score, idx), = best_combinations(blocks, c, k=1)
    assert [blocks[b][i].key for b, i in enumerate(idx)] == ["mid0", "big1"] and score == pytest.approx(0.5)
    assert best_combinations(blocks, ResourceConstraint(macs_max=5)) == []


# -- pipeline ---------------------------------------------------------------------------------------------
def test_dna_pipeline_scores_every_block_candidate_once(tmp_path) -> None:
    ctx = run_config(_dna_config(), tmp_path, plugins=[dna_plugin])
    assert 1 <= len(ctx.candidates) <= 3
    assert all(c.macs <= 1.6e5 and c.origin == "dna" for c in ctx.candidates)
    best = ctx.candidates[0]
    assert best.metrics["block_loss"] == pytest.approx(best.metrics["block0_loss"] + best.metrics["block1_loss"])
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    table = [r for r in rows if r.get("kind") == "dna_block"]
    for b in (0, 1):
        keys = [tuple(r["ops"]) for r in table if r["block"] == b]
        assert sorted(keys) == sorted(itertools.product(("conv3", "conv5", "skip"), repeat=2))  # all 9, once
        losses = [r["loss"] for r in sorted((r for r in table if r["block"] == b), key=lambda r: r["rank"])]
        assert losses == sorted(losses)
    # the best feasible combination of the logged table is what the selector returned
    by = {(r["block"], tuple(r["ops"])): r for r in table}
    feasible = []
    for a in itertools.product(("conv3", "conv5", "skip"), repeat=4):
        arch = Architecture(list(a))
        if ctx.feasible(arch):
            feasible.append((by[(0, a[:2])]["loss"] + by[(1, a[2:])]["loss"], "-".join(a)))
    assert min(feasible)[1] == best.arch_str


def test_dna_resume_after_kill_matches(tmp_path) -> None:
    from nascore.pipeline.run import resume_run, run_pipeline

    cfg = _dna_config()
    ref = run_config(cfg, tmp_path / "ref", plugins=[dna_plugin])
    ctx = make_context(cfg, plugins=[dna_plugin], run_dir=tmp_path / "cut")
    ctx.cfg.stages.pop()  # run only the train stage, as if killed before the search
    run_pipeline(ctx)
    from nascore.registry import set_registry
    from nascore.testing import make_registry

    set_registry(make_registry(dna_plugin))
    resumed = resume_run(tmp_path / "cut", quiet=True)
    run_pipeline(resumed)
    assert [c.arch_str for c in resumed.candidates] == [c.arch_str for c in ref.candidates]


def test_dna_teacher_from_run_folder_and_evolution(tmp_path) -> None:
    """A nascore-trained child (another run's retrained candidate) as the teacher; SPOS evolution on
    the block_distill evaluator as the alternative selector."""
    first = tiny_config(dataset=SYN, stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 3}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 2}}, "evaluator": "accuracy"},
        {"kind": "retrain", "epochs": 1},
    ])
    run_config(first, tmp_path / "teacher", plugins=[dna_plugin], smoke=True)
    cfg = _dna_config(teacher=f"run:{tmp_path / 'teacher'}#0")
    cfg["stages"][1] = {"kind": "search", "selector": {"name": "evolution", "options": {"population": 6, "generations": 1}},
                        "evaluator": {"name": "block_distill", "options": {"recal_batches": 1, "eval_batches": 1}}}
    ctx = run_config(cfg, tmp_path / "student", plugins=[dna_plugin], smoke=True)
    assert ctx.state["dna"]["teacher"] == f"run:{tmp_path / 'teacher'}#0" and "trained_in_run" not in ctx.state["dna"]
    assert ctx.candidates and all(c.origin.startswith("evolution") for c in ctx.candidates)
    assert all("block0_loss" in c.metrics for c in ctx.candidates)


# -- torchvision teachers ---------------------------------------------------------------------------------
def test_dna_torchvision_resnet_cut_at_stage_boundaries() -> None:
    import torchvision

    from nascore.builtin.mobilenet import MobileNetSpace

    model = torchvision.models.resnet18(weights=None, num_classes=10)
    from nascore.methods.teacher import RepeatChannels

    teacher = Teacher(model, kind="torchvision", source="torchvision resnet18", prepare=RepeatChannels(3))
    space = MobileNetSpace(stem_stride=2, stage_depths=(1, 1, 1, 1), stage_channels=(64, 128, 256, 512),
                           stage_strides=(2, 2, 2, 2), kernels=(3,), expansions=(1,), se="none",
                           last_channels=0, head_channels=0, input_shape=(1, 28, 28))
    net = space.build_supernet()
    blocks = student_blocks(net)
    check_blocks(net, blocks, space.input_shape)
    tb = cut_teacher(teacher, blocks, space.input_shape)
    assert tb.shapes == [(64, 7, 7), (128, 4, 4), (256, 2, 2), (512, 1, 1)]
    assert [len(u) for u in tb.blocks.units] == [2, 1, 1, 1]  # stem + layer1, layer2, layer3, layer4
    feats = tb.features(torch.randn(2, 1, 28, 28))
    assert [tuple(f.shape[1:]) for f in feats[1:]] == tb.shapes
    units, names = torchvision_units(model, "resnet18")
    shapes = unit_shapes(units, (1, 28, 28), RepeatChannels(3))
    with pytest.raises(NascoreError, match="no feature of shape"):
        cut_by_shape(shapes, [(64, 7, 7), (96, 4, 4)], names=names)
    with pytest.raises(NascoreError, match="teacher_cuts has"):
        cut_by_shape(shapes, [(64, 7, 7)], cuts=[1, 2], names=names)


def test_dna_space_without_blocks_is_refused() -> None:
    ctx = make_context(tiny_config(space={"name": "tiny_cell"}, dataset=SYN), plugins=[dna_plugin])
    with pytest.raises(NascoreError, match="block-decomposed"):
        student_blocks(ctx.supernet)


def test_dna_block_feature_distiller_in_another_trainer_and_retrain(tmp_path) -> None:
    """The block-wise feature loss composed with the single-path trainer and the retrain stage; its
    teacher defaults to the one the dna trainer recorded in the run."""
    cfg = _dna_config()
    cfg["stages"].insert(1, {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}},
                             "distiller": {"name": "block_feature", "options": {"weight": 0.5}}})
    cfg["stages"].append({"kind": "retrain", "epochs": 1, "distiller": {"name": "block_feature"}})
    ctx = run_config(cfg, tmp_path, plugins=[dna_plugin], smoke=True)
    assert ctx.state["retrain"] and ctx.candidates
    from nascore_dna.distiller import BlockFeatureConfig, BlockFeatureDistiller

    d = BlockFeatureDistiller(BlockFeatureConfig(), ctx)
    child = ctx.supernet.child(ctx.candidates[0].arch)
    d.bind_student(child)
    x = next(iter(ctx.data.batches("train", limit=1)))[0]
    loss = d.loss(child(x), x, None, ctx.candidates[0].arch, ctx, None)
    loss.backward()
    assert float(loss.detach()) > 0 and child.stem[0].weight.grad is not None and child.head.weight.grad is None
