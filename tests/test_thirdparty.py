"""A third-party search space and selector written from docs/writing-plugins.md alone pass the contract
suite; broken variants of each role fail it, naming the check (the suite has teeth)."""

from __future__ import annotations

import random
import types

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from nascore import hookimpl
from nascore.roles import SearchResult
from nascore.search import evaluate, rank, sample_feasible
from nascore.space import ChoiceLayer, Decision, SearchSpace, Supernet
from nascore.testing import (ContractError, check_evaluator, check_selector, check_space, check_trainer,
                             make_registry)
from nascore.trainer import SupernetTrainer, TrainerConfig

torch.set_num_threads(1)


# -- a space: two stages of choice layers over {conv1, conv3, pool}, a stride-2 fixed conv between ------
def block(op: str, c: int) -> nn.Module:
    if op == "pool":
        return nn.Sequential(nn.AvgPool2d(3, 1, 1), nn.BatchNorm2d(c))
    k = int(op[-1])
    return nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c), nn.ReLU())


class TwoStageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    per_stage: int = Field(2, gt=0, description="choice layers per stage")
    width: int = Field(6, gt=0, description="channels of the first stage (doubled in the second)")
    ops: tuple[str, ...] = Field(("conv1", "conv3", "pool"), description="candidate ops")


class TwoStageSpace(SearchSpace):
    name = "two_stage"

    def __init__(self, cfg: TwoStageConfig, *, input_shape=(1, 28, 28), num_classes: int = 10) -> None:
        super().__init__([Decision(f"s{s}l{i}", cfg.ops) for s in range(2) for i in range(cfg.per_stage)],
                         input_shape=input_shape, num_classes=num_classes)
        self.cfg = cfg

    def build_supernet(self) -> Supernet:
        return TwoStageSupernet(self)


class TwoStageSupernet(Supernet):
    def __init__(self, space: TwoStageSpace) -> None:
        super().__init__(space)
        w, n = space.cfg.width, space.cfg.per_stage
        self.stem = nn.Sequential(nn.Conv2d(space.input_shape[0], w, 3, padding=1, bias=False), nn.BatchNorm2d(w))
        self.first = nn.ModuleList(ChoiceLayer({o: block(o, w) for o in space.cfg.ops}) for _ in range(n))
        self.down = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.second = nn.ModuleList(ChoiceLayer({o: block(o, 2 * w) for o in space.cfg.ops}) for _ in range(n))
        for i in range(n):
            self.bind(i, f"first.{i}")
            self.bind(n + i, f"second.{i}")
        self.head = nn.Linear(2 * w, space.num_classes)

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.first:
            x = layer(x)
        x = self.down(x)
        for layer in self.second:
            x = layer(x)
        return self.head(x.mean((2, 3)))


def make_two_stage(cfg: TwoStageConfig, ctx) -> TwoStageSpace:
    return TwoStageSpace(cfg, input_shape=ctx.data.input_shape, num_classes=ctx.data.num_classes)


# -- a selector: tournament search (sample, keep the best half, mutate them) ------------------------------
class TournamentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pool: int = Field(6, gt=1, description="architectures per round")
    rounds: int = Field(3, gt=0, description="rounds")


