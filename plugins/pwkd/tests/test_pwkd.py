"""Tests of nascore-pwkd and the core's ``kd`` distiller / teacher loading: the slimmable width space,
joint multi-width training, the partial-to-whole schedule (teacher switch + lr restart), plain KD
against a hand computation, PWKD in a retrain stage and inside a trainer."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import nascore_pwkd.plugin as pwkd_plugin
from nascore.arch import Architecture
from nascore.cost import check_table
from nascore.errors import ConfigError, NascoreError
from nascore.evaluate import accuracy
from nascore.testing import make_context, run_config, tiny_config

torch.set_num_threads(1)

SYN = {"name": "synthetic", "options": {"size": 384, "test_size": 64, "shape": [1, 16, 16]}}
SLIM = {"name": "slimmable_chain", "options": {"width": 8}}


def _events(run_dir, name):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == name]


# -- the width space ------------------------------------------------------------------------------------
def test_pwkd_slimmable_children_are_narrow_and_exact() -> None:
    ctx = make_context(tiny_config(space=SLIM, dataset=SYN), plugins=[pwkd_plugin])
    space, net = ctx.space, ctx.supernet
    assert [d.options for d in space.decisions] == [("w25", "w50", "w75", "w100")]
    x = torch.randn(4, 1, 16, 16)
    net.train()
    for a in space.enumerate():  # give every width's BN its own statistics
        net.set_active(a)
        net(x)
    net.eval()
    sizes = []
    for a in space.enumerate():
        net.set_active(a)
        child = net.child(a).eval()
        assert torch.allclose(child(x), net(x), atol=1e-5)
        sizes.append(sum(p.numel() for p in child.parameters()))
        # per-width BN: a width's active parameters are the shared convs plus that width's own BNs
        bns = {n for n, _ in net.active_parameters(a) if n.startswith("norms.")}
        assert bns and all(f".bns.{a.ops[0]}." in n for n in bns)
        assert len(bns) == 2 * len(net.norms)  # every layer's BN of that width (weight and bias)
        inactive = {id(p) for p in net.inactive_parameters(a)}
        assert {n for n, p in net.named_parameters() if id(p) in inactive} == {
            n for n, _ in net.named_parameters() if n.startswith("norms.") and f".bns.{a.ops[0]}." not in n}
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] / 8
    rows = check_table(space, list(space.enumerate()), (1, 16, 16))
    assert all(r["ok"] for r in rows), rows  # MACs/params of each width exact with fvcore


def test_pwkd_supernets_and_children_saved_with_the_old_keys_still_load() -> None:
    """Before the space moved onto nascore.width its BNs were ``widths.candidates.<w>.<i>.*`` and its convs
    ``stem.conv.weight``: such a state dict (supernet or child) loads strictly and computes the same."""
    import re

    from nascore_pwkd.space import SlimmableChainSpace

    space = SlimmableChainSpace(width=8, input_shape=(1, 16, 16))
    torch.manual_seed(0)
    net = space.build_supernet()
    x = torch.randn(4, 1, 16, 16)
    net.train()
    for a in space.enumerate():
        net.set_active(a)
        net(x)
    net.eval()

    def old_keys(sd: dict, child_of: str | None = None) -> dict:
        out = {}
        for k, v in sd.items():
            k = re.sub(r"^(stem|down|layers\.\d+)\.(weight)$", r"\1.conv.\2", k)
            k = re.sub(r"^norms\.(\d+)\.bns\.([^.]+)\.", r"widths.candidates.\2.\1.", k)
            if child_of is not None:
                k = re.sub(r"^norms\.(\d+)\.", rf"widths.candidates.{child_of}.\1.", k)
            out[k] = v
        return out

    old = old_keys(net.state_dict())
    assert "stem.conv.weight" in old and "widths.candidates.w25.0.running_mean" in old
    fresh = space.build_supernet().eval()
    fresh.load_state_dict(old)
    for a in space.enumerate():
        net.set_active(a)
        fresh.set_active(a)
        assert torch.equal(fresh(x), net(x))
        child = net.child(a).eval()
        other = space.build_supernet().child(a).eval()
        other.load_state_dict(old_keys(child.state_dict(), child_of="w100"))  # old children: one BN set
        assert torch.equal(other(x), child(x))


def test_pwkd_teacher_accuracy_rises_with_width() -> None:
    """After joint training (all widths every step), wider sub-networks are more accurate."""
    cfg = tiny_config(space={"name": "slimmable_chain"}, dataset={"name": "mnist5k"},
                      data={"batch_size": 64, "limit": 3000, "archval_fraction": 0.2},
                      stages=[{"kind": "train", "trainer": {"name": "slimmable", "options": {"epochs": 2, "lr": 0.02}}}])
    ctx = run_config(cfg, None, plugins=[pwkd_plugin])
    net = ctx.supernet
    accs = []
    for a in ctx.space.enumerate():
        net.set_active(a)
        accs.append(accuracy(net, ctx.data.batches("archval", shuffle=False, batch_size=256, drop_last=False))[0])
    print("width accuracies", accs)
    assert all(b > a for a, b in zip(accs, accs[1:])), accs


def test_pwkd_slimmable_options_are_checked() -> None:
    bad = tiny_config(space={"name": "slimmable_chain", "options": {"widths": [0.5, 0.25]}}, dataset=SYN)
    with pytest.raises(ConfigError, match="strictly increasing"):
        make_context(bad, plugins=[pwkd_plugin])
    same = tiny_config(space={"name": "slimmable_chain", "options": {"widths": [0.25, 0.3], "width": 4}}, dataset=SYN)
    with pytest.raises(ConfigError, match="which repeat"):  # two labels of one channel count
        make_context(same, plugins=[pwkd_plugin])
    bad = tiny_config(space=SLIM, dataset=SYN, stages=[
        {"kind": "train", "trainer": {"name": "slimmable", "options": {"null_inactive_grads": True}}}])
    with pytest.raises(ConfigError, match="null_inactive_grads"):
        make_context(bad, plugins=[pwkd_plugin])


# -- plain KD ---------------------------------------------------------------------------------------------
def test_pwkd_plain_kd_equals_hand_computation() -> None:
    from nascore.builtin.distillers import KDConfig, KDDistiller

    ctx = make_context(tiny_config(space=SLIM, dataset=SYN), plugins=[pwkd_plugin])
    kd = KDDistiller(KDConfig(teacher="supernet", teacher_arch="w50", temperature=3.0), ctx)
    assert kd.teacher.arch == Architecture(["w50"]) and not kd.replaces_ce
    x, y = torch.randn(5, 1, 16, 16), torch.randint(0, 10, (5,))
    s = torch.randn(5, 10)
    ctx.supernet.eval()
    ctx.supernet.set_active(Architecture(["w50"]))
    with torch.no_grad():
        t = ctx.supernet(x)
    T = 3.0
    pt = torch.softmax(t / T, 1)
    hand = T * T * (pt * (torch.log(pt) - torch.log_softmax(s / T, 1))).sum(1).mean()
    ctx.supernet.set_active(Architecture(["w25"]))  # the teacher runs its own path and restores this one
    got = kd.loss(s, x, y, None, ctx, None)
    assert float(got) == pytest.approx(float(hand), rel=1e-5)
    assert ctx.supernet.active_arch == Architecture(["w25"])
    mixed = KDDistiller(KDConfig(teacher="supernet", teacher_arch="w50", temperature=3.0, alpha=0.7), ctx)
    assert mixed.replaces_ce
    want = 0.3 * F.cross_entropy(s, y) + 0.7 * hand
    assert float(mixed.loss(s, x, y, None, ctx, None)) == pytest.approx(float(want), rel=1e-5)
    default = KDDistiller(KDConfig(teacher="supernet"), ctx)
    assert default.teacher.arch == Architecture(["w100"])  # the largest path by MACs
    with pytest.raises(NascoreError, match="do not match"):
        kd.loss(torch.randn(5, 7), x, y, None, ctx, None)


# -- the partial-to-whole schedule --------------------------------------------------------------------------
def test_pwkd_stages_switch_teacher_and_restart_lr() -> None:
    from nascore.builtin.distillers import kd_loss
    from nascore_pwkd.distiller import PWKDConfig, PWKDDistiller

    ctx = make_context(tiny_config(space=SLIM, dataset=SYN), plugins=[pwkd_plugin])
    d = PWKDDistiller(PWKDConfig(), ctx)
    total = 40
    x, y = torch.randn(3, 1, 16, 16), torch.randint(0, 10, (3,))
    factors, teachers = [], []
    for step in range(total):
        factors.append(d.lr_factor(step, total))
        s = torch.randn(3, 10)
        loss = d.loss(s, x, y, None, ctx, None)
        teachers.append(ctx.space.format(d.base.teacher.arch))
        assert float(loss) == pytest.approx(float(kd_loss(s, d.base.teacher.logits(x), 4.0)), rel=1e-6)
    assert teachers == ["w25"] * 10 + ["w50"] * 10 + ["w75"] * 10 + ["w100"] * 10  # partial to whole
    assert [i for i in range(total) if factors[i] == 1.0] == [0, 10, 20, 30]  # lr restarts at each boundary
    for start in (0, 10, 20, 30):
        stage = factors[start : start + 10]
        assert all(b < a for a, b in zip(stage, stage[1:]))  # and decays within the stage
    assert d.switches == [(0, 0), (10, 1), (20, 2), (30, 3)]
    unequal = PWKDDistiller(PWKDConfig(widths=["w50", "w100"], stage_fractions=[3, 1], lr_restart=False), ctx)
    assert unequal.lr_factor(0, 40) is None and unequal.bounds(40) == [0, 30, 40]
    with pytest.raises(ValidationError, match="not on its base"):
        PWKDConfig(base={"name": "kd", "options": {"teacher": "supernet"}})
    with pytest.raises(ConfigError, match="base.options.temperature"):
        PWKDDistiller(PWKDConfig(base={"name": "kd", "options": {"temperature": -1}}), ctx)


def test_pwkd_retrains_a_searched_child(tmp_path) -> None:
    """Slimmable teacher -> student search under a MACs limit -> retrain with PWKD (the recipe's path)."""
    cfg = tiny_config(space=SLIM, dataset=SYN, constraint={"macs_max": 2.0e4}, stages=[
        {"kind": "train", "trainer": {"name": "slimmable", "options": {"epochs": 1, "steps_per_epoch": 4}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 4}},
         "evaluator": {"name": "accuracy", "options": {"bn_mode": "stored"}}},
        {"kind": "retrain", "epochs": 1, "distiller": {"name": "pwkd", "options": {"teacher": "supernet"}}},
    ])
    ctx = run_config(cfg, tmp_path, plugins=[pwkd_plugin])
    assert [c.arch_str for c in ctx.candidates] == ["w25"]  # the only width under 20K MACs
    stages = _events(tmp_path, "pwkd_stage")
    assert [e["teacher"] for e in stages] == ["w25", "w50", "w75", "w100"]
    total = ctx.data.num_batches("train")
    from nascore_pwkd.distiller import stage_bounds

    assert [e["step"] for e in stages] == stage_bounds(total, [1, 1, 1, 1])[:4]
    assert 0 <= ctx.state["retrain"]["w25"]["test_acc"] <= 1


