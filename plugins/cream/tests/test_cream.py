"""Tests of nascore-cream: the board's admission rule, the distillation loss, the meta-network's
update, resume, the priors, and the components wired through run configs."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import nascore_cream.plugin as cream_plugin
from nascore.arch import Architecture
from nascore.errors import ConfigError, NascoreError
from nascore.io import load_torch
from nascore.testing import make_context, make_registry, run_config
from nascore_cream.board import BoardEntry, PrioritizedBoard
from nascore_cream.distill import PathDistillOptions, PrioritizedPaths, frozen_bn
from nascore_cream.distiller import PrioritizedPathConfig, PrioritizedPathDistiller
from nascore_cream.trainer import PRE_PROB, CreamTrainer, prior_probs

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_registry():
    from nascore.registry import set_registry

    set_registry(None)
    yield
    set_registry(None)


def _arch(i: int) -> Architecture:
    ops = ("conv3", "conv5", "skip")
    return Architecture([ops[(i // 3**k) % 3] for k in range(4)])


def _entry(i: int, score: float, macs: int) -> BoardEntry:
    a = _arch(i)
    return BoardEntry(a, "-".join(a.ops), score, macs)


# -- the board -------------------------------------------------------------------------------------
def test_cream_board_admission_follows_the_three_rules_and_evicts_the_worst():
    b = PrioritizedBoard(size=3, acc_gap=0.05, macs_min=100, macs_max=1000)
    assert b.offer(_entry(0, 0.50, 500)) == "not full"
    assert b.offer(_entry(1, 0.40, 500)) == "not full"
    assert b.offer(_entry(2, 0.60, 500)) == "not full"
    assert [e.score for e in b] == [0.60, 0.50, 0.40]
    # full: not better than the worst -> refused, even with fewer MACs
    assert b.offer(_entry(3, 0.40, 200)) is None
    assert b.offer(_entry(3, 0.30, 200)) is None
    # better than the worst by less than the gap and not fewer MACs -> refused
    assert b.offer(_entry(3, 0.44, 500)) is None
    assert b.offer(_entry(3, 0.44, 800)) is None
    # better by less than the gap but fewer MACs -> admitted, the worst (0.40) evicted
    assert b.offer(_entry(3, 0.44, 499)) == "better and fewer MACs"
    assert [e.score for e in b] == [0.60, 0.50, 0.44] and len(b) == 3 and b.evicted == 1
    # better by more than the gap -> admitted whatever its MACs
    assert b.offer(_entry(4, 0.50, 900)) == "better"
    assert [(e.score, e.macs) for e in b] == [(0.60, 500), (0.50, 500), (0.50, 900)]
    # never a path outside the MACs range, however good, even on a board with room
    assert b.offer(_entry(5, 0.99, 1001)) is None
    assert b.offer(_entry(5, 0.99, 99)) is None
    assert PrioritizedBoard(size=3, macs_min=100, macs_max=1000).offer(_entry(5, 0.9, 5000)) is None
    assert all(100 <= e.macs <= 1000 for e in b)


def test_cream_board_unique_refreshes_and_code_mode_keeps_duplicates():
    b = PrioritizedBoard(size=3, unique=True)
    b.offer(_entry(0, 0.5, 10))
    b.offer(_entry(1, 0.6, 10))
    assert b.offer(_entry(0, 0.9, 10)) == "refresh"
    assert [(e.arch_str, e.score) for e in b] == [(_entry(0, 0, 0).arch_str, 0.9), (_entry(1, 0, 0).arch_str, 0.6)]
    d = PrioritizedBoard(size=3, unique=False)
    d.offer(_entry(0, 0.5, 10))
    d.offer(_entry(0, 0.5, 10))
    assert len(d) == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 80), st.floats(0, 1), st.integers(50, 1200)), max_size=60),
       st.integers(1, 6), st.booleans())
def test_cream_board_invariants_hold_for_any_sequence(offers, size, unique):
    b = PrioritizedBoard(size=size, acc_gap=0.05, macs_min=100, macs_max=1000, unique=unique)
    for i, score, macs in offers:
        before = [(e.arch, e.score, e.macs) for e in b]
        reason = b.offer(_entry(i, score, macs))
        after = [(e.arch, e.score, e.macs) for e in b]
        assert len(b) <= size
        assert all(100 <= m <= 1000 for _, _, m in after)
        assert [s for _, s, _ in after] == sorted((s for _, s, _ in after), reverse=True)
        if not 100 <= macs <= 1000:
            assert reason is None and after == before
        elif reason in ("not full", "better", "better and fewer MACs"):
            worst = before[-1] if before else None
            assert (len(before) < size) or score > worst[1] + 0.05 or (score > worst[1] and macs < worst[2])
        elif reason is None:
            assert after == before
            if len(before) >= size:
                w = before[-1]
                assert not (score > w[1] + 0.05 or (score > w[1] and macs < w[2]))
        if unique:
            assert len({a for a, _, _ in after}) == len(after)


# -- a context with a supernet for the engine tests ---------------------------------------------------
def _ctx(**data_overrides):
    cfg = {"name": "t", "seed": 0, "device": "cpu", "space": {"name": "tiny_chain"},
           "dataset": {"name": "synthetic", "options": {"size": 256}}, "data": {"batch_size": 16},
           "stages": [{"kind": "train", "trainer": "single_path"}]}
    cfg.update(data_overrides)
    ctx = make_context(cfg, plugins=[cream_plugin])
    ctx.stage_key = "0"
    return ctx


def _stock_board(engine, ctx, archs, x):
    """Put ``archs`` on the engine's board as the code would after they were scored."""
    net = ctx.supernet
    s = engine.opts.slice
    for k, a in enumerate(archs):
        with torch.no_grad(), frozen_bn(net):
            probs = F.softmax(net(x[:s], a), 1)
        engine.board.offer(BoardEntry(a, ctx.space.format(a), 0.5 + 0.1 * k, ctx.cost.macs(a), 0,
                                      x[:s].clone(), probs))


