"""Prefix sharing in the ``accuracy`` evaluator (nascore.prefix): the same scores as plain evaluation,
bit for bit, on every chain space; the memory-budget fallback; fallbacks for cells, broken layouts and
in-place modules; resume mid-search; and the SPOS recipe picking the same architecture."""

from __future__ import annotations

import random
import types
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from nascore.builtin.accuracy import AccuracyConfig, AccuracyEvaluator
from nascore.builtin.evolution import EvolutionConfig, EvolutionSearch
from nascore.builtin.tiny import TinyChainSpace, TinyChainSupernet, _tiny_op
from nascore.space import ChainLayout
from nascore.testing import make_context, tiny_config

SMALL_SHUFFLE = {"name": "shufflenet", "options": {"stem_channels": 8, "stage_depths": [1, 1, 2, 1],
                                                    "stage_channels": [16, 32, 64, 128], "last_channels": 64}}
SMALL_MOBILE = {"name": "mobilenet", "options": {"stage_depths": [1, 2, 1], "stage_channels": [8, 16, 24],
                                                  "stage_strides": [1, 2, 2], "last_channels": 32, "head_channels": 32}}
CHAIN_SPACES = {"tiny_chain": {"name": "tiny_chain"}, "tiny_matched": {"name": "tiny_matched"},
                "mobilenet": SMALL_MOBILE, "shufflenet": SMALL_SHUFFLE}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _ctx(space: dict):
    ctx = make_context(tiny_config(space=space))
    net = ctx.supernet
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # distinct stored BN statistics, so skipping a reset would show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return ctx


