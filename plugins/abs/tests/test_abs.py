"""ABS (abs_shrink): never empties a layer, drops a deliberately bad op, resumes exactly, composes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import nascore_abs.plugin as abs_plugin
import nascore_spos.plugin as spos_plugin
import pytest
import torch
import yaml
from nascore_abs.shrink import AbsShrink, AbsShrinkConfig, shrink_history
from pydantic import BaseModel, ConfigDict
from torch import nn

import nascore.builtin.tiny as tiny
from nascore.builtin.angle import AngleEvaluator
from nascore.errors import ConfigError
from nascore.registry import hookimpl
from nascore.pipeline.run import resume_run
from nascore.testing import make_context, make_registry, run_config, tiny_config

torch.set_num_threads(1)
PLUGINS = (abs_plugin, spos_plugin)


def _shrink_stage(**options: Any) -> dict[str, Any]:
    opts = {"target_size": 8, "drop_per_round": 2, "sample_num": 50, "epochs_between": 1, **options}
    return {"kind": "shrink", "selector": {"name": "abs_shrink", "options": opts}, "evaluator": "angle"}


def _config(*stages: dict[str, Any], seed: int = 0, **kw: Any) -> dict[str, Any]:
    train = {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 2, "lr": 0.1}}}
    return tiny_config(seed=seed, stages=[train, *stages], **kw)


# -- the drop rule ----------------------------------------------------------------------------
def test_drop_never_empties_a_layer_and_keeps_each_layers_best() -> None:
    ctx = make_context(tiny_config(space={"name": "tiny_chain", "options": {"layers": 5}}))
    rng = random.Random(0)
    for trial in range(200):
        space = ctx.base_space
        # a random already-shrunk space, then random operator scores
        space = space.restrict({i: rng.sample(list(a), rng.randint(1, len(a))) for i, a in enumerate(space.allowed)})
        scores = {(i, o): rng.random() for i, a in enumerate(space.allowed) if len(a) > 1 for o in a}
        shrinker = AbsShrink(AbsShrinkConfig(target_size=1, drop_per_round=rng.randint(1, 12)))
        new, dropped = shrinker._drop(ctx, space, scores)
        assert all(len(a) >= 1 for a in new.allowed)
        for i, allowed in enumerate(space.allowed):
            if len(allowed) > 1:
                best = max(allowed, key=lambda o: scores[(i, o)])
                assert best in new.allowed[i]
        # what was dropped are the lowest-scoring droppable operators, in ascending order
        assert [scores[d] for d in dropped] == sorted(scores[d] for d in dropped)
        assert len(dropped) <= shrinker.cfg.drop_per_round
        for layer, op in dropped:
            assert op not in new.allowed[layer]


def test_shrinks_to_the_target_and_the_next_stages_search_the_shrunk_space(tmp_path: Path) -> None:
    cfg = _config(
        _shrink_stage(replace_w0_after=1),
        {"kind": "train", "trainer": {"name": "spos", "options": {"epochs": 1}}},
        {"kind": "search", "selector": {"name": "evolution", "options": {"population": 6, "generations": 2,
                                                                          "top_k": 2, "mutations": 2, "crossovers": 2}},
         "evaluator": "accuracy"},
    )
    ctx = run_config(cfg, tmp_path / "run", plugins=PLUGINS)
    history = shrink_history(ctx)
    assert ctx.space.size() <= 8 < 81
    assert all(len(a) >= 1 for a in ctx.space.allowed)
    sizes = [81] + [r["size"] for r in history]
    assert sizes == sorted(sizes, reverse=True) and len(history) >= 3
    assert all(len(r["dropped"]) <= 2 for r in history)
    # every candidate of the evolution stage comes from the shrunk space
    assert ctx.candidates and all(ctx.space.contains(c.arch) for c in ctx.candidates)
    st = ctx.state["abs_shrink"]["1"]
    assert st["w0_replaced_at"] == 0  # 2 ops dropped in round 0 > replace_w0_after=1
    assert ctx.state["space_allowed"] == st["allowed"]


def test_reinit_rerecords_w0_and_resume_gives_the_same_space(tmp_path: Path) -> None:
    """A kill in the middle of shrinking (inside a training phase) and a resume end where an
    uninterrupted run ends; with reinit, W0 is the re-initialised supernet."""
    cfg = _config(_shrink_stage(target_size=4, drop_per_round=1, epochs_between=2), checkpoint_every=5)
    full = run_config(cfg, tmp_path / "full", plugins=PLUGINS)
    assert full.space.size() <= 4
    assert AngleEvaluator().score(list(full.space.enumerate()), full) == [{"angle": 0.0}] * full.space.size()

    class Killed(RuntimeError):
        pass

    calls = {"n": 0}
    original = AbsShrink._train

    def dying(self: AbsShrink, ctx: Any, r: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # third training phase: stop after a few steps, mid-phase
            trainer_fit = ctx.registry.get("trainer", self.cfg.trainer).factory

            class Stop(trainer_fit):  # type: ignore[misc, valid-type]
                def after_step(self, *a: Any) -> dict[str, float]:
                    if self.step == 7:
                        raise Killed()
                    return {}

            stop = Stop(self._trainer_options, ctx)
            key = ctx.stage_key
            ctx.stage_key = f"{key}.abs{r}"
            try:
                stop.fit(ctx)
            finally:
                ctx.stage_key = key
        original(self, ctx, r)

    AbsShrink._train = dying  # type: ignore[method-assign]
    try:
        with pytest.raises(Killed):
            run_config(cfg, tmp_path / "killed", plugins=PLUGINS)
    finally:
        AbsShrink._train = original  # type: ignore[method-assign]
    ctx = resume_run(tmp_path / "killed", quiet=True, registry=make_registry(*PLUGINS))
    try:
        assert ctx.state["abs_shrink"]["1"]["trained"] == 2  # two phases were done before the kill
        from nascore.pipeline.run import run_pipeline

        run_pipeline(ctx)
        assert ctx.space.allowed == full.space.allowed
        assert shrink_history(ctx) == shrink_history(full)
        a = ctx.supernet.state_dict()
        b = full.supernet.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    finally:
        ctx.log.close()


def test_cell_space_shrinks_to_valid_cells_and_accuracy_also_works() -> None:
    cfg = _config(_shrink_stage(target_size=3, drop_per_round=1, epochs_between=0, reinit=False),
                  space={"name": "tiny_cell"})
    cfg["stages"][1]["evaluator"] = "accuracy"  # ABS's accuracy-based baseline: any evaluator works
    ctx = run_config(cfg, None, plugins=PLUGINS)
    assert 1 <= ctx.space.size() <= 3
    assert all(ctx.space.is_valid(a) for a in ctx.space.enumerate())


def test_bad_trainer_options_name_the_field() -> None:
    cfg = _config(_shrink_stage(trainer="spos", trainer_options={"sampler": "nope"}))
    with pytest.raises(ConfigError, match="trainer_options.sampler"):
        run_config(cfg, None, plugins=PLUGINS)


def test_abs_then_rlnas_is_label_free_end_to_end() -> None:
    """ABS shrink -> RLNAS (both angle) from one config: random labels throughout, and the RLNAS
    search (evolution by angle, guarded) runs in the shrunk space, from the re-recorded W0."""
    rlnas_plugin = pytest.importorskip("nascore_rlnas.plugin")
    evo = {"population": 6, "generations": 2, "top_k": 2, "mutations": 2, "crossovers": 2}
    cfg = _config(
        _shrink_stage(target_size=8),
        {"kind": "train", "trainer": {"name": "spos", "options": {"epochs": 1}}},
        {"kind": "search", "evaluator": "angle",
         "selector": {"name": "rlnas_search", "options": {"selector": "evolution", "options": evo}}},
        data={"batch_size": 32, "random_labels": True},
    )
    ctx = run_config(cfg, None, plugins=(*PLUGINS, rlnas_plugin))
    assert ctx.space.size() <= 8
    assert ctx.candidates and all(ctx.space.contains(c.arch) for c in ctx.candidates)
    assert ctx.state["rlnas"]["3"]["labelled_reads"] == 0
    assert set(ctx.data.access_log) == {"train"}  # nothing but the random-labelled images, ever
    assert all(c.metrics["angle"] > 0 for c in ctx.candidates)


# -- a deliberately bad op ----------------------------------------------------------------------
def _thin(c: int) -> nn.Module:
    """A near-zero-width op: squeeze the layer through ONE channel (3x3), expand back (1x1)."""
    return nn.Sequential(nn.Conv2d(c, 1, 3, 1, 1, bias=False), nn.BatchNorm2d(1), nn.ReLU(),
                         nn.Conv2d(1, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())


class ThinSupernet(tiny.TinyChainSupernet):
    def __init__(self, space: tiny.TinyChainSpace) -> None:
        orig = tiny._tiny_op
        tiny._tiny_op = lambda name, c, affine: _thin(c) if name == "thin" else orig(name, c, affine)
        try:
            super().__init__(space)
        finally:
            tiny._tiny_op = orig


class ThinSpace(tiny.TinyChainSpace):
    name = "tiny_thin"

    def build_supernet(self) -> ThinSupernet:
        return ThinSupernet(self)


class _NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThinPlugin:
    @staticmethod
    @hookimpl
    def register_search_spaces(register: Any) -> None:
        register("tiny_thin", lambda cfg, ctx=None: ThinSpace(
            ops=("conv3", "conv5", "skip", "thin"), input_shape=ctx.data.input_shape,
            num_classes=ctx.data.num_classes), config=_NoOptions, summary="tiny_chain + a one-channel op")


def test_a_near_zero_width_op_is_dropped_in_most_seeds() -> None:
    """4 layers x {conv3, conv5, skip, thin}; one ABS round drops 4 of the 16 operators. By chance
    one would expect 1 thin op dropped per seed; measured (10 epochs): 4, 1, 3, 3, 3."""
    reg = make_registry(*PLUGINS, (ThinPlugin, "thin"))
    dropped_thin = []
    for seed in range(5):
        cfg = {"name": "thin", "seed": seed, "device": "cpu", "space": {"name": "tiny_thin"},
               "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64, "limit": 2000},
               "stages": [{"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 10, "lr": 0.1}}},
                          _shrink_stage(target_size=1, drop_per_round=4, max_rounds=1, epochs_between=0,
                                        sample_num=1000, reinit=False)]}
        ctx = run_config(cfg, None, registry=reg)
        dropped = shrink_history(ctx)[0]["dropped"]
        assert len(dropped) == 4
        dropped_thin.append(sum(op == "thin" for _, op in dropped))
    assert sum(n >= 1 for n in dropped_thin) >= 4, dropped_thin  # dropped in most seeds
    assert sum(dropped_thin) >= 10, dropped_thin  # 2.5x the chance rate


# -- the recipe ---------------------------------------------------------------------------------
def test_abs_spos_recipe_runs_end_to_end_in_smoke_mode(tmp_path: Path) -> None:
    path = Path(abs_plugin.__file__).parent / "recipes" / "abs-spos.yaml"
    reg = make_registry(*PLUGINS)
    assert "abs-spos" in reg.components["recipe"]
    ctx = run_config(yaml.safe_load(path.read_text()), tmp_path / "run", registry=reg, smoke=True)
    kinds = [s.kind for s in ctx.cfg.stages]
    assert kinds == ["train", "shrink", "train", "search", "export", "retrain"]
    assert ctx.space.size() < ctx.base_space.size()
    assert ctx.candidates and all(ctx.space.contains(c.arch) for c in ctx.candidates)
    assert all(ctx.feasible(c.arch) for c in ctx.candidates)
    assert ctx.state["retrain"] and (tmp_path / "run" / "checkpoints" / "w0.pt").exists()


def test_the_testbed_pipeline_shrinks_each_bed_to_two_ops_per_layer() -> None:
    """The ABS ranking row / benchmarks/abs_shrink.py config: the target is sized per bed (16 of 81 on
    tiny_chain, 16 of 256 on the cost-matched tiny_matched); a bed without one is refused by name."""
    import pytest

    from nascore_abs.ranking import abs_spos_config

    for bed, size in (("tiny_chain", 81), ("tiny_matched", 256)):
        cfg = abs_spos_config(0, space=bed)
        assert cfg["space"] == {"name": bed}
        assert cfg["stages"][1]["selector"]["options"]["target_size"] == 16 < size
    assert abs_spos_config(0, space="tiny_matched", target_size=64)["stages"][1]["selector"]["options"]["target_size"] == 64
    with pytest.raises(ValueError, match="tiny_cell"):
        abs_spos_config(0, space="tiny_cell")