def test_pwkd_inside_a_trainer_with_teacher_from_another_run(tmp_path) -> None:
    """PWKD wrapping feature KD while a single-path trainer trains a tiny_chain supernet; the slimmable
    teacher is loaded from another run's folder; the trainer's lr restarts at every stage."""
    teacher_cfg = tiny_config(space=SLIM, dataset=SYN, stages=[
        {"kind": "train", "trainer": {"name": "slimmable", "options": {"epochs": 1, "steps_per_epoch": 3}}}])
    run_config(teacher_cfg, tmp_path / "teacher", plugins=[pwkd_plugin])
    student = tiny_config(dataset=SYN, log_every=1, stages=[{
        "kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 8}},
        "distiller": {"name": "pwkd", "options": {
            "teacher": f"supernet:{tmp_path / 'teacher'}", "widths": ["w50", "w100"],
            "base": {"name": "feature_kd", "options": {"weight": 10.0}}}}}])
    run_config(student, tmp_path / "student", plugins=[pwkd_plugin])
    rows = [json.loads(x) for x in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r.get("kind") == "train"]
    assert len(lrs) == 8 and lrs[0] == lrs[4] == pytest.approx(0.05) and lrs[3] < lrs[0] and lrs[7] < lrs[4]
    assert [e["teacher"] for e in _events(tmp_path / "student", "pwkd_stage")] == ["w50", "w100"]