def _archs(ctx, n: int = 10, seed: int = 0):
    rng = random.Random(seed)
    base = [ctx.space.sample(rng) for _ in range(n)]
    return base + [ctx.space.mutate(a, 0.3, rng) for a in base[: n // 2]]


def _plain(ctx, archs, **opts):
    return AccuracyEvaluator(AccuracyConfig(share_prefixes=False, **opts)).score(archs, ctx)


@pytest.mark.parametrize("bn", [{}, {"bn_momentum": 0.1}, {"bn_mode": "stored"}, {"bn_mode": "batch"}],
                         ids=["cumulative", "ema", "stored", "batch"])
@pytest.mark.parametrize("space", list(CHAIN_SPACES))
def test_shared_scores_equal_plain_bit_for_bit_on_every_chain_space(space, bn):
    ctx = _ctx(CHAIN_SPACES[space])
    archs = _archs(ctx)
    opts = dict(recal_batches=3, eval_batches=2, **bn)
    ev = AccuracyEvaluator(AccuracyConfig(**opts))
    torch.manual_seed(0)  # (train-mode dropout in bn_mode=batch draws from the global RNG, in plain evaluation too)
    shared = ev.score(archs[:8], ctx) + ev.score(archs[8:], ctx)  # two calls: the second reuses the first's nodes
    torch.manual_seed(0)
    plain = _plain(ctx, archs, **opts)
    assert shared == plain  # floats compared exactly (loss too), not approximately
    if bn.get("bn_mode") == "batch" and space == "shufflenet":  # train-mode dropout: whole paths, given order
        assert "dropout" in ev._why_plain
        return
    assert ev._why_plain is None
    st = ev.sharing.stats
    assert st["steps_reused"] > 0 and st["tail_runs"] == 0
    # shared work: fewer steps than whole paths would run (one per layer per candidate, plus the stem)
    assert st["steps_run"] < len(set(archs)) * (len(ctx.space) + 1)


def test_recalibration_is_per_prefix_not_per_module():
    """Two candidates using the same op at layer 2 after different prefixes need different BN
    statistics there: the shared path must not reuse the first one's."""
    ctx = _ctx({"name": "tiny_chain"})
    a = ctx.space.parse("conv3-conv3-conv5-conv5")
    b = ctx.space.parse("skip-conv5-conv5-conv5")
    ev = AccuracyEvaluator(AccuracyConfig(recal_batches=3, eval_batches=2))
    got = ev.score([a, b], ctx)
    assert got == _plain(ctx, [a, b], recal_batches=3, eval_batches=2)
    assert got[0]["loss"] != got[1]["loss"]


def test_over_budget_runs_the_rest_of_each_path_plainly_and_below_the_stem_falls_back():
    ctx = _ctx(SMALL_SHUFFLE)
    archs = _archs(ctx)
    opts = dict(recal_batches=3, eval_batches=2)
    plain = _plain(ctx, archs, **opts)
    roomy = AccuracyEvaluator(AccuracyConfig(**opts))
    assert roomy.score(archs, ctx) == plain
    size = roomy.sharing._depth_bytes  # bytes of a node after step j (0: the stem)
    batches = sum(x.numel() * 4 + y.numel() * 8 for x, y in roomy._batches_val[1] + roomy._batches_val[0])
    # room for the batches, the stem's node and one layer's: the rest of each path runs as a tail
    tight = AccuracyEvaluator(AccuracyConfig(prefix_cache_mb=(batches + size[0] + size[1] + size[2] // 2) / 2**20,
                                             **opts))
    assert tight.score(archs, ctx) == plain
    assert tight.sharing.stats["tail_runs"] > 0 and tight.sharing.held <= tight.sharing.budget
    # the batches fit, the stem's outputs do not: plain evaluation, said so
    tiny = AccuracyEvaluator(AccuracyConfig(prefix_cache_mb=(batches + 1024) / 2**20, **opts))
    assert tiny.score(archs, ctx) == plain
    assert "stem" in tiny._why_plain and tiny.sharing.stats["steps_run"] <= 1
    # not even the batches fit: streamed as before
    none = AccuracyEvaluator(AccuracyConfig(prefix_cache_mb=0, **opts))
    assert none.score(archs, ctx) == plain and none._batches_val is None


def test_kept_nodes_are_the_best_candidates_and_are_dropped_when_weights_change():
    ctx = _ctx({"name": "tiny_chain"})
    archs = list(ctx.space.enumerate())[:27]
    ev = AccuracyEvaluator(AccuracyConfig(recal_batches=2, eval_batches=1))
    scores = ev.score(archs, ctx)
    best = archs[max(range(len(archs)), key=lambda i: scores[i]["acc"])]
    full = tuple(best.ops)
    assert full in ev.sharing.nodes
    before = ev.sharing.stats["steps_reused"]
    ev.cache.clear()
    assert ev.score([best], ctx) == [scores[archs.index(best)]]
    assert ev.sharing.stats["steps_reused"] > before  # served from kept nodes
    with torch.no_grad():
        ctx.supernet.head.weight.add_(0.01)  # the weights changed: kept activations are stale
    ev.cache.clear()
    new = ev.score([best], ctx)
    assert new == _plain(ctx, [best], recal_batches=2, eval_batches=1)


def test_cell_spaces_fall_back_to_plain_evaluation():
    ctx = make_context(tiny_config(space={"name": "tiny_cell"}))
    archs = _archs(ctx, 4)
    ev = AccuracyEvaluator(AccuracyConfig(recal_batches=2, eval_batches=1))
    assert ev.score(archs, ctx) == _plain(ctx, archs, recal_batches=2, eval_batches=1)
    assert "chain_layout" in ev._why_plain


def _bare_ctx(space):
    """What the evaluator reads from a run context, for a space no registry knows."""
    data = make_context(tiny_config()).data
    assert tuple(data.input_shape) == tuple(space.input_shape)
    torch.manual_seed(0)
    return types.SimpleNamespace(supernet=space.build_supernet(), space=space, data=data, device="cpu", smoke=False)


class _InPlaceSpace(TinyChainSpace):
    """A third-party chain space opting in, whose 'relu_' op rewrites its input in place."""

    def build_supernet(self):
        def make(name, c, affine):
            return nn.ReLU(inplace=True) if name == "relu_" else _tiny_op(name, c, affine)
        return TinyChainSupernet(self, make_op=make)


class _WrongLayoutSupernet(TinyChainSupernet):
    def chain_layout(self) -> ChainLayout:  # forgets the downsampling between the halves
        layout = super().chain_layout()
        return ChainLayout(tuple(i for i in layout.items if i[0] != "down"), layout.head, layout.head_fn)


class _WrongLayoutSpace(TinyChainSpace):
    def build_supernet(self):
        return _WrongLayoutSupernet(self)


@pytest.mark.parametrize("space_cls,ops,why", [(_InPlaceSpace, ("conv3", "relu_"), "in place"),
                                                (_WrongLayoutSpace, ("conv3", "conv5", "skip"), "reproduce")])
def test_a_layout_that_is_wrong_or_meets_in_place_ops_falls_back(space_cls, ops, why):
    space = space_cls(layers=4, width=8, ops=ops, input_shape=(1, 16, 16))
    ctx = _bare_ctx(space)
    archs = list(space.enumerate())
    ev = AccuracyEvaluator(AccuracyConfig(recal_batches=2, eval_batches=1))
    got = ev.score(archs, ctx)
    assert got == _plain(ctx, archs, recal_batches=2, eval_batches=1)
    assert why in ev._why_plain


def test_third_party_chain_space_opts_in_with_chain_layout():
    """A supernet of another package shares prefixes by defining chain_layout() (here: tiny's, on
    a new space class), with the same scores."""
    space = TinyChainSpace(layers=6, ops=("conv3", "conv1", "skip"), input_shape=(1, 16, 16))
    ctx = _bare_ctx(space)
    archs = list(space.enumerate())[:60]
    ev = AccuracyEvaluator(AccuracyConfig(recal_batches=2, eval_batches=1))
    assert ev.score(archs, ctx) == _plain(ctx, archs, recal_batches=2, eval_batches=1)
    assert ev._why_plain is None and ev.sharing.stats["steps_run"] < 60 * 7 / 2


class _Killed(Exception):
    pass


class _DiesAfter(AccuracyEvaluator):
    calls = 0
    limit = 10**9

    def score(self, archs, ctx):
        type(self).calls += 1
        if type(self).calls > self.limit:
            raise _Killed
        return super().score(archs, ctx)


def _search(ctx, ev, fresh=True):
    ctx.stage_key = "1"
    if fresh:
        ctx.state.get("evolution", {}).pop("1", None)
    sel = EvolutionSearch(EvolutionConfig(population=12, generations=4, top_k=4, mutations=6, crossovers=4))
    return [(c.arch_str, c.score, c.metrics) for c in sel.search(ctx, ev).candidates]


def test_resume_mid_search_with_sharing_gives_the_plain_result():
    ctx = _ctx({"name": "tiny_matched"})
    opts = dict(recal_batches=2, eval_batches=1)
    ref = _search(ctx, AccuracyEvaluator(AccuracyConfig(share_prefixes=False, **opts)))
    assert ref == _search(ctx, AccuracyEvaluator(AccuracyConfig(**opts)))
    _DiesAfter.calls, _DiesAfter.limit = 0, 7  # killed in generation 2 (3 score() calls per generation)
    with pytest.raises(_Killed):
        _search(ctx, _DiesAfter(AccuracyConfig(**opts)))
    assert 0 < ctx.state["evolution"]["1"]["generation"] < 4
    _DiesAfter.limit = 10**9
    assert _search(ctx, _DiesAfter(AccuracyConfig(**opts)), fresh=False) == ref  # a fresh evaluator, empty trie


def test_spos_smoke_run_picks_the_same_architecture_with_sharing_on_and_off():
    import nascore_spos.plugin as spos
    from nascore.testing import run_config

    recipe = Path(spos.__file__).parent / "recipes" / "spos.yaml"
    cfg = yaml.safe_load(recipe.read_text())
    cfg["device"] = "cpu"
    cfg["stages"] = cfg["stages"][:2]
    out = {}
    for share in (True, False):
        cfg["stages"][1]["evaluator"]["options"]["share_prefixes"] = share
        ctx = run_config(cfg, None, plugins=[spos], smoke=True)
        out[share] = [(c.arch_str, c.score, c.metrics) for c in ctx.candidates]
    assert out[True] == out[False] and len(out[True]) > 1
