"""Latency lookup tables (nascore.latency): the table file, its refusals, latency as a constraint in
every method that takes one, and the prediction models on synthetic cases with known answers.

Timing is replaced by a fake, deterministic timer: a module's "latency" is the sum of fixed costs
of its leaf modules (conv3 1 ms, conv5 3 ms, identity 0.2 ms, other leaves 0.01 ms) plus 0.5 ms
when it is a whole child network. So every block's entry, the fixed part and every child's
"measured" latency are known exactly, and latency is *not* a function of MACs (a 1x1-free chain
where skip is cheap and conv5 dear orders them like MACs, but the numbers differ), which lets the
constraint tests tell a latency bound from a MACs bound.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nascore import latency as L
from nascore.arch import Architecture
from nascore.cost import ResourceConstraint
from nascore.errors import ConfigError, ConstraintError
from nascore.search import sample_feasible
from nascore.testing import make_context, run_config, tiny_config

torch.set_num_threads(1)

CHILD_OVERHEAD = 0.5


def leaf_ms(m: nn.Module) -> float:
    if isinstance(m, nn.Conv2d):
        return {3: 1.0, 5: 3.0}.get(m.kernel_size[0], 0.5)
    if isinstance(m, nn.Identity):
        return 0.2
    return 0.01


def fake_ms(module: nn.Module) -> float:
    leaves = [m for m in module.modules() if not list(m.children())]
    return sum(leaf_ms(m) for m in leaves) + (CHILD_OVERHEAD if getattr(module, "is_child", False) else 0.0)


def fake_timer(fn: Any, module: nn.Module, x: torch.Tensor) -> list[float]:
    """Deterministic samples around the fake latency (median = the fake latency exactly)."""
    t = fake_ms(module)
    return [t * 0.97, t * 0.99, t, t * 1.01, t * 1.04]


def block_ms(op: str) -> float:
    """What a tiny_chain block costs under the fake timer (conv + BN + ReLU, or identity)."""
    return {"conv3": 1.02, "conv5": 3.02, "skip": 0.2}[op]


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    ctx = make_context(tiny_config())
    opts = ctx.options["space"].model_dump(mode="json")
    table = L.build_table(ctx.base_space, space_name="tiny_chain", space_options=opts, input_shape=ctx.data.input_shape,
                          backend="eager", timer=fake_timer, references=3)
    path = tmp_path_factory.mktemp("lut") / "tiny.json"
    table.save(path)
    return path, table


def child_fake_ms(ctx: Any, arch: Architecture) -> float:
    return fake_ms(ctx.base_space.build_supernet().child(arch))


# -- the table --------------------------------------------------------------------------------------
def test_table_entries_fixed_part_and_prediction_are_the_known_answer(tiny_table: Any) -> None:
    path, table = tiny_table
    for row in table.blocks:
        for op, v in row.items():
            assert v == pytest.approx(block_ms(op))
    # fixed = stem (conv3+BN+ReLU) + down (conv3+BN+ReLU) + pool/flatten/head leaves + the child overhead
    ctx = make_context(tiny_config())
    rng = random.Random(1)
    for _ in range(5):
        a = ctx.space.sample(rng)
        assert table.predict(a) == pytest.approx(child_fake_ms(ctx, a), abs=1e-9)


def test_table_file_records_where_and_what_it_measured(tiny_table: Any) -> None:
    path, table = tiny_table
    data = json.loads(path.read_text())
    body = data.get("data", data)  # the digest wrapper of nascore.io, if any
    for key in ("device_model", "backend", "backend_version", "torch", "threads", "batch", "date", "space",
                "input_shape", "decisions", "macs_fingerprint", "warmup", "repeats"):
        assert key in body, key
    assert body["space"]["name"] == "tiny_chain" and body["batch"] == 1 and body["threads"] == torch.get_num_threads()
    assert body["blocks"][0]["conv5"]["median_ms"] == pytest.approx(3.02)
    assert body["blocks"][0]["conv5"]["iqr_ms"] > 0  # the spread is kept, not just the median
    again = L.LatencyTable.load(path)
    assert again.blocks == table.blocks and again.fixed_ms == table.fixed_ms


def test_table_file_schema_errors_name_the_field(tmp_path: Path, tiny_table: Any) -> None:
    _, table = tiny_table
    raw = table.to_json()
    broken = {k: v for k, v in raw.items() if k != "batch"}
    with pytest.raises(ConfigError, match="batch"):
        L.LatencyTable.from_json(broken)
    with pytest.raises(ConfigError, match="schema"):
        L.LatencyTable.from_json({**raw, "schema": "other/9"})
    short = json.loads(json.dumps(raw))
    del short["blocks"][0]["skip"]
    with pytest.raises(ConfigError, match="blocks"):
        L.LatencyTable.from_json(short)
    with pytest.raises(ConfigError, match="no such latency table"):
        L.LatencyTable.load(tmp_path / "missing.json")


def test_refuses_other_space_options_or_shape_and_warns_for_other_device(tiny_table: Any) -> None:
    path, table = tiny_table
    ctx = make_context(tiny_config())
    opts = ctx.options["space"].model_dump(mode="json")
    cost = ctx.base_space.cost_table(ctx.data.input_shape)
    shape = ctx.data.input_shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table.check_for("tiny_chain", opts, shape, cost)  # same machine, same everything: silent
    with pytest.raises(ConfigError, match="space 'tiny_chain'.*'mobilenet'"):
        table.check_for("mobilenet", opts, shape, cost)
    with pytest.raises(ConfigError, match="space options"):
        table.check_for("tiny_chain", {**opts, "width": opts["width"] * 2}, shape, cost)
    with pytest.raises(ConfigError, match="input shape"):
        table.check_for("tiny_chain", opts, (shape[0], shape[1] * 2, shape[2] * 2), cost)
    wider = make_context(tiny_config(space={"name": "tiny_chain", "options": {"width": opts["width"] * 2}}))
    with pytest.raises(ConfigError, match="MACs table differs"):
        table.check_for("tiny_chain", opts, shape, wider.base_space.cost_table(shape))
    other = L.LatencyTable({**table.meta, "device_model": "Some Other CPU 9000"}, table.fixed_ms, table.blocks)
    with pytest.warns(L.LatencyWarning, match="Some Other CPU 9000"):
        other.check_for("tiny_chain", opts, shape, cost)
    with pytest.warns(L.LatencyWarning, match="backend 'eager'"):
        table.check_for("tiny_chain", opts, shape, cost, backend="onnxruntime")


def test_a_run_refuses_a_table_for_another_space(tiny_table: Any) -> None:
    path, _ = tiny_table
    ctx = make_context(tiny_config(space={"name": "tiny_chain", "options": {"width": 16}},
                                   constraint={"latency_table": str(path)}))
    with pytest.raises(ConfigError, match="space options"):
        ctx.cost  # noqa: B018 - loading the table is what refuses


def test_latency_bounds_need_a_table_in_the_config() -> None:
    with pytest.raises(ConfigError, match="latency_table"):
        make_context(tiny_config(constraint={"latency_ms_max": 5.0}))


def test_real_timer_builds_every_backend_quickly() -> None:
    """One real (wall-clock) table per backend on the tiny chain: positive, finite entries."""
    ctx = make_context(tiny_config())
    for backend in ("eager", "torchscript") + (("onnxruntime",) if _has_ort() else ()):
        t = L.build_table(ctx.base_space, space_name="tiny_chain", input_shape=ctx.data.input_shape, backend=backend,
                          warmup=1, repeats=3, references=1)
        assert all(v > 0 and math.isfinite(v) for row in t.blocks for v in row.values()), backend
        assert t.meta["backend"] == backend


def _has_ort() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# -- latency as a constraint ------------------------------------------------------------------------
def _lat_ctx(path: Path, lat_max: float, **extra: Any) -> Any:
    ctx = make_context(tiny_config(constraint={"latency_table": str(path), "latency_ms_max": lat_max}, **extra))
    ctx.stage_key = "0"
    return ctx


def _feasible_share(ctx: Any, lat_max: float) -> tuple[list[Architecture], list[Architecture]]:
    ok, bad = [], []
    for a in ctx.space.enumerate():
        (ok if ctx.cost.latency_ms(a) <= lat_max else bad).append(a)
    return ok, bad


LAT_MAX = 7.5  # tiny_chain's children span ~5.6-16.9 ms under the fake timer: a bound that bites


def test_resource_constraint_latency_bounds() -> None:
    c = ResourceConstraint(latency_ms_max=2.0, latency_ms_min=1.0)
    assert c.admits(10, 10, 1.5) and not c.admits(10, 10, 2.5) and not c.admits(10, 10, 0.5)
    with pytest.raises(ConstraintError, match="latency"):
        c.admits(10, 10)
    assert "latency ≤ 2 ms" in ResourceConstraint(latency_ms_max=2.0).describe()


def test_ctx_feasible_and_random_search_honour_latency(tiny_table: Any) -> None:
    path, _ = tiny_table
    ctx = _lat_ctx(path, LAT_MAX)
    ok, bad = _feasible_share(ctx, LAT_MAX)
    assert ok and bad
    assert all(ctx.feasible(a) for a in ok) and not any(ctx.feasible(a) for a in bad)
    rng = random.Random(0)
    for _ in range(30):
        a = sample_feasible(ctx, rng)
        assert child_fake_ms(ctx, a) <= LAT_MAX  # the true (fake-measured) latency, not just the table's
    with pytest.raises(ConstraintError, match="fastest architecture is predicted"):
        _lat_ctx(path, 1.0).constraint.check_feasible(_lat_ctx(path, 1.0).cost, ctx.space.allowed)


@pytest.mark.parametrize("selector", [
    {"name": "random", "options": {"samples": 40}},
    {"name": "evolution", "options": {"population": 10, "generations": 3, "top_k": 4, "mutations": 5, "crossovers": 5}},
    {"name": "regularized_evolution", "options": {"population": 8, "cycles": 30}},
])
def test_search_selectors_stay_within_the_latency_limit_end_to_end(tiny_table: Any, tmp_path: Path, selector: dict) -> None:
    """Each selector maximises MACs (the ``macs`` evaluator); unconstrained they pick slow
    architectures, under the limit every candidate's measured latency is within it, results.json
    carries the predicted latency beside MACs."""
    path, _ = tiny_table
    stages = [{"kind": "search", "selector": selector, "evaluator": {"name": "macs"}, "keep": 5}]
    free = run_config(tiny_config(stages=stages, constraint={"latency_table": str(path)}), tmp_path / "free")
    assert child_fake_ms(free, free.candidates[0].arch) > LAT_MAX
    ctx = run_config(tiny_config(stages=stages, constraint={"latency_table": str(path), "latency_ms_max": LAT_MAX}),
                     tmp_path / "run")
    assert ctx.candidates
    for c in ctx.candidates:
        assert child_fake_ms(ctx, c.arch) <= LAT_MAX + 1e-9
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    results = results.get("data", results)
    cand = results["candidates"][0]
    assert cand["latency_ms"] == pytest.approx(child_fake_ms(ctx, ctx.candidates[0].arch))
    assert "latency" in results["constraint"] and "latency_table" in results


def test_report_and_compare_show_latency(tiny_table: Any, tmp_path: Path) -> None:
    from nascore.report import compare, summary_table, write_report

    path, _ = tiny_table
    stages = [{"kind": "search", "selector": {"name": "random", "options": {"samples": 10}}, "evaluator": {"name": "macs"}}]
    ctx = run_config(tiny_config(stages=stages, constraint={"latency_table": str(path), "latency_ms_max": LAT_MAX}),
                     tmp_path / "a")
    plain = run_config(tiny_config(stages=stages), tmp_path / "b")
    assert "latency ms" in summary_table(ctx) and "latency ms" not in summary_table(plain)
    table = compare([tmp_path / "a", tmp_path / "b"])
    assert "latency ms" in table.splitlines()[0]
    assert f"{ctx.cost.latency_ms(ctx.candidates[0].arch):.3f}" in table
    assert "latency ms" not in compare([tmp_path / "b"])
    html = write_report(tmp_path / "a").read_text()
    assert "latency ms (predicted / measured)" in html


def test_export_measures_the_exported_model_beside_the_prediction(tiny_table: Any, tmp_path: Path) -> None:
    path, _ = tiny_table
    stages = [{"kind": "search", "selector": {"name": "random", "options": {"samples": 5}}, "evaluator": {"name": "macs"}},
              {"kind": "export", "formats": ["json", "torchscript"]}]
    # a real timer here: the fake table predicts fake ms, the export measures real ms; both are recorded
    ctx = run_config(tiny_config(stages=stages, constraint={"latency_table": str(path)}), tmp_path / "r")
    arch = json.loads((tmp_path / "r" / "export" / "0" / "arch.json").read_text())
    arch = arch.get("data", arch)
    lat = arch["latency"]
    assert lat["timed"] == "model.ts" or lat["backend"] != "torchscript"
    assert lat["median_ms"] > 0 and lat["predicted_ms"] == pytest.approx(ctx.cost.latency_ms(ctx.candidates[0].arch))
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    results = results.get("data", results)
    assert results["candidates"][0]["latency_measured"]["median_ms"] == pytest.approx(lat["median_ms"])


def test_spos_binned_sampler_bins_span_predicted_latency_clipped_to_the_limit(tiny_table: Any) -> None:
    from nascore.builtin.spos import SposConfig, SposTrainer

    path, _ = tiny_table
    ctx = _lat_ctx(path, LAT_MAX)
    tr = SposTrainer(SposConfig(sampler="flops_binned", bins=3, bin_cost="latency_ms", bin_quantiles=(0.0, 1.0)), ctx)
    tr.rng = random.Random(0)
    tr.setup(ctx)
    lats = sorted(ctx.cost.latency_ms(a) for a in ctx.space.enumerate())
    assert tr.edges[0] == pytest.approx(lats[0]) and tr.edges[-1] == pytest.approx(LAT_MAX)
    for _ in range(30):
        a = tr.sample_arch(ctx)
        assert tr.edges[0] <= ctx.cost.latency_ms(a) <= tr.edges[-1] + 1e-9
    with pytest.raises(ConfigError, match="latency_table"):
        SposTrainer(SposConfig(sampler="flops_binned", bin_cost="latency_ms"), None).bin_value(
            make_context(tiny_config()).cost, ctx.space.first())


def test_dna_combiner_is_exact_under_a_latency_budget() -> None:
    pytest.importorskip("nascore_dna")
    from nascore_dna.selector import BlockItem, best_combinations

    rng = random.Random(3)
    blocks = [[BlockItem(rng.random(), rng.randrange(50), 0, f"b{b}o{i}", rng.uniform(0.5, 3.0)) for i in range(4)]
              for b in range(4)]
    c = ResourceConstraint(latency_ms_max=6.0)
    got = best_combinations(blocks, c, k=3, fixed_latency_ms=0.7)
    brute = sorted(
        (sum(blocks[b][i].loss for b, i in enumerate(idx)), idx)
        for idx in itertools.product(range(4), repeat=4)
        if 0.7 + sum(blocks[b][i].latency_ms for b, i in enumerate(idx)) <= 6.0)[:3]
    assert [i for _, i in got] == [i for _, i in brute]
    assert got[0][1] != min(itertools.product(range(4), repeat=4),
                            key=lambda idx: sum(blocks[b][i].loss for b, i in enumerate(idx)))  # the budget binds


def test_cream_board_admits_only_paths_within_the_latency_limit(tiny_table: Any) -> None:
    pytest.importorskip("nascore_cream")
    from nascore_cream import plugin as cream_plugin
    from nascore_cream.distill import PathDistillOptions, PrioritizedPaths

    path, _ = tiny_table
    cfg = tiny_config(constraint={"latency_table": str(path), "latency_ms_max": LAT_MAX})
    ctx = make_context(cfg, plugins=[cream_plugin])
    ctx.stage_key = "0"
    engine = PrioritizedPaths(PathDistillOptions(score="train"), ctx, "trainer")
    net = ctx.supernet
    x, y = next(iter(ctx.data.batches("train", epoch=0, limit=1, device=ctx.device, shard=False)))
    ok, bad = _feasible_share(ctx, LAT_MAX)
    for a in bad[:3] + ok[:3]:
        net.set_active(a)
        engine.offer(net, net(x), None, x, y, a, ctx, 0)
    assert len(engine.board) == 3 and all(ctx.cost.latency_ms(e.arch) <= LAT_MAX for e in engine.board)


def test_abs_pools_hold_only_architectures_within_the_latency_limit(tiny_table: Any) -> None:
    pytest.importorskip("nascore_abs")
    from nascore_abs.shrink import AbsShrink, AbsShrinkConfig

    path, _ = tiny_table
    ctx = _lat_ctx(path, LAT_MAX)
    competing = [(i, o) for i, d in enumerate(ctx.space.decisions) for o in d.options]
    pools = AbsShrink(AbsShrinkConfig(), ctx)._pools(ctx, ctx.space, competing, 50, random.Random(0))
    archs = {a for p in pools.values() for a in p}
    assert archs and all(ctx.cost.latency_ms(a) <= LAT_MAX for a in archs)
    assert len(archs) == len(_feasible_share(ctx, LAT_MAX)[0])
    shrunk = ctx.space.restrict({0: ["conv5"], 1: ["conv5"], 2: ["conv5"]})
    with pytest.raises(ConstraintError, match="latency"):
        ctx.constraint.check_feasible(ctx.cost, shrunk.allowed)  # what ABS checks after each drop


def test_neas_ensembles_get_predicted_latency_and_feasibility(tmp_path: Path) -> None:
    pytest.importorskip("nascore_neas")
    from nascore_neas import plugin as neas_plugin

    cfg = tiny_config(space={"name": "neas_ensemble", "options": {"base": {"name": "tiny_chain"}}})
    try:
        ctx = make_context(cfg, plugins=[neas_plugin])
    except ConfigError:
        pytest.skip("neas_ensemble options differ")
    space = ctx.base_space
    table = L.build_table(space, space_name="neas_ensemble", space_options=ctx.options["space"].model_dump(mode="json"),
                          input_shape=ctx.data.input_shape, backend="eager", timer=fake_timer, references=2)
    p = tmp_path / "neas.json"
    table.save(p)
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(12)]
    lats = [table.predict(a) for a in archs]
    limit = sorted(lats)[len(lats) // 2]
    cfg["constraint"] = {"latency_table": str(p), "latency_ms_max": limit}
    ctx = make_context(cfg, plugins=[neas_plugin])
    assert [ctx.feasible(a) for a in archs] == [v <= limit for v in lats]
    assert ctx.cost.macs(archs[0]) == space.cost_table(ctx.data.input_shape).macs(archs[0])  # MACs unchanged


def test_nse_multi_branch_options_sum_their_members(tiny_table: Any) -> None:
    path, table = tiny_table
    a = Architecture([frozenset({"conv3", "conv5"}), "skip", "skip", "skip"])
    assert table.block_sum(a) == pytest.approx(block_ms("conv3") + block_ms("conv5") + 3 * block_ms("skip"))


# -- the prediction models --------------------------------------------------------------------------
def _synthetic(n: int = 60, seed: int = 0) -> list[L.ChildFeatures]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ops = tuple(rng.choice(["a", "b", "c"]) for _ in range(6))
        s = sum({"a": 1.0, "b": 2.0, "c": 0.5}[o] for o in ops) + rng.uniform(0, 0.01)
        out.append(L.ChildFeatures(s, 0.3, 1e6 * s, 1e5, ops))
    return out


def test_affine_model_recovers_a_known_scale_and_overhead() -> None:
    xs = _synthetic()
    y = [1.3 * f.block_sum + 0.7 for f in xs]
    m = L.Affine().fit(xs, y)
    assert m.a == pytest.approx(1.3) and m.c == pytest.approx(0.7)
    res = L.compare_models(xs, y)
    assert res["affine"]["mape_pct"] < 1e-6 and res["affine"]["within10_pct"] == 100.0
    assert res["affine"]["kendall_tau"] == pytest.approx(1.0)
    assert res["sum"]["mape_pct"] > 10  # the plain sum misses the scale and the overhead


def test_constant_model_recovers_a_known_per_network_overhead() -> None:
    xs = _synthetic()
    y = [f.block_sum + 2.5 for f in xs]
    assert L.FittedConstant().fit(xs, y).c == pytest.approx(2.5)
    assert L.compare_models(xs, y)["constant"]["mape_pct"] < 1e-6


def test_transition_model_recovers_a_known_interaction() -> None:
    """Latency = Σ blocks + 0.4 ms for every a→b neighbour pair: only the transition model sees it."""
    xs = _synthetic(120)
    y = [f.block_sum + 0.2 + 0.4 * sum(1 for p, q in zip(f.ops, f.ops[1:]) if (p, q) == ("a", "b")) for f in xs]
    m = L.Transitions(ridge=1e-8).fit(xs, y)
    w = dict(zip(m.keys + ["const"], m.w))
    assert w["a>b"] - w["b>a"] == pytest.approx(0.4, abs=1e-4)
    res = L.compare_models(xs, y)
    assert res["transitions"]["mape_pct"] < res["constant"]["mape_pct"] / 5


def test_check_on_a_fake_timer_is_exact_and_calibration_is_additive(tiny_table: Any) -> None:
    _, table = tiny_table
    ctx = make_context(tiny_config())
    res = L.check(ctx.base_space, table, n=15, timer=fake_timer)
    assert res["n"] == 15 and res["models"]["sum"]["mape_pct"] < 1e-6 and res["models"]["sum"]["within10_pct"] == 100
    assert res["models"]["sum"]["kendall_tau"] > 0.95  # < 1 only by float ties of equal-latency children
    cal = res["calibration"]
    assert cal["scale"] == pytest.approx(1.0) and cal["offset"] == pytest.approx(table.fixed_ms)
    scaled = L.LatencyTable(table.meta, table.fixed_ms, table.blocks, {**cal, "scale": 2.0, "offset": 1.0})
    cost = scaled.attach(ctx.base_space.cost_table(ctx.data.input_shape))
    a = ctx.space.first()
    assert cost.latency_ms(a) == pytest.approx(2.0 * table.block_sum(a) + 1.0) == pytest.approx(scaled.predict(a))
    assert L.errors([1.0, 2.19], [1.0, 2.0])["within10_pct"] == 100.0
    assert L.errors([1.0, 2.3], [1.0, 2.0])["within10_pct"] == 50.0


def test_estimator_min_keeps_the_fastest_sample_and_the_file_keeps_all(tmp_path: Path) -> None:
    ctx = make_context(tiny_config())
    t = L.build_table(ctx.base_space, space_name="tiny_chain", input_shape=ctx.data.input_shape, backend="eager",
                      timer=fake_timer, references=1, estimator="min")
    assert t.blocks[0]["conv5"] == pytest.approx(0.97 * block_ms("conv5"))
    t.save(tmp_path / "t.json")
    raw = L.LatencyTable.load(tmp_path / "t.json").raw
    entry = raw["blocks"][0]["conv5"]
    assert raw["estimator"] == "min" and entry["median_ms"] == pytest.approx(block_ms("conv5"))
    assert entry["p10_ms"] < entry["median_ms"]
    with pytest.raises(Exception, match="estimator"):
        L.build_table(ctx.base_space, space_name="tiny_chain", timer=fake_timer, estimator="mean")