def test_pwkd_feature_kd_is_scale_free() -> None:
    from nascore_pwkd.distiller import sp_loss

    f = torch.randn(6, 5)
    assert float(sp_loss(3.0 * f, f)) == pytest.approx(0.0, abs=1e-7)
    assert float(sp_loss(torch.randn(6, 7), f)) > 0  # widths may differ


# -- teachers from files -------------------------------------------------------------------------------------
def test_pwkd_kd_teacher_from_export_and_run_folders(tmp_path) -> None:
    first = tiny_config(dataset=SYN, stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 3}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 2}}, "evaluator": "accuracy"},
        {"kind": "export", "formats": ["json"]},
    ])
    run_config(first, tmp_path / "t", plugins=[pwkd_plugin], smoke=True)
    from nascore.methods.teacher import load_teacher

    ctx = make_context(tiny_config(dataset=SYN), plugins=[pwkd_plugin])
    a = load_teacher(f"export:{tmp_path / 't' / 'export' / '0'}", ctx)
    b = load_teacher(str(tmp_path / "t"), ctx)  # a run folder: its exported candidate 0
    x = torch.randn(2, 1, 16, 16)
    assert a.kind == b.kind == "child" and torch.equal(a.logits(x), b.logits(x))
    assert not any(p.requires_grad for p in a.model.parameters())
    with pytest.raises(NascoreError, match="neither retrained nor exported"):
        load_teacher(f"run:{tmp_path / 't'}#1", ctx)
    with pytest.raises(NascoreError, match="did you mean"):
        load_teacher("torchvision:resnet19", ctx)
    with pytest.raises(NascoreError, match="not a teacher spec"):
        load_teacher(str(tmp_path / "nowhere"), ctx)
    # the kd distiller with that teacher, in a retrain stage
    cfg = tiny_config(dataset=SYN, stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 2}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 2}}, "evaluator": "accuracy"},
        {"kind": "retrain", "epochs": 1, "distiller": {"name": "kd", "options": {"teacher": f"run:{tmp_path / 't'}#0"}}},
    ])
    ctx2 = run_config(cfg, tmp_path / "s", plugins=[pwkd_plugin], smoke=True)
    assert ctx2.state["retrain"]


