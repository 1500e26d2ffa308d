"""The ``evolution`` selector (SPOS search): constraint, visited set, beats random, resumes exactly."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from nascore.arch import Architecture
from nascore.builtin.evolution import EvolutionConfig
from nascore.registry import hookimpl
from nascore.testing import make_registry, run_config

torch.set_num_threads(1)

LAYERS = 12  # tiny_chain with 12 layers: 3^12 = 531,441 architectures
CALLS: list[Architecture] = []  # every architecture the landscape evaluator was asked to score
KILL: dict[str, int | None] = {"after": None}  # raise after this many more scores (a simulated kill)


class Killed(RuntimeError):
    pass


class LandscapeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0


class ChainLandscape:
    """A seeded synthetic score with a known optimum: per-layer op values plus interactions of
    neighbouring layers (so the best op of a layer depends on its neighbours); the optimum is found
    exactly by dynamic programming over the chain."""

    metric = "fitness"
    higher_is_better = True

    def __init__(self, cfg: LandscapeConfig, ctx: Any = None) -> None:
        rng = random.Random(cfg.seed)
        ops = ("conv3", "conv5", "skip")
        self.ops = ops
        self.unary = [{o: rng.gauss(0, 1) for o in ops} for _ in range(LAYERS)]
        self.pair = [{(a, b): rng.gauss(0, 1) for a in ops for b in ops} for _ in range(LAYERS - 1)]

    def value(self, arch: Architecture) -> float:
        v = sum(self.unary[i][o] for i, o in enumerate(arch.ops))
        return v + sum(self.pair[i][(arch[i], arch[i + 1])] for i in range(LAYERS - 1))

    def optimum(self) -> float:
        best = {o: self.unary[0][o] for o in self.ops}
        for i in range(1, LAYERS):
            best = {b: max(best[a] + self.pair[i - 1][(a, b)] for a in self.ops) + self.unary[i][b] for b in self.ops}
        return max(best.values())

    def score(self, archs: list[Architecture], ctx: Any) -> list[dict[str, float]]:
        out = []
        for a in archs:
            if KILL["after"] is not None:
                if KILL["after"] <= 0:
                    raise Killed("simulated kill")
                KILL["after"] -= 1
            CALLS.append(a)
            out.append({"fitness": self.value(a)})
        return out


@hookimpl
def register_evaluators(register: Any) -> None:
    register("landscape", ChainLandscape, config=LandscapeConfig, summary="test landscape")


PLUGIN = (SimpleNamespace(register_evaluators=register_evaluators), "landscape_plugin")


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    KILL["after"] = None


def config(selector: dict[str, Any], seed: int = 0, landscape: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "name": "evo", "seed": seed, "device": "cpu",
        "space": {"name": "tiny_chain", "options": {"layers": LAYERS}},
        "dataset": {"name": "synthetic"},
        "stages": [{"kind": "search", "selector": selector, "evaluator": {"name": "landscape", "options": {"seed": landscape}},
                    "keep": 5000}],
        **extra,
    }


def run(data: dict[str, Any], run_dir: Path | None = None, smoke: bool = False) -> Any:
    return run_config(data, run_dir, registry=make_registry(PLUGIN), smoke=smoke)


def test_every_candidate_satisfies_the_constraint_and_none_is_evaluated_twice() -> None:
    limit = 1.6e6
    ctx = run(config({"name": "evolution"}, constraint={"macs_max": limit}))
    assert len(CALLS) == len(set(CALLS)) > 900  # the visited set: ~1,050 distinct evaluations
    assert all(ctx.cost.macs(a) <= limit for a in CALLS)  # the evaluator never saw an illegal arch
    assert all(c.macs <= limit for c in ctx.candidates)
    assert len(ctx.candidates) == len(CALLS)  # every evaluated arch is ranked (the last generation too)
    scores = [c.score for c in ctx.candidates]
    assert scores == sorted(scores, reverse=True)
    last = max(int(c.origin.split(":")[1][3:]) for c in ctx.candidates)
    assert last == EvolutionConfig().generations
    from nascore.cost import fvcore_macs

    net = ctx.base_space.build_supernet()
    for c in ctx.candidates[:2]:  # the table's MACs are fvcore's
        assert fvcore_macs(net.child(c.arch), ctx.data.input_shape) == c.macs


def _metrics(ctx: Any) -> list[dict]:
    import json

    path = ctx.run_dir / "metrics.jsonl" if ctx.run_dir else None
    return [json.loads(line) for line in path.read_text().splitlines()] if path else []


def test_generation_metrics_are_logged(tmp_path: Path) -> None:
    ctx = run(config({"name": "evolution", "options": {"generations": 3, "population": 10, "top_k": 3,
                                                        "mutations": 4, "crossovers": 4}}), tmp_path / "r")
    gens = [r for r in _metrics(ctx) if r.get("kind") == "generation"]
    assert [g["generation"] for g in gens] == [0, 1, 2, 3]
    assert all({"best", "mean", "topk_best", "topk_mean", "best_arch"} <= set(g) for g in gens)
    assert gens[-1]["topk_best"] == ctx.candidates[0].score
    assert [g["topk_best"] for g in gens] == sorted(g["topk_best"] for g in gens)  # top-k never gets worse


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evolution_beats_random_search_with_the_same_number_of_evaluations(seed: int) -> None:
    landscape = ChainLandscape(LandscapeConfig(seed=seed))
    optimum = landscape.optimum()
    evo = run(config({"name": "evolution"}, seed=seed, landscape=seed))
    n = len(CALLS)
    CALLS.clear()
    rnd = run(config({"name": "random", "options": {"samples": n}}, seed=seed, landscape=seed))
    assert len(CALLS) == n
    best_evo, best_rnd = evo.candidates[0].score, rnd.candidates[0].score
    assert best_evo > best_rnd
    assert optimum - best_evo < 0.5 * (optimum - best_rnd), (optimum, best_evo, best_rnd)
    # measured: with SPOS's defaults (~1,050 evaluations of 531,441) it finds the exact optimum
    assert best_evo == pytest.approx(optimum, abs=1e-9)


def test_same_seed_same_result_and_resume_after_a_kill(tmp_path: Path) -> None:
    sel = {"name": "evolution", "options": {"generations": 6}}
    full = run(config(sel, seed=3), tmp_path / "full")
    expected = [(c.arch_str, c.score, c.origin) for c in full.candidates]
    again = run(config(sel, seed=3), tmp_path / "again")
    assert [(c.arch_str, c.score, c.origin) for c in again.candidates] == expected

    CALLS.clear()
    KILL["after"] = 50 * 3 + 20  # dies inside generation 3
    with pytest.raises(Killed):
        run(config(sel, seed=3), tmp_path / "killed")
    import json

    state = json.loads((tmp_path / "killed" / "state.json").read_text())
    saved = state["evolution"]["0"]
    assert saved["generation"] == 2 and not saved["done"]
    before = {tuple(c["ops"]) for c in saved["evaluated"]}
    CALLS.clear()
    KILL["after"] = None
    from nascore.pipeline.run import resume_run, run_pipeline

    ctx = resume_run(tmp_path / "killed", quiet=True, registry=make_registry(PLUGIN))
    run_pipeline(ctx)
    ctx.log.close()
    assert [(c.arch_str, c.score, c.origin) for c in ctx.candidates] == expected
    assert not before & {tuple(a.ops) for a in CALLS}  # nothing saved was evaluated again


def test_smoke_budget_is_tiny() -> None:
    ctx = run(config({"name": "evolution"}), smoke=True)
    assert 8 < len(CALLS) <= 8 * 3
    assert {c.origin.split(":")[1] for c in ctx.candidates} <= {"gen0", "gen1", "gen2"}


def test_a_tiny_space_is_exhausted_without_duplicates() -> None:
    data = config({"name": "evolution"})
    data["space"]["options"]["layers"] = 3  # 27 architectures, fewer than one population
    data["stages"][0]["evaluator"]["name"] = "landscape"
    global LAYERS
    saved, LAYERS = LAYERS, 3
    try:
        ctx = run(data)
    finally:
        LAYERS = saved
    assert len(CALLS) == len(set(CALLS)) == 27 == len(ctx.candidates)


def test_an_impossible_constraint_is_a_clear_error() -> None:
    from nascore.errors import ConstraintError

    with pytest.raises(ConstraintError, match="constraint"):
        run(config({"name": "evolution"}, constraint={"macs_max": 10}))


def test_bad_options_name_the_field() -> None:
    from nascore.errors import ConfigError

    with pytest.raises(ConfigError, match="mutation_prob"):
        run(config({"name": "evolution", "options": {"mutation_prob": 2}}))
