"""The prefix walk of ``block_table`` (``share_prefixes``) against the per-candidate path it replaces:
the same losses, bit for bit, for every BN mode, under a restricted space, a tiny memory budget, on
the dna-imagenet cells (stem + fixed block inside cell 0, SE, residuals, the wider last layer), and
with each prefix computed once (the counters)."""

from __future__ import annotations

import math
import random

import pytest
import torch
import yaml

import nascore_dna.plugin as dna_plugin
from nascore.evaluate import bn_state
from nascore.methods.teacher import Teacher
from nascore.testing import make_context, tiny_config
from nascore_dna.blocks import student_blocks
from nascore_dna.evaluator import BlockDistillConfig, BlockDistillEvaluator, block_steps
from nascore_dna.teacher import _MEMORY, MEMORY, STATE_KEY

torch.set_num_threads(1)


def _ctx(space: dict, shape: list[int], seed: int = 0):
    cfg = tiny_config(space=space, seed=seed, data={"batch_size": 4, "eval_batch_size": 4},
                      dataset={"name": "synthetic", "options": {"size": 64, "test_size": 16, "shape": shape}},
                      stages=[{"kind": "search", "selector": "dna", "evaluator": "block_distill"}])
    ctx = make_context(cfg, plugins=[dna_plugin])
    ctx.stage_key = "0"
    # an independent teacher: a random path of the supernet with perturbed weights (every loss differs)
    arch = ctx.space.sample(random.Random(seed))
    child = ctx.supernet.child(arch)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in child.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g) * (p.std() if p.numel() > 1 else 1.0))
    ctx.state[STATE_KEY] = {"teacher": MEMORY}
    _MEMORY[ctx] = Teacher(child, kind="child", source="test teacher", space=ctx.base_space, arch=arch)
    # train-like BN statistics, so that "stored" differs from a recalibration
    with torch.no_grad():
        for m in ctx.supernet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return ctx


def _tables(ctx, **opts):
    """(prefix-walk table, per-candidate table, the walk's evaluator) on the same context."""
    before = bn_state(ctx.supernet)
    fast = BlockDistillEvaluator(BlockDistillConfig(**opts), ctx)
    got = fast.block_table(ctx)
    after = bn_state(ctx.supernet)
    assert all(torch.equal(a, b) for x, y in zip(before, after) for a, b in zip(x, y))  # BN state restored
    ref = BlockDistillEvaluator(BlockDistillConfig(**opts, share_prefixes=False), ctx)
    want = ref.block_table(ctx)
    assert ref.stats == {"nodes": 0, "leaves": 0, "plain": sum(len(r) for r in want)}
    assert fast.evaluations == ref.evaluations == sum(len(r) for r in want)
    return got, want, fast


@pytest.mark.parametrize("bn_mode", ["recalibrate", "batch", "stored"])
def test_prefix_walk_equals_per_candidate_scores_on_tiny_chain(bn_mode) -> None:
    """tiny_chain: block 0 = stem (a root step of fixed modules) + 2 layers; block 1 = down + 2 layers.
    Two recalibration batches (cumulative averages) and two eval batches."""
    ctx = _ctx({"name": "tiny_chain"}, [1, 16, 16])
    got, want, ev = _tables(ctx, bn_mode=bn_mode, recal_batches=2, eval_batches=2)
    assert got == want  # exact: same floats, same keys, same order
    assert len(set(want[0].values())) == 9  # distinct losses: a mix-up of candidates would show
    # per block: the root step once, 3 first-layer prefixes, 9 leaves
    assert ev.stats == {"nodes": 2 * (1 + 3), "leaves": 18, "plain": 0}
    again = ev.block_table(ctx)  # cached: no work
    assert again == got and ev.evaluations == 18


def test_prefix_walk_under_a_restricted_space_and_a_tiny_budget() -> None:
    ctx = _ctx({"name": "tiny_chain"}, [1, 16, 16])
    ctx.space = ctx.space.restrict({0: ["conv3", "skip"], 3: ["conv5"]})
    got, want, ev = _tables(ctx, recal_batches=2, eval_batches=2)
    assert got == want and [len(r) for r in got] == [6, 3]
    assert ev.stats["plain"] == 0
    # a budget below one activation: every candidate runs its path from the block input (plain), same scores
    tight, _, ev2 = _tables(ctx, recal_batches=2, eval_batches=2, prefix_budget_mb=1e-6)
    assert tight == want and ev2.stats["plain"] == 9


def test_prefix_walk_equals_per_candidate_scores_on_dna_imagenet_cells() -> None:
    """The dna-imagenet space at 32x32: cell 0 (stem + fixed depthwise block + 2 layers, all 36
    candidates), cells 1-4 (4 layers, restricted to 2 ops each: 16) and cell 5 (1 layer, 6)."""
    from pathlib import Path

    import nascore_dna

    recipe = Path(nascore_dna.__file__).parent / "recipes" / "dna-imagenet.yaml"
    opts = yaml.safe_load(recipe.read_text())["space"]["options"]
    ctx = _ctx({"name": "mobilenet", "options": opts}, [3, 32, 32])
    blocks = student_blocks(ctx.supernet)
    steps = block_steps(ctx.supernet, blocks, 0)
    assert [s.decisions for s in steps] == [(), (0,), (1,)] and len(steps[0].units) == 2  # stem, first_block
    cells = blocks.decisions
    ctx.space = ctx.space.restrict({d: ["k3e3", "k7e6"] for ds in cells[1:5] for d in ds})
    got, want, ev = _tables(ctx, recal_batches=2, eval_batches=1)
    assert got == want and [len(r) for r in got] == [36, 16, 16, 16, 16, 6]
    assert ev.stats == {"nodes": (1 + 6) + 4 * (2 + 4 + 8), "leaves": 106, "plain": 0}
    assert all(math.isfinite(v) and v > 0 for row in got for v in row.values())


def test_prefix_walk_falls_back_when_a_module_writes_its_input_in_place() -> None:
    """A layer that modifies its input in place would corrupt the kept prefix: the block is rescored
    per candidate (same table as the reference), not silently mis-scored."""
    ctx = _ctx({"name": "tiny_chain"}, [1, 16, 16])

    class AddInPlace(torch.nn.Module):
        def forward(self, x):
            return x.add_(1.0)

    layer = ctx.supernet.layers[1]
    layer.candidates["skip"] = AddInPlace()  # layer 1's "skip" now writes its input (layer 0's output)
    got, want, ev = _tables(ctx, recal_batches=1, eval_batches=1)
    assert ev.stats["plain"] == 9 and ev.stats["leaves"] == 9  # block 0 rescored, block 1 walked
    assert got == want


def test_block_steps_refuse_what_the_walk_cannot_prove() -> None:
    ctx = _ctx({"name": "tiny_chain"}, [1, 16, 16])
    blocks = student_blocks(ctx.supernet)
    assert block_steps(ctx.supernet, blocks, 1) is not None
    moved = type(blocks)([blocks.units[0], blocks.units[1][:1]], blocks.decisions, blocks.head)  # layers missing
    assert block_steps(ctx.supernet, moved, 1) is None