def test_pwkd_fresh_child_starts_as_a_narrow_network_built_from_scratch() -> None:
    """``child(arch, inherit=False)`` draws its weights as the narrow network's own constructor would after
    the same seed (stem first), whatever the supernet holds: a seed gives a retrained student the same start."""
    from nascore_pwkd.space import SlimmableChainSpace

    space = SlimmableChainSpace(width=8, input_shape=(1, 16, 16))
    net = space.build_supernet()
    a = Architecture(["w50"])
    torch.manual_seed(3)
    fresh = net.child(a, inherit=False)
    torch.manual_seed(3)
    stem = torch.nn.Conv2d(1, 4, 3, 2, 1, bias=False)
    assert torch.equal(fresh.stem.weight, stem.weight)
    assert not torch.equal(fresh.stem.weight, net.stem.weight[:4])
    assert all(torch.equal(p, torch.ones_like(p)) for n, p in fresh.named_parameters()
               if n.startswith("norms.") and n.endswith("weight"))  # BNs reset


@pytest.mark.parametrize("layers,widths", [(1, (0.5, 1.0)), (3, (0.25, 0.75))])
def test_pwkd_other_depths_and_widths_stay_exact(layers, widths) -> None:
    """An odd depth (the downsampling before the first layer, or after one of three) and a largest width
    below 1.0: every width's child equals its path and the core's table equals fvcore."""
    from nascore_pwkd.space import SlimmableChainSpace

    space = SlimmableChainSpace(widths=widths, width=8, layers=layers, input_shape=(1, 12, 12))
    torch.manual_seed(0)
    net = space.build_supernet().eval()
    x = torch.randn(2, 1, 12, 12)
    for a in space.enumerate():
        net.set_active(a)
        torch.testing.assert_close(net.child(a).eval()(x), net(x), rtol=0, atol=1e-6)
    rows = check_table(space, list(space.enumerate()))
    assert all(r["ok"] for r in rows) and len({r["fvcore_macs"] for r in rows}) == len(widths), rows