def _fake_trainer(epoch=1, step=1, label_smoothing=0.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    opt.param_groups[0]["initial_lr"] = 0.1
    return SimpleNamespace(epoch=epoch, step=step, optimizer=opt, cfg=SimpleNamespace(label_smoothing=label_smoothing))


def _log_softmax(z):
    z = z - z.max(1, keepdim=True).values
    return z - z.exp().sum(1, keepdim=True).log()


def test_cream_distillation_loss_equals_hand_computed_kd():
    ctx = _ctx()
    net = ctx.supernet
    torch.manual_seed(0)
    x, y = next(ctx.data.batches("train", device="cpu"))
    distiller = PrioritizedPathDistiller(PrioritizedPathConfig(update_iter=1000), ctx)
    student, teacher = Architecture(["conv3", "skip", "conv5", "skip"]), Architecture(["conv5", "conv5", "conv3", "conv3"])
    _stock_board(distiller.engine, ctx, [teacher], x)
    entry = distiller.board.entries[0]
    net.train()
    net.set_active(student)
    logits = net(x)  # the trainer's forward (it alone moves BN statistics)
    bn_before = [t.clone() for t in net.state_dict().values()]
    loss = distiller.loss(logits, x, y, student, ctx, _fake_trainer())

    snapshot = net.snapshot()
    with torch.no_grad():  # by hand (train-mode BN, as the training forward): ρ = σ(w·d + b), KD, CE
        p_t = _log_softmax(net(x, teacher)).exp()
        d = (_log_softmax(net(entry.images, student)).exp() - entry.probs).reshape(-1)
        net.load_snapshot(snapshot)
        w, b = distiller.engine.meta.layer.weight.reshape(-1), distiller.engine.meta.layer.bias
        rho = 1.0 / (1.0 + math.exp(-float(w @ d + b)))
        logp = _log_softmax(logits)
        kd = -(p_t * logp).sum(1).mean()
        ce = -logp[torch.arange(len(y)), y].mean()
        expected = (rho * kd + (2 - rho) * ce) / 2
    assert 0.0 < rho < 1.0
    assert torch.allclose(loss, expected, atol=1e-5), (float(loss), float(expected))
    assert distiller.engine.last["rho"] == pytest.approx(rho, abs=1e-6)
    # teacher and matching forwards leave BN running statistics as they were
    assert all(torch.equal(a, b) for a, b in zip(bn_before, net.state_dict().values()))


def test_cream_code_compat_takes_rho_from_the_last_board_entry():
    ctx = _ctx()
    net = ctx.supernet
    x, _ = next(ctx.data.batches("train", device="cpu"))
    opts = PathDistillOptions(compat="cream-code")
    engine = PrioritizedPaths(opts, ctx, owner="test")
    archs = [_arch(5), _arch(40), _arch(70)]
    _stock_board(engine, ctx, archs, x)
    student = _arch(12)
    j, rho, m = engine.select_teacher(net, student)
    assert j == int(torch.argmax(m)) and len(m) == 3
    assert float(rho.detach()) == pytest.approx(float(torch.sigmoid(-m[-1].detach())))
    paper = PrioritizedPaths(PathDistillOptions(), ctx, owner="test")
    paper.meta.load_state_dict(engine.meta.state_dict())
    _stock_board(paper, ctx, archs, x)
    j2, rho2, m2 = paper.select_teacher(net, student)
    assert j2 == j and float(rho2.detach()) == pytest.approx(float(torch.sigmoid(m2[j2].detach())))


def _lookahead_loss(engine, ctx, net, x, y, student, xv, yv, lr):
    """L_val(w − lr ∇_w L_train(w, ρ(θ))) written out independently of the engine."""
    j, rho, _ = engine.select_teacher(net, student)
    teacher = engine.board.entries[j].arch
    named = [(n, p) for n, p in net.active_parameters(student)]
    with frozen_bn(net):
        with torch.no_grad():
            t = net(x, teacher)
        s = net(x, student)
        kd = -(F.softmax(t, 1) * F.log_softmax(s, 1)).sum(1).mean()
        l_train = (rho * kd + (2 - rho) * F.cross_entropy(s, y)) / 2
        grads = torch.autograd.grad(l_train, [p for _, p in named], create_graph=True)
        w2 = {n: p - lr * g for (n, p), g in zip(named, grads)}
        net.set_active(student)
        return F.cross_entropy(torch.func.functional_call(net, w2, (xv,)), yv)


def test_cream_meta_update_moves_the_meta_network_downhill_on_the_lookahead_loss():
    ctx = _ctx()
    net = ctx.supernet.double()
    engine = PrioritizedPaths(PathDistillOptions(meta_lr=0.5, meta_momentum=0.0), ctx, owner="test")
    engine.meta.double()
    batches = ctx.data.batches("train", device="cpu")
    x, y = next(batches)
    x = x.double()
    xv, yv = engine.val_batch(ctx, step=3)
    xv = xv.double()
    engine.val_batch = lambda ctx, step: (xv, yv)  # the same held-out batch for the oracle
    student = _arch(10)
    _stock_board(engine, ctx, [_arch(2), _arch(60), _arch(33)], x)
    lr = 0.5
    theta0 = [p.detach().clone() for p in engine.meta.parameters()]
    weights0 = {k: v.clone() for k, v in net.state_dict().items()}

    l0 = _lookahead_loss(engine, ctx, net, x, y, student, xv, yv, lr)
    grad_theta = torch.autograd.grad(l0, list(engine.meta.parameters()))
    info = engine.meta_update(net, x, y, student, ctx, step=3, lr=lr)
    theta1 = [p.detach().clone() for p in engine.meta.parameters()]
    l1 = _lookahead_loss(engine, ctx, net, x, y, student, xv, yv, lr)

    delta = [b - a for a, b in zip(theta0, theta1)]
    assert any(float(d.abs().max()) > 0 for d in delta), "the meta-network did not move"
    # the step is -meta_lr x the meta-gradient of the look-ahead loss (plain SGD) ...
    for d, g in zip(delta, grad_theta):
        assert torch.allclose(d, -0.5 * g, atol=1e-10)
    # ... a descent direction, and the look-ahead loss went down
    assert sum(float((d * g).sum()) for d, g in zip(delta, grad_theta)) < 0
    assert float(l1.detach()) < float(l0.detach()), (float(l0.detach()), float(l1.detach()))
    print("lookahead loss", float(l0.detach()), "->", float(l1.detach()), "|dtheta|", sum(float(d.norm()) for d in delta))
    assert info["meta_val_loss"] == pytest.approx(float(l0.detach()), rel=1e-9)
    # the paper's meta step never steps the student (its one real step is the trainer's)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights0.items())


def test_cream_code_compat_meta_update_steps_meta_network_and_student_once():
    ctx = _ctx()
    net = ctx.supernet
    engine = PrioritizedPaths(PathDistillOptions(compat="cream-code", meta_lr=0.1), ctx, owner="test")
    x, y = next(ctx.data.batches("train", device="cpu"))
    _stock_board(engine, ctx, [_arch(2), _arch(60)], x)
    student = _arch(10)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    theta0 = [p.detach().clone() for p in engine.meta.parameters()]
    active = {n: p.detach().clone() for n, p in net.active_parameters(student)}
    inactive = {id(p): p.detach().clone() for p in net.inactive_parameters(student)}
    engine.meta_update(net, x, y, student, ctx, step=5, lr=0.1, optimizer=opt)
    assert any(not torch.equal(a, b) for a, b in zip(theta0, engine.meta.parameters()))
    moved = [n for n, p in net.active_parameters(student) if not torch.equal(active[n], p)]
    assert moved, "the code's extra student step did not happen"
    assert all(torch.equal(inactive[id(p)], p) for p in net.inactive_parameters(student))


# -- priors and sampling ------------------------------------------------------------------------------
def test_cream_priors_map_the_code_table_and_board_frequencies():
    allowed = (("k3e4", "k3e6", "k5e4", "k5e6", "k7e4", "k7e6"), ("k3e4", "k5e6", "skip"), ("conv3", "skip"))
    probs = prior_probs(allowed, "pre_prob")
    assert probs[0] == PRE_PROB
    assert probs[1] == {"k3e4": 0.05, "k5e6": 0.5, "skip": pytest.approx(1 / 6)}
    assert probs[2] is None  # no op of the table: uniform
    assert prior_probs(allowed, "even") is None
    assert prior_probs(allowed, "teacher", counts={}) is None
    t = prior_probs(allowed, "teacher", counts={"k5e6": 3, "skip": 1}, smoothing=0.5)
    assert t[1] == {"k3e4": 0.5, "k5e6": 3.5, "skip": 1.5}


def test_cream_trainer_samples_only_inside_the_macs_range():
    ctx = _ctx(constraint={"macs_min": 3e5, "macs_max": 7e5})
    tr = CreamTrainer(CreamTrainer.Config(prior="teacher"), ctx)
    tr.setup(ctx)
    tr.rng = random.Random(0)
    _stock_board(tr.engine, ctx, [a for a in ctx.space.enumerate() if ctx.feasible(a)][:3],
                 next(ctx.data.batches("train"))[0])
    for _ in range(200):
        macs = ctx.cost.macs(tr.sample_arch(ctx))
        assert 3e5 <= macs <= 7e5


# -- whole runs ---------------------------------------------------------------------------------------
def _cream_run_cfg(**trainer):
    opts = {"epochs": 2, "steps_per_epoch": 12, "lr": 0.1, "warmup_epochs": 1, "update_iter": 4, "board_size": 4}
    opts.update(trainer)
    return {
        "name": "cream-test", "seed": 1, "device": "cpu", "space": {"name": "tiny_chain"},
        "dataset": {"name": "synthetic", "options": {"size": 512}}, "data": {"batch_size": 16},
        "constraint": {"macs_min": 2e5, "macs_max": 9e5}, "checkpoint_every": 5,
        "stages": [
            {"kind": "train", "trainer": {"name": "cream", "options": opts}},
            {"kind": "search", "selector": "board",
             "evaluator": {"name": "accuracy", "options": {"recal_batches": 2, "eval_batches": 2}}},
        ],
    }


def _final_engine_state(run_dir):
    ckpts = sorted((run_dir / "checkpoints").glob("stage-0-*.pt"))
    return load_torch(ckpts[-1])["extra"]["engine"]


def _assert_same_state(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same_state(u, v)
    else:
        assert a == b


def test_cream_run_end_to_end_and_board_selector(tmp_path):
    ctx = run_config(_cream_run_cfg(), tmp_path / "run", plugins=[cream_plugin])
    board = ctx.state["cream_board"]
    assert board["owner"] == "trainer cream" and 1 <= len(board["entries"]) <= 4
    assert all(2e5 <= e["macs"] <= 9e5 for e in board["entries"])
    assert {c.arch_str for c in ctx.candidates} == {e["arch"] for e in board["entries"]}
    assert all(c.origin == "board" and "board_score" in c.metrics for c in ctx.candidates)
    state = _final_engine_state(tmp_path / "run")
    assert state["meta_updates"] >= 1 and len(state["board"]["entries"]) == len(board["entries"])
    assert all(e["images"].shape[0] == 4 for e in state["board"]["entries"])


def test_cream_resume_restores_the_board_exactly(tmp_path, monkeypatch):
    from nascore.pipeline.run import resume_run, run_pipeline

    cfg = _cream_run_cfg(compat="cream-code")
    run_config(cfg, tmp_path / "ref", plugins=[cream_plugin])
    reg = make_registry(cream_plugin)

    original = CreamTrainer.train_step

    def killed(self, ctx, x, y, total):
        if self.step == 17:  # after the checkpoint at step 15, mid-epoch 2, board and meta in use
            raise KeyboardInterrupt
        return original(self, ctx, x, y, total)

    monkeypatch.setattr(CreamTrainer, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        run_config(cfg, tmp_path / "victim", registry=reg)
    monkeypatch.setattr(CreamTrainer, "train_step", original)
    ckpt = sorted((tmp_path / "victim" / "checkpoints").glob("stage-0-*.pt"))[-1]
    saved = load_torch(ckpt)
    assert saved["step"] == 15 and len(saved["extra"]["engine"]["board"]["entries"]) > 0

    # the restored trainer holds exactly the checkpointed board
    rctx = resume_run(tmp_path / "victim", quiet=True, registry=reg)
    trainer = rctx.build("trainer", rctx.cfg.stages[0].trainer, "stages[0].trainer")
    rctx.stage_key = "0"
    trainer.setup(rctx)
    trainer.load_extra_state(saved["extra"])
    _assert_same_state(trainer.engine.board.state_dict(), saved["extra"]["engine"]["board"])
    rctx.log.close()

    # and the resumed run ends exactly where the uninterrupted one did
    rctx = resume_run(tmp_path / "victim", quiet=True, registry=reg)
    try:
        run_pipeline(rctx)
    finally:
        rctx.log.close()
    _assert_same_state(_final_engine_state(tmp_path / "victim"), _final_engine_state(tmp_path / "ref"))
    ref = load_torch(sorted((tmp_path / "ref" / "checkpoints").glob("stage-0-*.pt"))[-1])
    _assert_same_state(load_torch(sorted((tmp_path / "victim" / "checkpoints").glob("stage-0-*.pt"))[-1])["supernet"],
                       ref["supernet"])
    assert rctx.state["cream_board"]["entries"] == ref_board(tmp_path / "ref")


def ref_board(run_dir):
    import json

    return json.loads((run_dir / "state.json").read_text())["cream_board"]["entries"]


def test_cream_distiller_composes_with_another_trainer_and_is_checkpointed(tmp_path):
    cfg = _cream_run_cfg()
    cfg["stages"][0] = {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 2, "steps_per_epoch": 12}},
                        "distiller": {"name": "prioritized_path",
                                      "options": {"warmup_epochs": 1, "update_iter": 4, "board_size": 4}}}
    ctx = run_config(cfg, tmp_path / "run", plugins=[cream_plugin])
    board = ctx.state["cream_board"]
    assert board["owner"] == "distiller prioritized_path" and board["entries"]
    assert ctx.candidates and ctx.candidates[0].origin == "board"
    saved = load_torch(sorted((tmp_path / "run" / "checkpoints").glob("stage-0-*.pt"))[-1])
    assert saved["distiller"]["meta_updates"] >= 1
    assert [e["arch"] for e in saved["distiller"]["board"]["entries"]] == [e["arch"] for e in board["entries"]]


def test_cream_user_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="board_size"):
        run_config(_cream_run_cfg(board_size=0), tmp_path / "a", plugins=[cream_plugin])
    with pytest.raises(ConfigError, match="compat"):
        run_config(_cream_run_cfg(compat="code"), tmp_path / "b", plugins=[cream_plugin])
    cfg = _cream_run_cfg()
    cfg["stages"][0]["distiller"] = "prioritized_path"
    with pytest.raises(NascoreError, match="already distils"):
        run_config(cfg, tmp_path / "c", plugins=[cream_plugin])
    cfg = _cream_run_cfg()
    cfg["stages"][0]["trainer"] = {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 2}}
    with pytest.raises(NascoreError, match="no prioritized board"):
        run_config(cfg, tmp_path / "d", plugins=[cream_plugin])


