"""NEAS behaviour: ensemble forward and gradient, exact ensemble costs, canonical encoding,
diversity shrinking, K-path evolution under a whole-ensemble constraint, export."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import nascore_neas.plugin as neas_plugin
from nascore.arch import Architecture, Candidate
from nascore.config import validate
from nascore.cost import check_table, count_params
from nascore.errors import ArchitectureError, ConfigError, NascoreError
from nascore.testing import make_registry, run_config, tiny_config
from nascore_neas.ensemble import EnsembleNet, EnsembleSpace, divide_grad
from nascore_neas.shrink import DiversityShrink, DiversityShrinkConfig

torch.set_num_threads(1)

REG = make_registry(neas_plugin)


def ensemble_space(base: str | dict = "tiny_chain", members: int = 2, shape=(1, 16, 16), **opts) -> EnsembleSpace:
    ctx = SimpleNamespace(registry=REG, data=SimpleNamespace(input_shape=shape, num_classes=10))
    return REG.get("space", "neas_ensemble").build({"base": base, "members": members, **opts}, ctx)


def sample_with_split(space: EnsembleSpace, rng: random.Random, split: int) -> Architecture:
    while True:
        a = space.sample(rng)
        if space.split_of(a) == split:
            return a


# -- forward and gradient -------------------------------------------------------------------------
def test_neas_grad_divide_scales_gradient_and_is_identity_forward():
    x = torch.randn(4, 3, requires_grad=True)
    y = divide_grad(x, 3)
    assert torch.equal(y, x)
    y.pow(2).sum().backward()
    assert torch.allclose(x.grad, 2 * x.detach() / 3)
    with torch.no_grad():
        assert divide_grad(x, 3) is x  # nothing to divide without autograd (export traces pure torch)


@pytest.mark.parametrize("members", [2, 3])
def test_neas_ensemble_logits_are_member_mean_and_trunk_grad_is_divided_by_k(members):
    torch.manual_seed(0)
    space = ensemble_space(members=members)
    net = space.build_supernet().train()
    rng = random.Random(members)
    arch = sample_with_split(space, rng, 2)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    net.set_active(arch)
    members_out = net.forward_members(x)
    assert len(members_out) == members
    # BN in train mode uses batch statistics, so a second forward is deterministic
    assert torch.allclose(net(x), torch.stack(members_out).mean(0), atol=1e-6)

    trunk_w = net.base.stem[0].weight  # shared by every member
    branch_ws = [p for n, p in net.heads[0].named_parameters() if n.endswith("weight")]
    loss = F.cross_entropy(net(x), y)
    g_trunk, *g_branch = torch.autograd.grad(loss, [trunk_w, *branch_ws])

    # the same ensemble by hand, without the division: trunk gradient is K times larger,
    # and equals the sum of the per-member contributions
    s, trunk, branches = space.decode(arch)
    pos = net.layout.split_position(s)
    h = x
    for path, dec in net.layout.items[:pos]:
        h = net._run(path, dec, trunk[dec] if dec is not None else None, h)
    outs = []
    for k, b in enumerate(branches):
        hk = h
        for path, dec in net.layout.items[pos:]:
            hk = net._run(path, dec, b[dec - s] if dec is not None else None, hk)
        outs.append(net.heads[k](hk))
    loss_ref = F.cross_entropy(torch.stack(outs).mean(0), y)
    assert torch.allclose(loss, loss_ref)
    r_trunk, *r_branch = torch.autograd.grad(loss_ref, [trunk_w, *branch_ws], retain_graph=True)
    assert torch.allclose(g_trunk * members, r_trunk, rtol=1e-4, atol=1e-7)
    for a, b in zip(g_branch, r_branch):  # heads and branches are not divided
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)
    per_member = []
    for k in range(members):  # member k's contribution: the others detached from the trunk
        mixed = torch.stack([o if i == k else o.detach() for i, o in enumerate(outs)]).mean(0)
        per_member.append(torch.autograd.grad(F.cross_entropy(mixed, y), trunk_w, retain_graph=True)[0])
    assert torch.allclose(g_trunk, torch.stack(per_member).mean(0), rtol=1e-4, atol=1e-7)


def test_neas_child_is_one_standalone_module_equal_to_the_supernet_path():
    torch.manual_seed(1)
    space = ensemble_space(members=2)
    net = space.build_supernet()
    rng = random.Random(0)
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():  # give BN some statistics
        for _ in range(3):
            net.train()(x, space.sample(rng))
    net.eval()
    for split in (0, 2, 4):
        arch = sample_with_split(space, rng, split)
        child = net.child(arch)
        assert isinstance(child, EnsembleNet)
        with torch.no_grad():
            assert torch.allclose(child(x), net(x, arch), atol=1e-6)
            traced = torch.jit.trace(child.eval(), x, check_trace=False)
            assert torch.allclose(traced(x), child(x), atol=1e-6)
        fresh = net.child(arch, inherit=False)
        assert not torch.equal(fresh.heads[0].mods[0].weight, child.heads[0].mods[0].weight)
    # the heads of the members are initialised differently, so identical paths still differ
    assert not torch.equal(net.heads[0].mods[0].weight, net.heads[1].mods[0].weight)


def test_neas_training_step_updates_only_what_the_ensemble_uses():
    ctx = run_config(tiny_config(space={"name": "neas_ensemble", "options": {"base": "tiny_chain"}}, stages=[
        {"kind": "train", "trainer": {"name": "neas", "options": {"epochs": 1, "steps_per_epoch": 1, "lr": 0.1}}}]),
        None, registry=REG)
    net = ctx.supernet
    before = net.snapshot()
    trainer = REG.get("trainer", "neas").build({"epochs": 1, "steps_per_epoch": 1, "weight_decay": 0.01}, ctx)
    trainer.optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    x, y = next(ctx.data.batches("train"))
    arch = ctx.space.sample(random.Random(3))
    trainer.sample_arch = lambda _ctx: arch
    metrics = trainer.train_step(ctx, x, y, total=1)
    assert 0.0 <= metrics["disagree"] <= 1.0
    after = net.state_dict()
    unused = {id(p) for p in net.inactive_parameters(arch)}
    for name, p in net.named_parameters():
        changed = not torch.equal(before[name], after[name])
        assert changed == (id(p) not in unused), name


# -- costs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("members", [2, 3])
def test_neas_ensemble_macs_and_params_equal_trunk_plus_branches_against_fvcore(members):
    space = ensemble_space(members=members)
    rng = random.Random(members)
    archs = list({space.sample(rng) for _ in range(24)}) + [space.first()]
    rows = check_table(space, archs)
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad[:3]
    table = space.cost_table()
    base = space.base.cost_table(space.input_shape)
    for a in archs[:8]:  # the split counts the shared layers once: MACs fall as more is shared
        macs = [table.macs(space.compose(s, space.member_ops(a, 0)[:s], [space.member_ops(a, k)[s:] for k in range(members)]))
                for s in range(space.layers + 1)]
        assert all(m1 >= m2 for m1, m2 in zip(macs, macs[1:])), macs
        # all layers shared: one member plus K-1 extra heads
        full = space.compose(space.layers, space.member_ops(a, 0), [()] * members)
        assert table.macs(full) == base.macs(space.member_arch(a, 0)) + (members - 1) * table.branch_macs[-1]
    lo, hi, plo, phi = table.bounds(space.allowed)
    all_costs = [table.cost(a) for a in space.enumerate()] if members == 2 else []
    if all_costs:
        assert lo == min(m for m, _ in all_costs) and hi == max(m for m, _ in all_costs)
        assert plo == min(p for _, p in all_costs) and phi == max(p for _, p in all_costs)


def test_neas_ensemble_costs_exact_on_mobilenet():
    space = ensemble_space({"name": "mobilenet", "options": {"stage_depths": [1, 2, 1], "stage_channels": [8, 16, 24],
                                                             "stage_strides": [1, 2, 2], "last_channels": 32, "head_channels": 48}},
                           shape=(1, 28, 28))
    rng = random.Random(0)
    archs = [sample_with_split(space, rng, s) for s in (0, 1, 2, 3, 4, 4, 2, 0)]
    rows = check_table(space, archs)
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]][:2]
    child = space.build_supernet().child(archs[0])
    assert count_params(child) == space.cost_table().params(archs[0])


# -- encoding -----------------------------------------------------------------------------------
def test_neas_space_is_canonical_and_round_trips():
    space = ensemble_space(members=2)
    archs = list(space.enumerate())
    assert len(archs) == len(set(archs)) == space.size()
    assert all(space.is_valid(a) for a in archs)
    rng = random.Random(0)
    for _ in range(50):
        a = space.sample(rng)
        s = space.split_of(a)
        assert all(space.member_ops(a, k)[:s] == space.member_ops(a, 0)[:s] for k in range(2))  # tied trunk
        assert space.parse(space.format(a)) == a
        assert space.is_valid(space.mutate(a, 0.5, rng))
        assert space.is_valid(space.crossover(a, space.sample(rng), rng))
        assert space.is_valid(space.mutate_split(a, rng))
    a = space.parse("conv3-conv5|skip-conv3|conv5-conv5")
    assert space.split_of(a) == 2 and space.format(a) == "conv3-conv5|conv5-conv5|skip-conv3"  # members sorted
    assert space.parse("|conv3-conv3-conv3-conv3|skip-skip-skip-skip") in set(archs)
    with pytest.raises(ArchitectureError):
        space.parse("conv3-conv5|skip")
    with pytest.raises(ArchitectureError):
        space.parse("conv3-conv5|skip|conv5-conv5")
    restricted = space.restrict_layers({0: ["conv3"]}).restrict_splits([1, 2])
    assert all(space.member_ops(a, k)[0] == "conv3" and space.split_of(a) in (1, 2)
               for a in restricted.enumerate() for k in range(2))
    assert restricted.size() == sum(1 for _ in restricted.enumerate())


def test_neas_space_options_are_validated():
    with pytest.raises(ConfigError, match="base.options"):
        ensemble_space({"name": "tiny_chain", "options": {"layers": 0}})
    with pytest.raises(ConfigError, match="splits"):
        ensemble_space(splits=[7])
    cfg = tiny_config(space={"name": "neas_ensemble", "options": {"members": 0}})
    with pytest.raises(ConfigError, match="members"):
        validate(cfg, REG)
    with pytest.raises(NascoreError, match="not a chain space"):
        ensemble_space({"name": "tiny_cell"}).build_supernet()


# -- diversity shrinking --------------------------------------------------------------------------
def _cand(space, text, acc, dis):
    a = space.parse(text)
    return Candidate(a, space.format(a), acc, 0, 0, {"acc": acc, "disagreement": dis})


def test_neas_diversity_score_combines_potential_and_diversity():
    space = ensemble_space(members=2).restrict_layers({1: ["conv3"], 2: ["conv3"], 3: ["conv3"]})
    shrink = DiversityShrink(DiversityShrinkConfig(diversity_weight=1.0, drop=1))
    pairs = [(0, o) for o in ("conv3", "conv5", "skip")]
    cands = [
        _cand(space, "|conv3-conv3-conv3-conv3|conv5-conv3-conv3-conv3", 0.9, 0.30),  # differ at layer 0
        _cand(space, "|conv3-conv3-conv3-conv3|skip-conv3-conv3-conv3", 0.6, 0.10),
        _cand(space, "conv5-conv3-conv3-conv3||", 0.8, 0.05),  # layer 0 shared: no diversity evidence
    ]
    scores = shrink.score_pairs(space, cands, pairs)
    assert scores[(0, "conv3")]["potential"] == pytest.approx(0.75)
    assert scores[(0, "conv5")]["potential"] == pytest.approx(0.85)
    assert scores[(0, "conv5")]["diversity"] == pytest.approx(0.30)  # the shared ensemble does not count
    assert scores[(0, "conv5")]["n_diverse"] == 1
    assert scores[(0, "skip")]["score"] == min(v["score"] for v in scores.values())
    new, dropped = shrink.drop_lowest(space, scores)
    assert dropped == [(0, "skip")] and new[0] == ["conv3", "conv5"]


@pytest.mark.parametrize("min_ops", [1, 2])
def test_neas_diversity_shrinking_never_empties_a_layer(min_ops):
    cfg = tiny_config(space={"name": "neas_ensemble", "options": {"base": "tiny_chain"}}, stages=[
        {"kind": "train", "trainer": {"name": "neas", "options": {"epochs": 1, "steps_per_epoch": 4}}},
        {"kind": "shrink", "selector": {"name": "diversity_shrink",
                                        "options": {"samples_per_op": 1, "drop": 100, "min_ops": min_ops}},
         "evaluator": {"name": "ensemble_accuracy", "options": {"recal_batches": 1, "eval_batches": 1}}},
    ])
    ctx = run_config(cfg, None, registry=REG)
    for j in range(ctx.space.layers):
        assert len(ctx.space.layer_allowed(j)) == min_ops
        assert all(ctx.space.allowed[ctx.space.index(k, j)] == ctx.space.layer_allowed(j) for k in range(2))


def test_neas_diversity_shrinking_drops_the_op_worst_standalone_on_the_test_bed(tmp_path):
    """K-path supernet on tiny_chain/mnist5k, one shrink step, against the test bed (every
    tiny_chain arch trained standalone): the op potentials rank like the ops' standalone marginals
    (tau > 0) and the op dropped is ``skip``, the worst op of every layer standalone."""
    import statistics

    from nascore.groundtruth.testbed import kendall_tau, load_testbed

    truth = load_testbed("tiny_chain_mnist5k")
    ops = ("conv3", "conv5", "skip")
    ok_first, ok_tau, report = 0, 0, []
    for seed in range(3):
        cfg = {"name": "t", "seed": seed, "device": "cpu", "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64},
               "space": {"name": "neas_ensemble", "options": {"base": "tiny_chain"}},
               "stages": [{"kind": "train", "trainer": {"name": "neas", "options": {"epochs": 6, "lr": 0.1}}},
                          {"kind": "shrink", "selector": {"name": "diversity_shrink", "options": {"samples_per_op": 4, "drop": 1}},
                           "evaluator": {"name": "ensemble_accuracy", "options": {"recal_batches": 4}}}]}
        ctx = run_config(cfg, tmp_path / str(seed), registry=REG)
        space = ctx.space
        dropped = [(j, o) for j in range(4) for o in ops if o not in space.layer_allowed(j)]
        assert len(dropped) == 1
        marginal = {(j, o): statistics.mean(v for a, v in truth.items() if space.base.parse(a)[j] == o)
                    for j in range(4) for o in ops}
        assert all(marginal[(j, "skip")] == min(marginal[(j, o)] for o in ops) for j in range(4))
        events = [json.loads(line) for line in (tmp_path / str(seed) / "metrics.jsonl").read_text().splitlines()]
        scores = next(e for e in events if e.get("event") == "diversity_shrink")["scores"]
        keys = [(j, o) for j in range(4) for o in ops]
        tau = kendall_tau([scores[f"layer{j}:{o}"]["potential"] for j, o in keys], [marginal[k] for k in keys])
        report.append((dropped[0], round(tau, 2)))
        ok_first += dropped[0][1] == "skip"
        ok_tau += tau > 0
    print("dropped, tau(potential, standalone marginal):", report)
    assert ok_first >= 2 and ok_tau >= 2, report


# -- the pipeline ---------------------------------------------------------------------------------
def test_neas_pipeline_shrinks_searches_under_whole_ensemble_constraint_and_exports(tmp_path):
    macs_max = 6.0e5
    cfg = tiny_config(space={"name": "neas_ensemble", "options": {"base": "tiny_chain"}}, constraint={"macs_max": macs_max},
                      stages=[
        {"kind": "loop", "rounds": 2, "stages": [
            {"kind": "train", "trainer": {"name": "neas", "options": {"epochs": 1, "steps_per_epoch": 6}}},
            {"kind": "shrink", "selector": {"name": "diversity_shrink", "options": {"samples_per_op": 1, "drop": 2}},
             "evaluator": {"name": "ensemble_accuracy", "options": {"recal_batches": 1, "eval_batches": 1}}}]},
        {"kind": "search", "selector": {"name": "ensemble_evolution", "options": {
            "population": 6, "generations": 3, "top_k": 3, "mutations": 3, "crossovers": 3}},
         "evaluator": {"name": "ensemble_accuracy", "options": {"recal_batches": 1, "eval_batches": 1}}},
        {"kind": "export", "formats": ["json", "torchscript"]},
    ])
    ctx = run_config(cfg, tmp_path, registry=REG)
    space = ctx.space
    assert sum(len(space.layer_allowed(j)) for j in range(space.layers)) == 4 * 3 - 4  # 2 rounds x 2 drops
    assert ctx.candidates and all(c.macs <= macs_max for c in ctx.candidates)
    assert all(space.contains(c.arch) for c in ctx.candidates)
    best = ctx.candidates[0]
    assert best.macs == ctx.cost.macs(best.arch) and {"acc", "disagreement", "member_acc"} <= set(best.metrics)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["candidates"][0]["arch"] == best.arch_str
    exported = json.loads((tmp_path / "export" / "0" / "arch.json").read_text())
    assert exported["checks"]["torchscript_max_abs_diff"] < 1e-5
    loaded = torch.jit.load(str(tmp_path / "export" / "0" / "model.ts"))
    assert loaded(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(e.get("event") == "diversity_shrink" for e in events) == 2
    assert any(e.get("kind") == "train" and "disagree" in e for e in events)


def test_neas_recipe_validates():
    import yaml

    data = yaml.safe_load(open(REG.components["recipe"]["neas"].factory).read())
    cfg, _ = validate(data, REG)
    assert cfg.space.name == "neas_ensemble"
