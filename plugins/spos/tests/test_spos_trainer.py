"""The behaviour that defines SPOS training: how paths are sampled, and that unused ops never move."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch
from pydantic import ValidationError

import nascore_spos.plugin as spos_plugin
from nascore.arch import Architecture
from nascore.testing import make_context, tiny_config
from nascore.trainer import make_optimizer, rng_from_json, rng_state_json
from nascore_spos.trainer import SposConfig, SposTrainer, fair_cycle, quantile

torch.set_num_threads(1)


def chi2_critical(df: int, z: float = 3.09) -> float:
    """Upper chi-square quantile by Wilson-Hilferty (z = 3.09: alpha = 0.001)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2_stat(counts: list[int], expected: list[float]) -> float:
    return sum((c - e) ** 2 / e for c, e in zip(counts, expected))


def context(layers: int = 4, **overrides):
    cfg = tiny_config(space={"name": "tiny_chain", "options": {"layers": layers}}, **overrides)
    return make_context(cfg, plugins=[spos_plugin])


def trainer_for(ctx, seed: int = 0, **options) -> SposTrainer:
    tr = SposTrainer(SposConfig(**options), ctx)
    tr.rng = random.Random(seed)
    tr.setup(ctx)
    return tr


def test_wilson_hilferty_matches_table() -> None:
    # chi2.ppf(0.999, 80) = 124.84; chi2.ppf(0.999, 3) = 16.27 (tables)
    assert chi2_critical(80) == pytest.approx(124.84, abs=0.2)
    assert chi2_critical(3) == pytest.approx(16.27, abs=0.3)


def test_uniform_sampler_is_uniform_over_architectures() -> None:
    ctx = context()
    tr = trainer_for(ctx, sampler="uniform")
    archs = list(ctx.space.enumerate())
    n = 100 * len(archs)
    counts = Counter(tr.sample_arch(ctx) for _ in range(n))
    assert set(counts) <= set(archs)
    stat = chi2_stat([counts[a] for a in archs], [n / len(archs)] * len(archs))
    assert stat < chi2_critical(len(archs) - 1), stat
    # and per layer: each op a third of the time
    for i in range(len(ctx.space)):
        per = Counter(a[i] for a in counts.elements())
        assert chi2_stat([per[o] for o in ctx.space.allowed[i]], [n / 3] * 3) < chi2_critical(2)


def test_chi_square_has_power_binned_sampler_is_not_uniform_over_archs() -> None:
    """Negative control: the same test rejects a sampler that is uniform over MACs instead."""
    ctx = context()
    tr = trainer_for(ctx, sampler="flops_binned", bins=4)
    archs = list(ctx.space.enumerate())
    n = 100 * len(archs)
    counts = Counter(tr.sample_arch(ctx) for _ in range(n))
    assert chi2_stat([counts[a] for a in archs], [n / len(archs)] * len(archs)) > chi2_critical(len(archs) - 1)


def test_flops_binned_draws_bins_uniformly_and_respects_them() -> None:
    ctx = context(layers=6)
    tr = trainer_for(ctx, sampler="flops_binned", bins=5)
    edges = tr.edges
    assert len(edges) == 6 and edges == sorted(edges)
    macs = sorted(ctx.cost.macs(a) for a in ctx.space.enumerate())
    assert edges[0] == pytest.approx(quantile([float(m) for m in macs], 0.02))
    n = 3000
    hits = Counter()
    for _ in range(n):
        m = ctx.cost.macs(tr.sample_arch(ctx))
        inside = [b for b in range(5) if edges[b] <= m <= edges[b + 1]]
        assert inside, f"{m} MACs is in no bin {edges}"
        hits[inside[0]] += 1
    assert tr.fallbacks == 0
    assert sum(tr.bin_hits) == n
    # each bin chosen uniformly: 1/5 of the draws (a bin's boundary arch may count for its lower neighbour)
    assert chi2_stat(tr.bin_hits, [n / 5] * 5) < chi2_critical(4)
    # it flattens the MACs distribution: the smallest-MACs bin gets far more than uniform sampling gives it
    uniform_share = sum(1 for m in macs if edges[0] <= m <= edges[1]) / len(macs)
    assert tr.bin_hits[0] / n > 1.5 * uniform_share


def test_flops_binned_falls_back_to_an_unconstrained_arch_after_max_tries() -> None:
    ctx = context()
    lo = ctx.cost.bounds()[1] + 1000  # above the largest architecture: no bin can be hit
    tr = trainer_for(ctx, sampler="flops_binned", bin_range=(lo, lo + 10), max_tries=7)
    archs = [tr.sample_arch(ctx) for _ in range(20)]
    assert tr.fallbacks == 20 and sum(tr.bin_hits) == 0
    assert all(ctx.space.contains(a) for a in archs)


def _op_counts(archs: list[Architecture], space) -> list[Counter]:
    return [Counter(a[i] for a in archs) for i in range(len(space))]


