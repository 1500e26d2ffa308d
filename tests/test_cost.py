"""Cost tables of the built-in spaces agree exactly with fvcore on built children.

For every space, ≥200 random architectures are checked with :func:`nascore.cost.check_table`
(fvcore on each standalone child vs the per-option table). fvcore costs ~0.05–0.2 s per child
(jit tracing; it grows with the child's depth), so the 200-architecture checks run on each
space's *test-size* configuration — the same blocks, strides, skips, SE/activation and cell ops
as the default, with fewer repeats — and the full default configuration is checked on 8 random
architectures (``python benchmarks/cost.py`` checks 200 on every default). The test-size NB201
skeleton has two stages of one cell (stem, cell, reduction block, cell, head). Set-valued NB201
edges (TNAS) and the config switches (SE/activation/width/BN) are checked too.
"""

from __future__ import annotations

import random

import pytest
import torch

from nascore.arch import Architecture
from nascore.builtin.mobilenet import MobileNetSpace
from nascore.builtin.nb201 import CellSpace, nb201_space, tiny_cell_space
from nascore.builtin.shufflenet import ShuffleNetSpace
from nascore.cost import check_table, count_params, fvcore_macs

torch.set_num_threads(1)

# test-size configurations: every kind of layer of the default, fewer repeats
SMALL = {
    "mobilenet": lambda: MobileNetSpace(stage_depths=(1, 2), stage_channels=(8, 16), stage_strides=(1, 2),
                                        input_shape=(3, 32, 32)),
    "shufflenet": lambda: ShuffleNetSpace(stage_depths=(1, 2), stage_channels=(24, 48), input_shape=(1, 28, 28)),
    "nb201": lambda: CellSpace(name="nb201", C=4, n_cells=1, stages=2, input_shape=(3, 32, 32)),
    "tiny_cell": lambda: tiny_cell_space(input_shape=(1, 28, 28)),
}
DEFAULT = {
    "mobilenet": lambda: MobileNetSpace(input_shape=(3, 32, 32)),
    "shufflenet": lambda: ShuffleNetSpace(input_shape=(1, 28, 28)),
    "nb201": lambda: nb201_space(input_shape=(3, 32, 32)),
    "tiny_cell": lambda: tiny_cell_space(input_shape=(3, 32, 32)),
}


def random_archs(space, n: int, seed: int) -> list[Architecture]:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def random_sets(space: CellSpace, n: int, seed: int) -> list[Architecture]:
    """Random valid cells whose edges hold random non-empty op sets (TNAS mixed edges)."""
    rng = random.Random(seed)
    out: list[Architecture] = []
    while len(out) < n:
        ops = [frozenset(rng.sample(d.options, rng.randint(1, len(d.options)))) for d in space.decisions]
        a = Architecture(ops)
        if space.is_valid(a):
            out.append(a)
    return out


def assert_agree(space, archs) -> None:
    rows = check_table(space, archs)
    assert len(rows) == len(archs)
    bad = [r for r in rows if not r["ok"]]
    assert not bad, f"{len(bad)}/{len(rows)} disagree, e.g. {bad[0]}"


@pytest.mark.parametrize("name", list(SMALL))
def test_table_matches_fvcore_on_200_random_archs(name):
    space = SMALL[name]()
    if name == "tiny_cell":  # 22 cells: check all of them, plus random set-valued cells
        archs = list(space.enumerate()) + random_sets(space, 180, seed=1)
    else:
        archs = random_archs(space, 200, seed=1)
    assert_agree(space, archs)


@pytest.mark.parametrize("name", list(DEFAULT))
def test_table_matches_fvcore_on_the_default_spaces(name):
    space = DEFAULT[name]()
    assert_agree(space, random_archs(space, 8, seed=2) + [space.first()])


def test_table_matches_fvcore_on_nb201_edge_sets():
    space = SMALL["nb201"]()
    everything = Architecture([frozenset(d.options) for d in space.decisions])
    assert_agree(space, random_sets(space, 20, seed=3) + [everything])


