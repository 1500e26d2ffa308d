"""Width decisions: slicing max-width weights, BN per width, exact cost tables, plain children.

Two spaces: SPOS's ShuffleNetV2 block + channel search (mid channels, both BN kinds), and a tiny
chain defined here whose width decisions set one block's output *and the next block's input*
channels (plus a searched stem and a slim classifier), which is the case a per-option table
cannot express and the width monomials must get exact.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch import nn

from nascore.arch import Architecture
from nascore.builtin.shufflenet import ShuffleNetSpace
from nascore.cost import check_table, count_params, fvcore_macs
from nascore.errors import ArchitectureError, NascoreError
from nascore.evaluate import recalibrate_bn
from nascore.space import ChoiceLayer, Decision, SearchSpace, Supernet, WidthDecision, width_options
from nascore.width import SlimBatchNorm2d, SlimConv2d, SlimLinear, SlimModule, SwitchableBatchNorm2d

SCALES = [round(0.2 * i, 1) for i in range(1, 11)]  # the SPOS paper's 0.2 .. 2.0


def spos_channel(bn: str = "slice", affine: bool = False) -> ShuffleNetSpace:
    return ShuffleNetSpace(stem_channels=8, stage_depths=[2, 2], stage_channels=[16, 32], last_channels=48,
                           channel_scales=SCALES, channel_bn=bn, bn_affine=affine, input_shape=(1, 16, 16))


# -- a chain whose widths couple neighbouring blocks ------------------------------------------------
class _Block(nn.Module):
    def __init__(self, op: str, cin: int, cout: int, in_src: int | None, out_src: int | None) -> None:
        super().__init__()
        k = 3 if op == "c3" else 5
        self.conv = SlimConv2d(cin, cout, k, 1, k // 2, in_source=in_src, out_source=out_src, bias=(op == "c5"))
        self.bn = SlimBatchNorm2d(cout, source=out_src)
        self.dw = SlimConv2d(cout, cout, 3, 1, 1, depthwise=True, in_source=out_src)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(torch.relu(self.bn(self.conv(x))))


class CoupledSpace(SearchSpace):
    """stem (width w0) → block1 (op, width w1) → block2 (op, width w2) → pool → linear(w2 → 10).

    Decisions: 0 = w0 (stem out / block1 in), 1 = op1, 2 = w1 (block1 out / block2 in),
    3 = op2, 4 = w2 (block2 out / classifier in).
    """

    name = "coupled"

    def __init__(self) -> None:
        super().__init__([WidthDecision("w0", (4, 6, 8)), Decision("op1", ("c3", "c5")), WidthDecision("w1", (5, 8)),
                          Decision("op2", ("c3", "c5")), WidthDecision("w2", (3, 6, 12))],
                         input_shape=(2, 12, 12), num_classes=10)

    def build_supernet(self) -> Supernet:
        return CoupledNet(self)


class CoupledNet(Supernet):
    def __init__(self, space: CoupledSpace) -> None:
        super().__init__(space)
        self.stem = SlimConv2d(2, 8, 3, 1, 1, out_source=0)
        self.stem_bn = SlimBatchNorm2d(8, source=0)
        self.b1 = ChoiceLayer({o: _Block(o, 8, 8, 0, 2) for o in ("c3", "c5")})
        self.b2 = ChoiceLayer({o: _Block(o, 8, 12, 2, 4) for o in ("c3", "c5")})
        self.fc = SlimLinear(12, 10, in_source=4)
        self.bind(1, "b1")
        self.bind(3, "b2")

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = self.b2(self.b1(x))
        return self.fc(x.mean((2, 3)))


def _randomize_bn(net: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))


# -- cost tables ------------------------------------------------------------------------------------
def test_coupled_widths_table_exact_with_fvcore_on_every_arch():
    space = CoupledSpace()
    archs = list(space.enumerate())
    assert len(archs) == 3 * 2 * 2 * 2 * 3
    rows = check_table(space, archs)
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad[:3]
    # the coupling is real: block2's conv MACs depend on w1 (its input) — same op2 and w2, different w1
    table = space.cost_table()
    a = space.parse("6-c3-5-c5-6")
    b = space.parse("6-c3-8-c5-6")
    assert table.macs(a) != table.macs(b)
    # bounds are the true extremes over the space
    costs = [table.cost(x) for x in archs]
    assert table.bounds(space.allowed) == (min(c[0] for c in costs), max(c[0] for c in costs),
                                           min(c[1] for c in costs), max(c[1] for c in costs))


def test_coupled_bounds_on_a_restricted_space():
    space = CoupledSpace().restrict({"w0": ["6", "8"], "w2": ["3"], "op2": ["c5"]})
    table = space.cost_table()
    costs = [table.cost(x) for x in space.enumerate()]
    assert table.bounds(space.allowed) == (min(c[0] for c in costs), max(c[0] for c in costs),
                                           min(c[1] for c in costs), max(c[1] for c in costs))


@pytest.mark.parametrize("bn,affine", [("slice", False), ("per_width", True)])
def test_spos_channel_table_exact_with_fvcore(bn, affine):
    space = spos_channel(bn, affine)
    rng = random.Random(1)
    smallest = Architecture([d.options[0] for d in space.decisions])
    largest = Architecture([d.options[-1] for d in space.decisions])
    archs = [smallest, largest] + [space.sample(rng) for _ in range(8)]
    rows = check_table(space, archs)
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]][:2]
    assert len({r["fvcore_macs"] for r in rows}) == len(rows)  # widths change the count


def test_spos_channel_options_follow_the_paper_scales():
    space = spos_channel()
    names = [d.name for d in space.decisions]
    assert names[:4] == ["s0_l0", "s0_l0_mid", "s0_l1", "s0_l1_mid"]
    mid = space.decisions[1]
    assert isinstance(mid, WidthDecision)
    assert mid.channels == tuple(int(round(8 * s)) for s in SCALES)  # oup/2 = 8 at stage 0
    assert space.decisions[5].channels == tuple(int(round(16 * s)) for s in SCALES)
    assert width_options(8, [0.2, 0.25]) == ("2",)  # rounding duplicates are dropped


# -- children: plain networks of only their channels, with the path's weights ---------------------
@pytest.mark.parametrize("make", [CoupledSpace, lambda: spos_channel("slice", True), lambda: spos_channel("per_width")])
def test_child_is_plain_and_equals_the_supernet_path(make):
    space = make()
    torch.manual_seed(0)
    net = space.build_supernet()
    _randomize_bn(net)
    net.eval()
    x = torch.randn(3, *space.input_shape)
    rng = random.Random(0)
    for _ in range(4):
        arch = space.sample(rng)
        child = net.child(arch).eval()
        assert not [m for m in child.modules() if isinstance(m, SlimModule)]
        net.set_active(arch)
        torch.testing.assert_close(child(x), net(x), rtol=0, atol=1e-6)
        assert count_params(child) == space.cost_table().params(arch)
    # a child of other widths computes something else (the comparison above has teeth)
    a = space.sample(random.Random(5))
    b = Architecture([o if not isinstance(d, WidthDecision) else d.options[(d.options.index(o) + 1) % len(d.options)]
                      for o, d in zip(a.ops, space.decisions)])
    net.set_active(a)
    out_a = net(x)
    assert not torch.allclose(net.child(b).eval()(x), out_a, atol=1e-3)


def test_child_holds_the_leading_channels_of_the_shared_weights():
    space = CoupledSpace()
    net = space.build_supernet().eval()
    arch = space.parse("6-c5-5-c3-3")
    child = net.child(arch)
    conv = child.b2.candidates["c3"].conv
    assert isinstance(conv, nn.Conv2d) and (conv.in_channels, conv.out_channels) == (5, 3)
    assert torch.equal(conv.weight, net.b2.candidates["c3"].conv.weight[:3, :5])
    assert child.fc.in_features == 3 and child.stem.out_channels == 6
    assert torch.equal(child.b1.candidates["c5"].conv.bias, net.b1.candidates["c5"].conv.bias[:5])
    # shared weights: a change in the slice that arch uses moves its output, outside it does not
    x = torch.randn(2, 2, 12, 12)
    net.set_active(arch)
    before = net(x)
    with torch.no_grad():
        net.b2.candidates["c3"].conv.weight[5:] += 1.0  # output channels arch does not use
    torch.testing.assert_close(net(x), before, rtol=0, atol=0)
    with torch.no_grad():
        net.b2.candidates["c3"].conv.weight[:3, :5] += 1.0
    assert not torch.allclose(net(x), before)


def test_train_mode_slim_bn_matches_the_plain_child():
    """Batch statistics and running-stat updates of a sliced BN equal a plain BN of that width."""
    space = spos_channel("slice", True)
    torch.manual_seed(1)
    net = space.build_supernet()
    arch = space.sample(random.Random(2))
    child = net.child(arch).train()
    net.train().set_active(arch)
    torch.manual_seed(3)
    x = torch.randn(4, *space.input_shape)
    net.dropout.p = child.dropout.p = 0.0
    torch.testing.assert_close(net(x), child(x), rtol=0, atol=1e-5)
    net.eval()
    child.eval()
    torch.testing.assert_close(net(x), child(x), rtol=0, atol=1e-5)


def test_recalibration_per_width_equals_recalibrating_the_child():
    space = spos_channel("slice")
    net = space.build_supernet()
    _randomize_bn(net)
    batches = [(torch.randn(8, *space.input_shape), None) for _ in range(3)]
    x = torch.randn(4, *space.input_shape)
    outs = []
    for arch in (space.sample(random.Random(7)), space.sample(random.Random(8))):
        child = net.child(arch)
        net.set_active(arch)
        recalibrate_bn(net, batches)
        recalibrate_bn(child, batches)
        net.eval()
        torch.testing.assert_close(net(x), child.eval()(x), rtol=0, atol=1e-5)
        outs.append(net(x))
    assert not torch.allclose(outs[0], outs[1])


def test_per_width_bn_keeps_each_widths_statistics_apart():
    space = spos_channel("per_width")
    net = space.build_supernet().train()
    sbn = net.layers[0].candidates["shuffle3"].branch_main[1]
    assert isinstance(sbn, SwitchableBatchNorm2d)
    widths = space.decisions[1].options
    arch = Architecture([widths[2] if i == 1 else d.options[0] for i, d in enumerate(space.decisions)])
    before = {w: sbn.bns[w].running_mean.clone() for w in widths}
    net.set_active(arch)
    net(torch.randn(4, *space.input_shape))
    moved = [w for w in widths if not torch.equal(sbn.bns[w].running_mean, before[w])]
    assert moved == [widths[2]]


def test_width_errors_name_the_problem():
    with pytest.raises(ArchitectureError, match="distinct positive"):
        WidthDecision("w", (4, 4))
    with pytest.raises(ArchitectureError, match="multi"):
        WidthDecision("w", (4, 8), multi=True)
    space = CoupledSpace()
    with pytest.raises(ArchitectureError, match="not allowed"):
        space.parse("7-c3-5-c3-3")
    net = space.build_supernet()
    with pytest.raises(ArchitectureError, match="width"):
        net.set_active(Architecture(["6", "c3", frozenset({"5", "8"}), "c3", "3"]))
    conv = SlimConv2d(4, 4, 3, depthwise=True, in_source=0)
    with pytest.raises(NascoreError, match="outside 1..4"):
        conv.set_width(0, 9)


def test_block_only_shufflenet_is_unchanged():
    """Without channel_scales the space keeps its decisions, state-dict keys and chain layout."""
    plain = ShuffleNetSpace(stem_channels=8, stage_depths=[2, 2], stage_channels=[16, 32], last_channels=48,
                            input_shape=(1, 16, 16))
    assert not any(isinstance(d, WidthDecision) for d in plain.decisions)
    net = plain.build_supernet()
    assert net.chain_layout() is not None
    assert not [m for m in net.modules() if isinstance(m, SlimModule)]
    chan = spos_channel().build_supernet()
    assert chan.chain_layout() is None  # paths run whole under channel search
    assert fvcore_macs(net.child(plain.first()), plain.input_shape) == plain.cost_table().macs(plain.first())


def test_largest_arch_takes_the_most_channels_and_the_costliest_ops():
    from nascore.methods.teacher import largest_arch

    space = CoupledSpace()
    table = space.cost_table()
    big = largest_arch(space, table)
    assert big.ops[0] == "8" and big.ops[2] == "8" and big.ops[4] == "12"
    assert table.macs(big) == max(table.macs(a) for a in space.enumerate())


# -- labelled options, width multiples and per-width BN as the decision's own parameters -----------
class LabelledSpace(SearchSpace):
    """stem (k) → op block (stride 2, 2k: ``out_scale=2``) → pool → linear(2k → 4); options ``a/b/c``
    label k = 2/3/5 (as PWKD's ``w25``… label its widths); the stem's BN is one BN per width."""

    name = "labelled"

    def __init__(self) -> None:
        super().__init__([WidthDecision("w", ("a", "b", "c"), channels=(2, 3, 5)), Decision("op", ("c3", "c5"))],
                         input_shape=(2, 10, 10), num_classes=4)

    def build_supernet(self) -> Supernet:
        return LabelledNet(self)


class LabelledNet(Supernet):
    def __init__(self, space: LabelledSpace) -> None:
        super().__init__(space)
        d = space.decisions[0]
        self.stem = SlimConv2d(2, 5, 3, 1, 1, out_source=0)
        self.stem_bn = SwitchableBatchNorm2d(d.channels, labels=d.options, source=0, affine=True)
        self.block = ChoiceLayer({o: nn.Sequential(
            SlimConv2d(5, 10, k, 2, k // 2, in_source=0, out_source=0, out_scale=2, bias=True),
            SlimBatchNorm2d(10, source=0, scale=2),
            SlimConv2d(10, 10, 3, 1, 1, depthwise=True, in_source=0, in_scale=2),
            SwitchableBatchNorm2d(d.channels, labels=d.options, source=0, scale=2)) for o, k in (("c3", 3), ("c5", 5))})
        self.fc = SlimLinear(10, 4, in_source=0, in_scale=2)
        self.bind(1, "block")

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.block(torch.relu(self.stem_bn(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


def test_labelled_options_and_width_multiples_are_exact():
    space = LabelledSpace()
    assert space.decisions[0].channels == (2, 3, 5) and space.parse("b-c5").ops == ("b", "c5")
    rows = check_table(space, list(space.enumerate()))
    assert len(rows) == 6 and all(r["ok"] for r in rows), rows
    assert len({r["fvcore_macs"] for r in rows}) == 6
    torch.manual_seed(0)
    net = space.build_supernet()
    _randomize_bn(net)
    net.eval()
    x = torch.randn(3, *space.input_shape)
    arch = space.parse("b-c5")
    child = net.child(arch).eval()
    conv = child.block.candidates["c5"][0]
    assert isinstance(conv, nn.Conv2d) and (conv.in_channels, conv.out_channels) == (3, 6)  # k in, 2k out
    assert child.fc.in_features == 6 and child.block.candidates["c5"][3].num_features == 6
    net.set_active(arch)
    torch.testing.assert_close(child(x), net(x), rtol=0, atol=1e-6)
    with pytest.raises(ArchitectureError, match="no option '3'"):
        space.decisions[0].channels_of("3")
    with pytest.raises(ArchitectureError, match="labels"):
        WidthDecision("w", ("a", "b"), channels=(2, 3, 5))
    with pytest.raises(NascoreError, match="width 12 is outside 1..10"):
        SlimConv2d(5, 10, 3, out_source=0, out_scale=2).set_width(0, 6)
    with pytest.raises(NascoreError, match="positive integer"):
        SlimBatchNorm2d(4, source=0, scale=0)


def test_per_width_bn_is_active_only_on_its_own_width():
    """A width's active parameters hold its own BN of every switchable layer and no other width's, and
    grad clearing (``inactive_parameters``) takes the other widths' BNs — also inside the chosen op."""
    space = LabelledSpace()
    net = space.build_supernet()
    for arch in space.enumerate():
        w, op = arch.ops
        active = {n for n, _ in net.active_parameters(arch)}
        inactive = {id(p) for p in net.inactive_parameters(arch)}
        for name, p in net.named_parameters():
            own_op = not name.startswith("block.") or name.startswith(f"block.candidates.{op}.")
            own_width = ".bns." not in name or f".bns.{w}." in name
            assert (name in active) == (own_op and own_width) == (id(p) not in inactive), (arch, name)
    spos = spos_channel("per_width", affine=True)
    snet = spos.build_supernet()
    arch = spos.sample(random.Random(3))
    active = {n for n, _ in snet.active_parameters(arch)}
    sbn = [n for n in active if ".bns." in n]
    mid = {f".bns.{o}." for o, d in zip(arch.ops, spos.decisions) if isinstance(d, WidthDecision)}
    assert sbn and all(any(m in n for m in mid) for n in sbn)