def test_fair_sampler_is_exactly_fair_after_every_cycle() -> None:
    ctx = context()
    tr = trainer_for(ctx, sampler="fair")
    seen: list[Architecture] = []
    for cycle in range(1, 31):
        block = [tr.sample_arch(ctx) for _ in range(3)]
        for i in range(len(ctx.space)):  # within a cycle each layer runs a permutation of its ops
            assert sorted(a[i] for a in block) == sorted(ctx.space.allowed[i])
        seen += block
        for per in _op_counts(seen, ctx.space):
            assert set(per.values()) == {cycle}
    assert tr.cycles == 30
    assert len(set(seen)) > 20  # and the paths themselves vary


def test_fair_sampler_with_unequal_option_counts() -> None:
    ctx = context()
    ctx.space = ctx.space.restrict({0: ["conv3", "skip"]})  # 2 options here, 3 elsewhere: cycle of 6
    tr = trainer_for(ctx, sampler="fair")
    seen = [tr.sample_arch(ctx) for _ in range(6 * 10)]
    counts = _op_counts(seen, ctx.space)
    assert dict(counts[0]) == {"conv3": 30, "skip": 30}
    for per in counts[1:]:
        assert set(per.values()) == {20}
    assert all(ctx.space.contains(a) for a in seen)


def test_fair_cycle_refuses_huge_cycles() -> None:
    allowed = [tuple(f"o{j}" for j in range(n)) for n in (97, 89, 83)]
    with pytest.raises(Exception, match="cycle"):
        fair_cycle(allowed, random.Random(0))


def test_fair_sampler_state_resumes_mid_cycle() -> None:
    ctx = context()
    a = trainer_for(ctx, sampler="fair", seed=3)
    for _ in range(4):
        a.sample_arch(ctx)
    extra, rng = a.extra_state(), rng_state_json(a.rng)
    expected = [a.sample_arch(ctx) for _ in range(8)]
    b = trainer_for(ctx, sampler="fair", seed=99)
    b.load_extra_state(extra)
    b.rng = rng_from_json(rng)
    assert [b.sample_arch(ctx) for _ in range(8)] == expected


def test_bad_options_name_the_field() -> None:
    with pytest.raises(ValidationError, match="sampler"):
        SposConfig(sampler="boltzmann")
    with pytest.raises(ValidationError, match="bin_range"):
        SposConfig(sampler="flops_binned", bin_range=(5.0, 1.0))
    with pytest.raises(ValidationError, match="fair_accumulate"):
        SposConfig(sampler="uniform", fair_accumulate=True)
    for feature in ({"amp": "bf16"}, {"channels_last": True}, {"ema_decay": 0.99}, {"grad_accum_steps": 2}):
        # the fair cycle's own step loop would silently skip them
        with pytest.raises(ValidationError, match=f"fair_accumulate does not support {next(iter(feature))}"):
            SposConfig(sampler="fair", fair_accumulate=True, **feature)
    SposConfig(sampler="fair", fair_accumulate=False, amp="bf16", grad_accum_steps=2)  # one step per path: fine
    with pytest.raises(ValidationError, match="max_tries"):
        SposConfig(max_tries=0)


# -- inactive parameters -------------------------------------------------------------------------
class _TouchEverything(SposTrainer):
    """Adds ``0 * sum(all params)`` to the loss: every parameter gets a (zero) gradient tensor,
    as with DDP's unused-parameter handling or a grad-zeroing loop. Without clearing, momentum and
    weight decay then move unused ops."""

    def compute_loss(self, ctx, x, y, arch):
        loss, logits = super().compute_loss(ctx, x, y, arch)
        return loss + 0.0 * sum(p.sum() for p in ctx.supernet.parameters()), logits


def _inactive_tensors(net, arch) -> dict[str, torch.Tensor]:
    """Every weight and BN buffer of the candidates ``arch`` does not use."""
    out = {}
    for i, opt in enumerate(arch.ops):
        for layer_name in net._bindings[i]:
            layer = net.get_submodule(layer_name)
            for op, mod in layer.candidates.items():
                if op != opt:
                    for k, v in mod.state_dict().items():
                        out[f"{layer_name}.{op}.{k}"] = v.detach().clone()
    return out


def _drift_after_one_step(cls, null_inactive: bool) -> tuple[dict, dict, dict, dict]:
    ctx = context()
    ctx.stage_key = "0"
    tr = cls(SposConfig(sampler="fair", momentum=0.9, weight_decay=1e-2, decay_only_weights=False, lr=0.1,
                        null_inactive_grads=null_inactive, grad_clip=None), ctx)
    tr.rng = random.Random(0)
    tr.optimizer = make_optimizer(tr.parameters(ctx), tr.cfg)
    net = ctx.supernet.train()
    batches = list(ctx.data.batches("train", epoch=0, limit=7))
    for x, y in batches[:6]:  # two fair cycles: every op has momentum buffers by now
        tr.train_step(ctx, x, y, 100)
    assert all(p in tr.optimizer.state and "momentum_buffer" in tr.optimizer.state[p] for p in net.parameters())
    arch = tr.queue[0] if tr.queue else ctx.space.first()
    tr.queue = [arch]
    before_inactive = _inactive_tensors(net, arch)
    before_active = {n: p.detach().clone() for n, p in net.active_parameters(arch)}
    tr.train_step(ctx, *batches[6], 100)
    after_inactive = _inactive_tensors(net, arch)
    after_active = {n: p.detach().clone() for n, p in net.active_parameters(arch)}
    return before_inactive, after_inactive, before_active, after_active