def test_cream_recipes_run_in_smoke_mode(tmp_path):
    from nascore.config import load_yaml
    from nascore.testing import make_registry

    reg = make_registry(cream_plugin)
    data = load_yaml(reg.components["recipe"]["cream"].factory)
    data["space"] = {"name": "tiny_chain"}  # the recipe's code paths on the fast test-bed space
    data["constraint"] = {"macs_min": 2e5, "macs_max": 9e5}
    ctx = run_config(data, tmp_path / "cream", registry=reg, smoke=True)
    assert ctx.candidates and ctx.candidates[0].origin == "board"
    assert ctx.candidates[0].arch_str in ctx.state.get("retrain", {})


def test_cream_board_holds_the_cream_of_the_test_bed():
    """METHODS §2 (e)(2): after training, the board's paths are better than the average path by
    their standalone (ground-truth) accuracy — the board really collects the "cream"."""
    import statistics

    from nascore.groundtruth.testbed import load_testbed

    truth = load_testbed("tiny_chain_mnist5k")
    cfg = {"name": "cream-bed", "seed": 0, "device": "cpu", "space": {"name": "tiny_chain"},
           "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64},
           "stages": [{"kind": "train", "trainer": {"name": "cream", "options": {
               "epochs": 6, "warmup_epochs": 2, "update_iter": 10, "board_size": 5}}}]}
    ctx = run_config(cfg, None, plugins=[cream_plugin])
    board = [e["arch"] for e in ctx.state["cream_board"]["entries"]]
    board_mean, all_mean = statistics.mean(truth[a] for a in board), statistics.mean(truth.values())
    print(f"board mean standalone acc {board_mean:.2f}% vs all 81 archs {all_mean:.2f}%")
    assert len(board) == 5
    assert board_mean > all_mean + 2.0


def test_cream_spos_composition_recipe_runs_in_smoke_mode(tmp_path):
    spos_plugin = pytest.importorskip("nascore_spos.plugin")
    from nascore.config import load_yaml

    reg = make_registry(cream_plugin, spos_plugin)
    data = load_yaml(reg.components["recipe"]["cream_spos"].factory)
    ctx = run_config(data, tmp_path / "cream_spos", registry=reg, smoke=True)
    assert ctx.state["cream_board"]["owner"] == "distiller prioritized_path"
    assert ctx.candidates and ctx.candidates[0].origin == "board"
