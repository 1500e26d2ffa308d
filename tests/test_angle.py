"""The ``angle`` evaluator (ABS/RLNAS) and the W0 record it measures from (``ctx.initial_weights``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nascore.arch import Architecture
from nascore.builtin.angle import AngleConfig, AngleEvaluator, cell_paths, weight_vectors
from nascore.builtin.nb201 import tiny_cell_space
from nascore.io import load_torch
from nascore.pipeline.run import resume_run
from nascore.space import ChoiceLayer, Decision, SearchSpace, Supernet
from nascore.testing import make_context, run_config, tiny_config

torch.set_num_threads(1)


def _perturb(net: nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _explicit_angle(v0: torch.Tensor, vt: torch.Tensor) -> float:
    if v0.numel() == 0:
        return 0.0
    cos = float(torch.dot(v0, vt) / (v0.norm() * vt.norm()))
    return math.acos(max(-1.0, min(1.0, cos)))


# -- a two-layer toy whose angles are computed by hand ------------------------------------------
class ToySpace(SearchSpace):
    name = "toy"

    def __init__(self) -> None:
        super().__init__([Decision("l0", ("lin", "skip")), Decision("l1", ("lin", "skip"))],
                         input_shape=(2, 1, 1), num_classes=1)

    def build_supernet(self) -> "ToyNet":
        return ToyNet(self)


class ToyNet(Supernet):
    """l0: Linear(2,2) no bias | skip; l1: Linear(2,2) with bias | skip; BN (left out); head Linear(2,1)."""

    def __init__(self, space: ToySpace) -> None:
        super().__init__(space)
        self.layers = nn.ModuleList([
            ChoiceLayer({"lin": nn.Linear(2, 2, bias=False), "skip": nn.Identity()}),
            ChoiceLayer({"lin": nn.Linear(2, 2, bias=True), "skip": nn.Identity()}),
        ])
        self.bn = nn.BatchNorm1d(2)
        self.head = nn.Linear(2, 1, bias=False)
        self.bind(0, "layers.0")
        self.bind(1, "layers.1")

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.head(self.bn(self.layers[1](self.layers[0](x))))


def _set(net: ToyNet, l0: list, l1w: list, l1b: list, head: list, bn: list) -> None:
    with torch.no_grad():
        net.layers[0].candidates["lin"].weight.copy_(torch.tensor(l0, dtype=torch.float32))
        net.layers[1].candidates["lin"].weight.copy_(torch.tensor(l1w, dtype=torch.float32))
        net.layers[1].candidates["lin"].bias.copy_(torch.tensor(l1b, dtype=torch.float32))
        net.head.weight.copy_(torch.tensor(head, dtype=torch.float32))
        net.bn.weight.copy_(torch.tensor(bn, dtype=torch.float32))


@pytest.fixture
def toy() -> tuple[ToyNet, dict[str, torch.Tensor]]:
    net = ToySpace().build_supernet()
    _set(net, [[1, 0], [0, 1]], [[1, 1], [0, 0]], [0, 0], [[1, 0]], [1, 1])
    w0 = net.snapshot()
    _set(net, [[1, 1], [0, 1]], [[1, 1], [0, 0]], [1, 0], [[0, 1]], [5, -3])
    return net, w0


def test_angle_matches_hand_computation_on_a_two_layer_toy(toy: tuple[ToyNet, dict]) -> None:
    net, w0 = toy
    ev = AngleEvaluator()
    lin_skip, skip_skip, lin_lin = (Architecture(["lin", "skip"]), Architecture(["skip", "skip"]),
                                    Architecture(["lin", "lin"]))
    got = ev.angles(net, w0, [lin_skip, skip_skip, lin_lin])
    # (lin, skip): V0 = [1,0,0,1 | 1,0], Vt = [1,1,0,1 | 0,1]: <.,.> = 2, |V0|² = 3, |Vt|² = 4
    assert got[0] == pytest.approx(math.acos(2 / math.sqrt(12)), abs=1e-12)
    # (skip, skip): identity appends nothing; only the head: [1,0] vs [0,1]
    assert got[1] == pytest.approx(math.pi / 2, abs=1e-12)
    # (lin, lin): V0 = [1,0,0,1 | 1,1,0,0, 0,0 | 1,0], Vt = [1,1,0,1 | 1,1,0,0, 1,0 | 0,1]; BN left out
    assert got[2] == pytest.approx(math.acos(4 / math.sqrt(5 * 7)), abs=1e-12)
    # without biases (the ABS chain code): Vt loses the bias [1,0] -> |Vt|² = 6
    nob = AngleEvaluator(AngleConfig(bias=False)).angles(net, w0, [lin_lin])[0]
    assert nob == pytest.approx(math.acos(4 / math.sqrt(5 * 6)), abs=1e-12)
    # with the BN affine parameters (RLNAS NB-201 code): + [1,1 | 0,0] vs [5,-3 | 0,0]
    withbn = AngleEvaluator(AngleConfig(norm_params=True)).angles(net, w0, [lin_lin])[0]
    assert withbn == pytest.approx(math.acos((4 + 2) / math.sqrt((5 + 2) * (7 + 34))), abs=1e-12)
    # only the chosen ops (fixed: false): (lin, skip) -> [1,0,0,1] vs [1,1,0,1]; (skip, skip) is empty -> 0
    ops_only = AngleEvaluator(AngleConfig(fixed=False)).angles(net, w0, [lin_skip, skip_skip])
    assert ops_only[0] == pytest.approx(math.acos(2 / math.sqrt(2 * 3)), abs=1e-12)
    assert ops_only[1] == 0.0


def test_angle_is_zero_when_unchanged_and_invariant_to_positive_scaling() -> None:
    for space in ("tiny_chain", "tiny_cell"):
        ctx = make_context(tiny_config(space={"name": space}))
        net, archs = ctx.supernet, list(ctx.space.enumerate())
        ev = AngleEvaluator()
        assert ev.score(archs, ctx) == [{"angle": 0.0}] * len(archs)  # exactly 0: W0 == Wt
        _perturb(net)
        before = ev.angles(net, ctx.initial_weights, archs)
        assert min(before) > 0.01
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(3.7)
        after = ev.angles(net, ctx.initial_weights, archs)
        assert max(abs(a - b) for a, b in zip(before, after)) < 1e-6
        # it tells architectures apart (cells differing only in skip vs none off every live path share a vector)
        assert len(set(round(a, 9) for a in before)) >= 6


def test_fast_angles_equal_the_explicit_weight_vectors() -> None:
    """The per-parameter sums give the same angle as concatenating the vectors, chain and cell."""
    for space in ({"name": "tiny_chain"}, {"name": "tiny_cell", "options": {"ops": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]}}):
        ctx = make_context(tiny_config(space=space))
        net = ctx.supernet
        _perturb(net, seed=3, scale=0.1)
        archs = list(ctx.space.enumerate())
        got = AngleEvaluator().angles(net, ctx.initial_weights, archs)
        for arch, a in zip(archs, got):
            v0, vt = weight_vectors(net, ctx.initial_weights, arch)
            assert a == pytest.approx(_explicit_angle(v0, vt), abs=1e-9), ctx.space.format(arch)


def test_cell_vector_is_built_per_path_as_in_rlnas() -> None:
    """Algorithm 1 of ABS / RLNAS weight_angle.py on tiny_cell (edges 1<-0, 2<-0, 2<-1)."""
    space = tiny_cell_space(ops=("none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3"))
    assert cell_paths(3) == [[0, 1, 2], [0, 2]]
    assert cell_paths(4) == [[0, 1, 2, 3], [0, 1, 3], [0, 2, 3], [0, 3]]
    net = space.build_supernet()
    w0 = net.snapshot()
    _perturb(net, seed=1, scale=0.1)
    wt = dict(net.named_parameters())
    cells = ["body.0", "body.2"]  # body.1 is the reduction block
    fixed = ["stem.0.weight", "body.1.conv_a.op.1.weight", "body.1.conv_b.op.1.weight",
             "body.1.downsample.1.weight", "classifier.weight", "classifier.bias"]

    def conv(cell: str, edge: str) -> str:
        return f"{cell}.edges.{edge}.candidates.nor_conv_3x3.op.1.weight"

    def vec(names: list[str], src: dict) -> torch.Tensor:
        return torch.cat([src[n].detach().reshape(-1).double() for n in names])

    def angle_of(names: list[str], consts: int = 0, k: int = 9) -> float:
        pool = torch.full((consts,), 1.0 / k, dtype=torch.float64)
        return _explicit_angle(torch.cat([vec(names, w0), pool]), torch.cat([vec(names, wt), pool]))

    ev = AngleEvaluator()
    # conv on 1<-0 and 2<-1, skip on 2<-0: path 0-1-2 gives both convs per cell; path 0-2 nothing
    arch = space.parse("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|")
    names = fixed + [n for c in cells for n in (conv(c, "e1_0"), conv(c, "e2_1"))]
    assert ev.angles(net, w0, [arch])[0] == pytest.approx(angle_of(names), abs=1e-9)
    # none on 1<-0 cuts path 0-1-2 (its conv on 2<-1 appends nothing); conv on 2<-0 remains
    arch = space.parse("|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|")
    names = fixed + [conv(c, "e2_0") for c in cells]
    assert ev.angles(net, w0, [arch])[0] == pytest.approx(angle_of(names), abs=1e-9)
    # pooling is a constant C x 3 x 3 kernel of 1/9 (C = 8, then 16 channels), the same in W0 and Wt
    arch = space.parse("|avg_pool_3x3~0|+|nor_conv_3x3~0|skip_connect~1|")
    names = fixed + [conv(c, "e2_0") for c in cells]
    assert ev.angles(net, w0, [arch])[0] == pytest.approx(angle_of(names, consts=(8 + 16) * 9), abs=1e-9)
    # every path cut: angle 0 (not a valid cell, but the rule holds)
    assert ev.angles(net, w0, [Architecture(["none", "none", "none"])]) == [0.0]


def test_nb201_edge_on_two_live_paths_counts_twice() -> None:
    from nascore.builtin.nb201 import nb201_space

    space = nb201_space(C=4, n_cells=1, input_shape=(1, 8, 8))
    net = space.build_supernet()
    w0 = net.snapshot()
    _perturb(net, seed=2, scale=0.1)
    wt = dict(net.named_parameters())
    norm = {id(p) for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters(recurse=False)}
    fixed = [n for n, p in net.named_parameters() if ".edges." not in n and id(p) not in norm]
    # live paths 0-1-2-3 (1<-0, 2<-1, 3<-2) and 0-1-3 (1<-0, 3<-1); 2<-0 and 3<-0 are none
    arch = space.parse("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    cells = [n for n, m in net.named_modules() if n.startswith("body.") and n.count(".") == 1 and hasattr(m, "edges")]
    assert len(cells) == 3
    names = list(fixed)
    for c in cells:
        conv = [f"{c}.edges.{e}.candidates.nor_conv_3x3.op.1.weight" for e in ("e1_0", "e2_1", "e3_2", "e1_0", "e3_1")]
        names += conv
    v0 = torch.cat([w0[n].reshape(-1).double() for n in names])
    vt = torch.cat([wt[n].detach().reshape(-1).double() for n in names])
    got = AngleEvaluator().angles(net, w0, [arch])[0]
    assert got == pytest.approx(_explicit_angle(v0, vt), abs=1e-9)


def test_angle_reads_no_data_and_needs_w0() -> None:
    ctx = make_context(tiny_config())
    _perturb(ctx.supernet)
    before = list(ctx.data.access_log)
    ev = ctx.registry.get("evaluator", "angle").build({}, ctx)
    assert ev.metric == "angle" and ev.higher_is_better
    ev.score(list(ctx.space.enumerate())[:5], ctx)
    assert ctx.data.access_log == before


def test_initial_weights_are_recorded_before_training_and_survive_resume(tmp_path: Path) -> None:
    cfg = tiny_config(stages=[{"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}}])
    ctx = run_config(cfg, tmp_path / "run")
    w0 = ctx.initial_weights
    fresh = make_context(cfg).supernet.state_dict()  # the seeded build, before any training
    assert all(torch.equal(w0[k], fresh[k]) for k in fresh)
    trained = ctx.supernet.state_dict()
    assert any(not torch.equal(w0[k].float(), trained[k].float()) for k in trained if k.endswith("weight"))
    on_disk = load_torch(tmp_path / "run" / "checkpoints" / "w0.pt")["supernet"]
    assert all(torch.equal(w0[k], on_disk[k]) for k in w0)
    # replacing W0 (ABS's option, a re-initialisation) persists; a resumed run reads it back
    ctx.set_initial_weights()
    again = resume_run(tmp_path / "run", quiet=True)
    try:
        assert all(torch.equal(again.initial_weights[k], trained[k].cpu()) for k in trained)
        assert AngleEvaluator().score(list(again.space.enumerate())[:3], again) == [{"angle": 0.0}] * 3
    finally:
        again.log.close()


def test_random_label_view_keeps_the_true_labels_for_retraining() -> None:
    ctx = make_context(tiny_config(dataset={"name": "mnist5k"}, data={"batch_size": 32, "random_labels": True}))
    data = ctx.data
    real = data.with_true_labels()
    assert real is not data and real.train_labels is None and real.with_true_labels() is real
    (_, y_rand), = data.batches("train", limit=1)
    (_, y_true), = real.batches("train", limit=1)
    assert not torch.equal(y_rand, y_true)
    assert real.access_log is data.access_log
