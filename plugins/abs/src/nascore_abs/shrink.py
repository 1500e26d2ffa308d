"""The ``abs_shrink`` selector: Angle-Based search space Shrinking (Hu et al., arXiv 2004.13431).

Each round (Algorithm 2 of the paper, ``SPOS/shrinking/shrinking.py`` of megvii-model/AngleNAS):

1. every operator ``(layer, op)`` still competing (its layer has more than one option) gets a pool
   of up to ``sample_num`` distinct feasible architectures of the current space that contain it
   (all of them when there are fewer; an architecture drawn for one operator joins the pool of
   every operator it contains, as in the code);
2. all pooled architectures are scored once by the stage's evaluator (``angle`` by default; any
   evaluator works, e.g. ``accuracy`` for the paper's accuracy-based baseline) and an operator's
   score is the mean score of its pool;
3. operators are dropped in ascending score order, up to ``drop_per_round``, never the best of its
   layer (so no layer is ever emptied), never one whose removal would leave no valid or no
   feasible architecture;
4. unless the space is now at most ``target_size`` architectures, the supernet trains
   ``epochs_between`` epochs on the shrunk space (with the ``trainer`` named in the options) and
   the next round starts.

The result is a restricted space (``SearchResult.space``) that any later stage searches in: SPOS
evolution, RLNAS, Cream… With ``reinit`` (default, as the ABS code, where the search method
trains a fresh supernet on the shrunk space) the supernet is re-initialised at the end and W0 is
re-recorded, so a following angle stage (RLNAS) measures from the new initialisation.

Where we differ from the code (see README): the code samples the number of identity layers
uniformly before placing them; we sample every layer uniformly (the core's uniform sampler). The
code drops a fixed number per round and checks the size only between rounds; we stop dropping as
soon as the target size is reached, so small spaces are not over-shrunk.

Resume: the rounds done (drops, scores, the allowed options), how many training phases finished,
and whether W0 was replaced are kept in ``ctx.state["abs_shrink"][stage]``; each training phase is
an ordinary resumable trainer run under its own checkpoint key ``<stage>.abs<round>``, whose final
checkpoint also restores the weights a resumed round scores with.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nascore.arch import Architecture
from nascore.config import format_pydantic
from nascore.errors import ArchitectureError, ConfigError, ConstraintError, NascoreError
from nascore.roles import SearchResult
from nascore.search import objective
from nascore.space import SearchSpace

#: Enumerate an operator's architectures exactly when there are at most this many.
ENUMERATE_LIMIT = 20_000


class AbsShrinkConfig(BaseModel):
    """Options of ``abs_shrink`` (defaults: the ABS code's MobileNet-space config)."""

    model_config = ConfigDict(extra="forbid")
    target_size: int = Field(1_000_000, gt=0, description="stop when the space has at most this many architectures (code: 1e6)")
    drop_per_round: int = Field(7, gt=0, description="operators dropped per round (code: op_num + 1 = 7)")
    sample_num: int = Field(1000, gt=0, description="feasible architectures scored per operator (code: 1000); all of them when fewer")
    max_rounds: int = Field(100, gt=0, description="stop after this many rounds even above the target size")
    epochs_between: int = Field(5, ge=0, description="supernet epochs on the shrunk space between rounds (code: 5)")
    trainer: str = Field("single_path", description="registered trainer for the epochs between rounds (e.g. spos)")
    trainer_options: dict[str, Any] = Field(
        default_factory=dict, description="options of that trainer; its epochs come from epochs_between")
    replace_w0_after: int | None = Field(
        None, gt=0, description="once more than this many operators were dropped, W0 := current weights, once (code: 50); null: never")
    reinit: bool = Field(
        True, description="re-initialise the supernet (and re-record W0) after shrinking, as the ABS code trains a fresh supernet on the shrunk space")
    smoke_sample_num: int = Field(4, gt=0, description="sample_num under --smoke (which also caps the rounds at 2)")


def _state_key(ctx: Any) -> str:
    return str(ctx.stage_key)


class AbsShrink:
    """ABS: drop the operators whose architectures' weights moved least (see module docstring)."""

    def __init__(self, cfg: AbsShrinkConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self._trainer_options: Any = None
        if ctx is not None:
            self._trainer_options = self._validate_trainer(ctx)

    # -- the trainer of the phases between rounds ------------------------------------------------
    def _validate_trainer(self, ctx: Any) -> Any:
        comp = ctx.registry.get("trainer", self.cfg.trainer)
        opts = {**self.cfg.trainer_options, "epochs": max(self.cfg.epochs_between, 1)}
        try:
            return comp.config.model_validate(opts)
        except ValidationError as e:
            raise ConfigError(format_pydantic(e, prefix="abs_shrink.trainer_options"), source="abs_shrink options") from None

    def _train(self, ctx: Any, round_index: int) -> None:
        """One resumable training phase on the current (shrunk) space, under its own key."""
        if self._trainer_options is None:
            self._trainer_options = self._validate_trainer(ctx)
        trainer = ctx.registry.get("trainer", self.cfg.trainer).build(self._trainer_options, ctx)
        key = ctx.stage_key
        ctx.stage_key = f"{key}.abs{round_index}"
        try:
            ctx.log.event("abs_train", stage=key, round=round_index, epochs=self.cfg.epochs_between)
            trainer.fit(ctx)
        finally:
            ctx.stage_key = key

    # -- scoring ---------------------------------------------------------------------------------
    def _pools(
        self, ctx: Any, space: SearchSpace, competing: list[tuple[int, str]], n: int, rng: random.Random
    ) -> dict[tuple[int, str], list[Architecture]]:
        """Up to ``n`` distinct feasible architectures containing each competing operator."""
        pools: dict[tuple[int, str], list[Architecture]] = {op: [] for op in competing}
        members: dict[tuple[int, str], set[Architecture]] = {op: set() for op in competing}

        def add(arch: Architecture) -> None:
            for i, o in enumerate(arch.ops):
                key = (i, o)
                if key in pools and arch not in members[key] and len(pools[key]) < n:
                    members[key].add(arch)
                    pools[key].append(arch)

        for layer, op in competing:
            if len(pools[(layer, op)]) >= n:
                continue
            try:
                sub = space.restrict({layer: [op]})
            except ArchitectureError:
                continue  # no valid architecture keeps this op (cell spaces)
            size = math.prod(len(a) for a in sub.allowed)
            if size <= ENUMERATE_LIMIT:
                archs = [a for a in sub.enumerate() if ctx.feasible(a)]
                rng.shuffle(archs)
                for a in archs:
                    if len(pools[(layer, op)]) >= n:
                        break
                    add(a)
                continue
            tries = 100 * n
            while len(pools[(layer, op)]) < n and tries > 0:
                tries -= 1
                a = sub.sample(rng)
                if a not in members[(layer, op)] and ctx.feasible(a):
                    add(a)
        return pools

    def _score_round(
        self, ctx: Any, evaluator: Any, space: SearchSpace, round_index: int
    ) -> tuple[dict[tuple[int, str], float | None], int]:
        """Mean evaluator score per competing operator (None: no feasible architecture has it)."""
        competing = [(i, o) for i, allowed in enumerate(space.allowed) if len(allowed) > 1 for o in allowed]
        n = min(self.cfg.sample_num, self.cfg.smoke_sample_num) if ctx.smoke else self.cfg.sample_num
        rng = random.Random(ctx.stage_seed(f"abs-sample{round_index}"))
        pools = self._pools(ctx, space, competing, n, rng)
        unique = list(dict.fromkeys(a for pool in pools.values() for a in pool))
        scores: dict[Architecture, float] = {}
        bar = ctx.progress(total=len(unique), desc=f"abs round {round_index}")
        batch = 256
        try:
            for i in range(0, len(unique), batch):
                part = unique[i : i + batch]
                results = evaluator.score(part, ctx)
                if not isinstance(results, list) or len(results) != len(part):
                    raise NascoreError(f"evaluator {type(evaluator).__name__}.score returned a wrong-sized result")
                for a, m in zip(part, results):
                    scores[a] = objective(evaluator, m)
                bar.update(len(part))
        finally:
            bar.close()
        out: dict[tuple[int, str], float | None] = {}
        for op, pool in pools.items():
            out[op] = statistics.fmean(scores[a] for a in pool) if pool else None
        return out, len(unique)

    def _drop(
        self, ctx: Any, space: SearchSpace, op_scores: dict[tuple[int, str], float | None]
    ) -> tuple[SearchSpace, list[tuple[int, str]]]:
        """Drop the lowest-scoring operators (see module docstring, step 3)."""
        order = sorted(op_scores, key=lambda k: (-math.inf if op_scores[k] is None else op_scores[k],
                                                 k[0], space.allowed[k[0]].index(k[1])))
        dropped: list[tuple[int, str]] = []
        target = self.cfg.target_size
        for idx, (layer, op) in enumerate(order):
            if len(dropped) >= self.cfg.drop_per_round or space.size() <= target:
                break
            if not any(lay == layer for lay, _ in order[idx + 1 :]):
                continue  # the best remaining op of its layer is never dropped
            keep = [o for o in space.allowed[layer] if o != op]
            try:
                new = space.restrict({layer: keep})
                if not ctx.constraint.unbounded:
                    ctx.constraint.check_feasible(ctx.cost, new.allowed)
            except (ArchitectureError, ConstraintError):
                continue
            space = new
            dropped.append((layer, op))
        return space, dropped

    # -- the selector ----------------------------------------------------------------------------
    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        if evaluator is None:
            evaluator = ctx.registry.get("evaluator", "angle").build({}, ctx)
        cfg = self.cfg
        key = _state_key(ctx)
        st = ctx.state.setdefault("abs_shrink", {}).get(key)
        resumed = st is not None
        if st is None:
            st = {"records": [], "trained": 0, "allowed": ctx.space.allowed_json(), "w0_replaced_at": None,
                  "initial_size": ctx.space.size()}
            ctx.state["abs_shrink"][key] = st
        space = ctx.base_space.restrict({i: a for i, a in enumerate(st["allowed"])})
        ctx.space = space
        max_rounds = min(cfg.max_rounds, 2) if ctx.smoke else cfg.max_rounds
        if resumed:
            ctx.log.event("resume", stage=key, rounds=len(st["records"]), trained=st["trained"])
            if st["trained"] > 0 and cfg.epochs_between > 0:
                self._train(ctx, st["trained"] - 1)  # its final checkpoint: the weights of this point
            if st["w0_replaced_at"] is not None and st["w0_replaced_at"] == st["trained"]:
                ctx.set_initial_weights()  # idempotent: these are the weights W0 was replaced with
        r = st["trained"]
        while True:
            if len(st["records"]) <= r:  # score and drop for round r
                if space.size() <= cfg.target_size or r >= max_rounds:
                    break
                op_scores, n_archs = self._score_round(ctx, evaluator, space, r)
                new_space, dropped = self._drop(ctx, space, op_scores)
                values = [v for v in op_scores.values() if v is not None]
                if values and max(values) - min(values) == 0.0:
                    ctx.log.event("abs_flat_scores", stage=key, round=r)
                    if not ctx.quiet:
                        print(f"nascore-abs: warning: round {r}: every operator scored the same "
                              f"({values[0]:.4g}); is the supernet trained? (train it before abs_shrink)",
                              file=sys.stderr)
                rec = {
                    "round": r,
                    "dropped": [[lay, op] for lay, op in dropped],
                    "scores": [[lay, op, s] for (lay, op), s in op_scores.items()],
                    "evaluated": n_archs,
                    "size_before": space.size(),
                    "size": new_space.size(),
                }
                st["records"].append(rec)
                st["allowed"] = new_space.allowed_json()
                space = new_space
                ctx.space = space
                total_dropped = sum(len(x["dropped"]) for x in st["records"])
                replace = (cfg.replace_w0_after is not None and st["w0_replaced_at"] is None
                           and total_dropped > cfg.replace_w0_after)
                if replace:
                    st["w0_replaced_at"] = r
                ctx.write_state()
                if replace:
                    ctx.set_initial_weights()
                    ctx.log.event("abs_replace_w0", stage=key, round=r, dropped=total_dropped)
                ctx.log.event("abs_round", stage=key, round=r, dropped=rec["dropped"], size=rec["size"],
                              evaluated=n_archs, allowed=st["allowed"])
                ctx.log_space(key, round=r + 1)
                if not dropped:
                    break  # nothing can be dropped any more (every layer is down to what it must keep)
            if space.size() <= cfg.target_size or r + 1 >= max_rounds:
                break
            if cfg.epochs_between > 0:
                self._train(ctx, r)
            st["trained"] = r + 1
            ctx.write_state()
            r += 1
        if cfg.reinit:
            net = ctx.supernet
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.stage_seed("reinit"))
                net.reset_parameters()
            ctx.set_initial_weights()
            ctx.log.event("abs_reinit", stage=key)
        info = {
            "rounds": len(st["records"]),
            "initial_size": st["initial_size"],
            "final_size": space.size(),
            "dropped": [op for rec in st["records"] for op in rec["dropped"]],
            "allowed": space.allowed_json(),
        }
        ctx.log.event("abs_done", stage=key, **info)
        return SearchResult(candidates=[], space=space, done=True, info=info)


def shrink_history(ctx: Any, stage_key: str | None = None) -> list[dict[str, Any]]:
    """The per-round records (drops, operator scores, sizes) of an ``abs_shrink`` stage."""
    runs = ctx.state.get("abs_shrink", {})
    if stage_key is None:
        if not runs:
            return []
        stage_key = sorted(runs)[-1]
    return list(runs.get(stage_key, {}).get("records", []))


def make_abs_shrink(cfg: AbsShrinkConfig, ctx: Any = None) -> AbsShrink:
    return AbsShrink(cfg, ctx)


__all__: Sequence[str] = ("AbsShrink", "AbsShrinkConfig", "make_abs_shrink", "shrink_history")