@pytest.mark.parametrize(
    "space",
    [
        MobileNetSpace(stage_depths=(1, 2), stage_channels=(8, 16), stage_strides=(2, 1), se="late", act="swish",
                       first_block_channels=8, last_channels=0, head_channels=0, width_mult=1.5, bn_affine=False,
                       dropout=0.2, kernels=(3, 5), expansions=(3, 6), input_shape=(1, 28, 28)),
        MobileNetSpace(stage_depths=(2, 1), stage_channels=(8, 16), stage_strides=(2, 2), se="none", act="relu",
                       allow_skip=False, input_shape=(3, 32, 32), num_classes=100),
        ShuffleNetSpace(stage_depths=(2, 1), stage_channels=(16, 32), stem_channels=8, stem_stride=2, maxpool=True,
                        bn_affine=True, width_mult=1.5, ops=("shuffle3", "xception"), input_shape=(3, 32, 32)),
        CellSpace(C=4, n_cells=1, stages=2, bn_affine=False, track_running_stats=False, input_shape=(1, 28, 28)),
        tiny_cell_space(ops=("none", "nor_conv_1x1", "avg_pool_3x3", "skip_connect"), C=4, stages=3,
                        track_running_stats=False),
    ],
    ids=["mobilenet-late-se-swish", "mobilenet-no-se-relu", "shufflenet-affine-wide", "nb201-no-affine",
         "tiny_cell-ops"],
)
def test_table_matches_fvcore_under_config_switches(space):
    archs = random_archs(space, 15, seed=4)
    if isinstance(space, CellSpace):
        archs += random_sets(space, 5, seed=5)
    assert_agree(space, archs)


def test_table_of_a_restricted_space_is_the_parents():
    space = SMALL["nb201"]()
    small = space.restrict({"1<-0": ["nor_conv_3x3"], "3<-0": ["avg_pool_3x3", "nor_conv_1x1"]})
    a = small.sample(random.Random(6))
    assert small.cost_table().cost(a) == space.cost_table().cost(a)
    net = small.build_supernet()
    child = net.child(a)
    assert small.cost_table().cost(a) == (fvcore_macs(child, small.input_shape), count_params(child))


def test_table_is_cached_per_input_shape_and_bounds_hold():
    space = SMALL["mobilenet"]()
    assert space.cost_table() is space.cost_table()
    bigger = space.cost_table((3, 64, 64))
    assert bigger is not space.cost_table()
    a = space.first()
    assert bigger.macs(a) > space.cost_table().macs(a)
    assert bigger.params(a) == space.cost_table().params(a)
    lo_m, hi_m, lo_p, hi_p = space.cost_table().bounds()
    for a in random_archs(space, 200, seed=7):
        m, p = space.cost_table().cost(a)
        assert lo_m <= m <= hi_m and lo_p <= p <= hi_p
    # skip costs nothing; a bigger kernel/expansion costs more
    t = space.cost_table()
    assert t.macs_table[2]["skip"] == 0 and t.params_table[2]["skip"] == 0
    assert t.macs_table[2]["k3e4"] < t.macs_table[2]["k3e6"] < t.macs_table[2]["k7e6"]


def test_nb201_params_match_the_published_benchmark():
    """The default nb201 children have NAS-Bench-201's own parameter counts.

    The shipped table gives params (M) for all 15,625 cells; NB201 trained one cell per
    isomorphism class and reports, for ~1.3% of cells, the mean over the class's variants (a
    non-integer count, or the mean of two variants) — every other cell must match exactly.
    """
    T = pytest.importorskip("nascore.groundtruth.nb201_table")
    space = nb201_space(input_shape=(3, 32, 32))
    table = space.cost_table()
    published = T.load_table("cifar10_200ep")
    exact = sum(table.params(Architecture(T.parse_cell_string(c))) == round(published.rows[c]["params"] * 1e6)
                for c in published)
    assert exact >= 15_400, exact
    best = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
    assert table.params(best) == 1_073_466 == round(published.rows[space.format(best)]["params"] * 1e6)


def test_shufflenet_ops_cost_what_the_spos_flops_table_says():
    """At ImageNet size the SPOS ops' conv MACs are the official per-op FLOPs table's.

    SPOS's FLOPs-loss code hard-codes per-layer per-op FLOPs (conv MACs only); fvcore also counts
    eval-mode BatchNorm (one per output element), so table = official + BN elements.
    """
    from nascore.builtin.shufflenet import SPOS_IMAGENET

    official = {0: [13396992, 15805440, 19418112, 13146112], 1: [7325696, 8931328, 11339776, 12343296]}
    inputs = {0: (16, 112, 112), 1: (64, 56, 56)}
    space = ShuffleNetSpace(**SPOS_IMAGENET, input_shape=(3, 224, 224), num_classes=1000)
    net = space.build_supernet().eval()
    for layer, want in official.items():
        for op, macs in zip(space.decisions[layer].options, want):
            mod = net.layers[layer].candidates[op]
            bn = []
            hooks = [m.register_forward_hook(lambda m, i, o: bn.append(o.numel()))
                     for m in mod.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            with torch.no_grad():
                mod(torch.zeros(1, *inputs[layer]))
            for h in hooks:
                h.remove()
            assert fvcore_macs(mod, inputs[layer]) == macs + sum(bn), (layer, op)