class Tournament:
    def __init__(self, cfg: TournamentConfig, ctx=None) -> None:
        self.cfg = cfg

    def search(self, ctx, evaluator) -> SearchResult:
        rng = random.Random(ctx.stage_seed("tournament"))
        rounds = 2 if ctx.smoke else self.cfg.rounds
        seen: dict = {}
        pool = [sample_feasible(ctx, rng) for _ in range(self.cfg.pool)]
        for r in range(rounds):
            fresh = list(dict.fromkeys(a for a in pool if a not in seen))
            for cand in evaluate(ctx, evaluator, fresh, origin=f"tournament:{r}"):
                seen[cand.arch] = cand
            best = rank([seen[a] for a in dict.fromkeys(pool)])[: max(1, len(pool) // 2)]
            pool = [c.arch for c in best]
            while len(pool) < self.cfg.pool:
                child = ctx.space.mutate(rng.choice(best).arch, 0.5, rng)
                if ctx.feasible(child):
                    pool.append(child)
        return SearchResult(candidates=rank(list(seen.values())), info={"evaluated": len(seen)})


# -- broken variants (each breaks one clause of the contract) -----------------------------------------------
class FixedPathSupernet(TwoStageSupernet):
    """forward_path ignores what set_active chose: always the first op."""

    def forward_path(self, x):
        x = self.stem(x)
        for layer in self.first:
            x = next(iter(layer.candidates.values()))(x)
        x = self.down(x)
        for layer in self.second:
            x = next(iter(layer.candidates.values()))(x)
        return self.head(x.mean((2, 3)))


class FixedPathSpace(TwoStageSpace):
    def build_supernet(self):
        return FixedPathSupernet(self)


def make_fixed_path(cfg, ctx):
    return FixedPathSpace(cfg, input_shape=ctx.data.input_shape, num_classes=ctx.data.num_classes)


def make_hardcoded_shape(cfg, ctx):
    return TwoStageSpace(cfg)  # ignores ctx.data


class IgnoresConstraint(Tournament):
    def search(self, ctx, evaluator):
        rng = random.Random(ctx.stage_seed("x"))
        archs = list(dict.fromkeys(ctx.space.sample(rng) for _ in range(6)))
        return SearchResult(candidates=rank(evaluate(ctx, evaluator, archs)))


class Unseeded(Tournament):
    def search(self, ctx, evaluator):
        rng = random.Random()  # not from ctx.stage_seed
        archs = list(dict.fromkeys(sample_feasible(ctx, rng) for _ in range(3)))
        return SearchResult(candidates=rank(evaluate(ctx, evaluator, archs)))


class NoisyEvaluator:
    metric = "noise"
    higher_is_better = True

    def __init__(self, cfg, ctx=None):
        pass

    def score(self, archs, ctx):
        return [{"noise": float(torch.rand(()))} for _ in archs]


class ShrinksAllWeights(SupernetTrainer):
    """After each step multiplies every weight, used or not: unused ops change."""

    def after_step(self, ctx, x, y, arch, logits, loss):
        with torch.no_grad():
            for p in ctx.supernet.parameters():
                p.mul_(0.99)
        return {}


@hookimpl
def register_search_spaces(register):
    register("two_stage", make_two_stage, config=TwoStageConfig, summary="third-party: two stages of choice layers")
    register("fixed_path", make_fixed_path, config=TwoStageConfig, summary="broken: ignores set_active")
    register("hardcoded_shape", make_hardcoded_shape, config=TwoStageConfig, summary="broken: ignores ctx.data")


@hookimpl
def register_selectors(register):
    register("tournament", Tournament, config=TournamentConfig, summary="third-party: tournament search")
    register("ignores_constraint", IgnoresConstraint, config=TournamentConfig, summary="broken")
    register("unseeded", Unseeded, config=TournamentConfig, summary="broken")


@hookimpl
def register_evaluators(register):
    register("noisy", NoisyEvaluator, summary="broken: unseeded noise")


@hookimpl
def register_trainers(register):
    register("shrinks_all", ShrinksAllWeights, config=TrainerConfig, summary="broken: touches unused ops")


PLUGIN = types.ModuleType("thirdparty_plugin")
for _f in (register_search_spaces, register_selectors, register_evaluators, register_trainers):
    setattr(PLUGIN, _f.__name__, _f)


@pytest.fixture(scope="module")
def reg():
    return make_registry(PLUGIN)


def test_the_thirdparty_space_passes_the_contract(reg):
    check_space("two_stage", registry=reg)


def test_the_thirdparty_selector_passes_the_contract(reg, tmp_path):
    cands = check_selector("tournament", tmp_path, registry=reg, config={"space": {"name": "two_stage"}},
                           options={"pool": 4})
    assert len(cands) >= 4


@pytest.mark.parametrize("space, check", [("fixed_path", "child"), ("hardcoded_shape", "context")])
def test_a_broken_space_fails_naming_the_check(reg, space, check):
    with pytest.raises(ContractError, match=f"space '{space}': {check}"):
        check_space(space, registry=reg)


@pytest.mark.parametrize("selector, check", [("ignores_constraint", "constraint"), ("unseeded", "determinism")])
def test_a_broken_selector_fails_naming_the_check(reg, tmp_path, selector, check):
    with pytest.raises(ContractError, match=f"selector '{selector}': {check}"):
        check_selector(selector, tmp_path, registry=reg)


def test_a_noisy_evaluator_fails_determinism(reg):
    with pytest.raises(ContractError, match="evaluator 'noisy': determinism"):
        check_evaluator("noisy", registry=reg)


def test_a_trainer_touching_unused_ops_fails(reg, tmp_path):
    with pytest.raises(ContractError, match="trainer 'shrinks_all': unused ops"):
        check_trainer("shrinks_all", tmp_path, registry=reg)


def test_nascore_testing_imports_without_pytest_and_only_a_fixture_needs_it():
    import subprocess
    import sys

    code = ("import sys; sys.modules['pytest'] = None\n"  # an environment without pytest
            "import nascore.testing as t\n"
            "assert callable(t.check_space) and t.pytest is None\n"
            "try:\n    t.rng()\nexcept ImportError as e:\n    print('fixture:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "needs pytest" in out.stdout


def test_the_cli_gives_a_space_factory_a_context(reg, capsys):
    """`nascore spaces/sample/cost` build a factory that reads ctx.data (it crashed on ctx=None)."""
    from nascore import cli
    from nascore.registry import set_registry

    set_registry(reg)
    try:
        assert cli.main(["spaces"]) == 0
        listing = capsys.readouterr().out
        row = [ln for ln in listing.splitlines() if ln.startswith("two_stage")]
        assert row and "failed" not in row[0] and " 81 " in row[0], listing  # 2 x 2 layers of 3 ops
        assert cli.main(["sample", "two_stage", "-n", "2"]) == 0
        arch = capsys.readouterr().out.split()[0]
        assert cli.main(["cost", "two_stage", arch, "--input", "3x32x32", "--check"]) == 0
        out = capsys.readouterr().out
        assert "input 3x32x32" in out and "agree" in out, out
    finally:
        set_registry(None)


def test_the_examples_of_writing_plugins_md_pass_the_contract_suite(tmp_path):
    """The space, selector, evaluator, trainer and distiller shown in docs/writing-plugins.md §3, run as written."""
    import re
    from pathlib import Path

    from nascore.testing import check_distiller

    doc = (Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md").read_text()
    section = doc[doc.index("## 3. The components"):doc.index("### Datasets and recipes")]
    ns: dict = {}
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        exec(compile(block, "docs/writing-plugins.md", "exec"), ns)

    class WalkConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        steps: int = 6

    class SoftConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        teacher: str = "supernet"
        temperature: float = 4.0

    plugin = types.ModuleType("docs_examples")
    plugin.register_search_spaces = hookimpl(lambda register: register("my_chain", ns["make_chain"],
                                                                       config=ns["ChainConfig"]))
    plugin.register_selectors = hookimpl(lambda register: register("random_walk", ns["RandomWalk"], config=WalkConfig))
    plugin.register_evaluators = hookimpl(lambda register: register("params_per_mac", ns["ParamsPerMac"]))
    plugin.register_trainers = hookimpl(lambda register: register("greedy", ns["GreedyTrainer"],
                                                                  config=ns["GreedyConfig"]))
    plugin.register_distillers = hookimpl(lambda register: register("soft", ns["SoftTargets"], config=SoftConfig))
    reg = make_registry(plugin)
    mine = {"space": {"name": "my_chain"}}
    check_space("my_chain", registry=reg)
    check_selector("random_walk", tmp_path / "s", registry=reg, config=mine)
    check_evaluator("params_per_mac", registry=reg, config=mine)
    check_trainer("greedy", tmp_path / "t", registry=reg, config=mine)
    check_distiller("soft", tmp_path / "d", registry=reg, config=mine)