@pytest.mark.parametrize("cls", [SposTrainer, _TouchEverything], ids=["plain", "zero-grads-everywhere"])
def test_unused_ops_keep_their_weights_bit_for_bit(cls) -> None:
    b_in, a_in, b_act, a_act = _drift_after_one_step(cls, null_inactive=True)
    assert b_in and b_in.keys() == a_in.keys()
    for k in b_in:
        assert torch.equal(b_in[k], a_in[k]), f"{k} moved although its op was not on the path"
    moved = [k for k in b_act if not torch.equal(b_act[k], a_act[k])]
    assert len(moved) >= len(b_act) // 2  # the path itself did train


def test_without_clearing_momentum_and_decay_move_unused_ops() -> None:
    """Control: the check above has teeth — with zero (not None) grads and no clearing, they drift."""
    b_in, a_in, _, _ = _drift_after_one_step(_TouchEverything, null_inactive=False)
    drifted = [k for k in b_in if k.endswith("weight") and not torch.equal(b_in[k], a_in[k])]
    assert drifted


def test_weight_decay_only_on_weights_by_default() -> None:
    ctx = context()
    tr = SposTrainer(SposConfig(), ctx)
    groups = tr.parameters(ctx)
    assert groups[1]["weight_decay"] == 0.0
    names = {id(p): n for n, p in ctx.supernet.named_parameters()}
    assert all(names[id(p)].endswith("weight") and p.dim() > 1 for p in groups[0]["params"])
    assert any(names[id(p)].endswith("bias") for p in groups[1]["params"])


def test_fair_accumulate_updates_every_op_once_per_step() -> None:
    ctx = context()
    ctx.stage_key = "0"
    tr = SposTrainer(SposConfig(sampler="fair", fair_accumulate=True, lr=0.1), ctx)
    tr.rng = random.Random(0)
    tr.optimizer = make_optimizer(tr.parameters(ctx), tr.cfg)
    ctx.supernet.train()
    before = {n: p.detach().clone() for n, p in ctx.supernet.named_parameters()}
    x, y = next(ctx.data.batches("train", epoch=0))
    out = tr.train_step(ctx, x, y, 10)
    assert tr.step == 1 and out["paths"] == 3 and tr.cycles == 1 and not tr.queue
    unchanged = [n for n, p in ctx.supernet.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []  # all three ops of every layer were trained in this one step


def test_spos_trainer_runs_and_resumes_in_a_pipeline(tmp_path) -> None:
    from nascore.pipeline.run import resume_run, run_pipeline
    from nascore.testing import make_registry, run_config

    stages = [{"kind": "train", "trainer": {"name": "spos", "options": {"sampler": "flops_binned", "epochs": 2,
                                                                          "steps_per_epoch": 6, "bins": 3}}}]
    reg = make_registry(spos_plugin)
    full = run_config(tiny_config(stages=stages, checkpoint_every=4), tmp_path / "a", registry=reg)
    # a run killed after its step-8 checkpoint (the end one removed), resumed: same weights as uninterrupted
    part = run_config(tiny_config(stages=stages, checkpoint_every=4), tmp_path / "b", registry=reg)
    ckpts = sorted((tmp_path / "b" / "checkpoints").glob("stage-0-*.pt"))
    assert len(ckpts) == 2  # step 8 and the end (the newest two are kept)
    ckpts[-1].unlink()
    import json

    state = json.loads((tmp_path / "b" / "state.json").read_text())
    state["completed"] = []
    (tmp_path / "b" / "state.json").write_text(json.dumps(state))
    (tmp_path / "b" / "checkpoints" / "supernet.pt").unlink()
    ctx = resume_run(tmp_path / "b", quiet=True, registry=reg)
    run_pipeline(ctx)
    ctx.log.close()
    for (k, a), (_, b) in zip(full.supernet.state_dict().items(), ctx.supernet.state_dict().items()):
        assert torch.equal(a, b), k
    del part


def test_cached_unused_params_match_the_supernet_contract() -> None:
    """The trainer's per-op parameter cache gives exactly ``Supernet.inactive_parameters``."""
    ctx = context()
    tr = trainer_for(ctx)
    net = ctx.supernet
    for arch in list(ctx.space.enumerate())[::7]:
        assert {id(p) for p in tr.unused_params(ctx, [arch])} == {id(p) for p in net.inactive_parameters(arch)}
    a, b = ctx.space.parse("conv3-conv5-skip-conv3"), ctx.space.parse("conv5-conv5-conv3-skip")
    both = {id(p) for p in net.inactive_parameters(a)} & {id(p) for p in net.inactive_parameters(b)}
    assert {id(p) for p in tr.unused_params(ctx, [a, b])} == both
