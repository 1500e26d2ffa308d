"""A config's stages: their keys, their names, and what a ``train`` and a ``search`` stage do.

Each leaf stage has a key (``"0"``, ``"2"``, ``"3.1.0"`` for stage 0 of round 1 of the loop at
index 3); the stage derives every random stream from ``(seed, key)``, so its result never depends
on what ran before it in this process. ``export`` and ``retrain`` stages are in
:mod:`nascore.pipeline.export` and :mod:`nascore.pipeline.retrain`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from nascore.config import LoopStage, RunConfig, SearchStage, TrainStage
from nascore.errors import PluginError
from nascore.roles import Context, Evaluator, SearchResult, Selector
from nascore.trainer import stage_field


def iter_stages(stages: list[Any], prefix: str = "") -> Iterator[tuple[str, Any, str | None]]:
    """(key, stage, loop key) for each leaf stage, loops unrolled (rounds × inner stages)."""
    for i, st in enumerate(stages):
        key = f"{prefix}{i}"
        if isinstance(st, LoopStage):
            for r in range(st.rounds):
                for sub_key, sub, _ in iter_stages(st.stages, prefix=f"{key}.{r}."):
                    yield sub_key, sub, key
        else:
            yield key, st, None


def stage_name(st: Any) -> str:
    """What the terminal, the log and the report call a stage: ``train (spos)``, ``search (evolution)``."""
    if isinstance(st, TrainStage):
        return f"train ({st.trainer.name})"
    if isinstance(st, SearchStage):
        return f"{st.kind} ({st.selector.name})"
    return st.kind


def option_path(cfg: RunConfig, key: str, field: str) -> str:
    """The options key (as produced by iter_refs) of ``field`` of the stage with ``key``."""
    return stage_field(key, field, brackets=True)


def run_train(ctx: Context, stage: TrainStage, key: str) -> None:
    """Build the stage's trainer (and distiller) and let it train ``ctx.supernet``."""
    trainer = ctx.build("trainer", stage.trainer, option_path(ctx.cfg, key, "trainer"))
    if not hasattr(trainer, "fit"):
        raise PluginError(f"trainer {stage.trainer.name!r} has no fit(ctx) method")
    ctx.distiller = (
        ctx.build("distiller", stage.distiller, option_path(ctx.cfg, key, "distiller")) if stage.distiller else None
    )
    try:
        trainer.fit(ctx)
    finally:
        ctx.distiller = None


def run_search(ctx: Context, stage: SearchStage, key: str) -> SearchResult:
    """Build the stage's selector (and evaluator), search, and keep its candidates and space."""
    selector: Selector = ctx.build("selector", stage.selector, option_path(ctx.cfg, key, "selector"))
    evaluator: Evaluator | None = (
        ctx.build("evaluator", stage.evaluator, option_path(ctx.cfg, key, "evaluator")) if stage.evaluator else None
    )
    result = selector.search(ctx, evaluator)
    if not isinstance(result, SearchResult):
        raise PluginError(
            f"selector {stage.selector.name!r} returned {type(result).__name__}, expected nascore.roles.SearchResult"
        )
    if result.space is not None:
        ctx.space = result.space
        ctx.log_space(key)
    if result.candidates:
        ctx.candidates = list(result.candidates)[: stage.keep]
        best = ctx.candidates[0]
        ctx.log.event("best", stage=key, arch=best.arch_str, score=best.score, macs=best.macs, params=best.params)
        warn_few_feasible(ctx, stage.keep, key)
    return result


def warn_few_feasible(ctx: Context, keep: int, key: str, enumerate_up_to: int = 20_000) -> None:
    """Warn when the constraint leaves fewer architectures than the stage keeps (one, at worst).

    Counted exactly on spaces of up to ``enumerate_up_to`` architectures; on larger ones a search
    that found a single distinct architecture is reported.
    """
    if ctx.constraint.unbounded or len({c.arch_str for c in ctx.candidates}) >= keep:
        return
    size = ctx.space.size()
    if size <= enumerate_up_to:
        n = sum(1 for a in ctx.space.enumerate() if ctx.feasible(a))
        if n >= keep:
            return
        what = (f"only {'one architecture' if n == 1 else f'{n} architectures'} of the {size:,} in the space "
                f"meet{'s' if n == 1 else ''} the constraint {ctx.constraint.describe()}, so stage {key} returned "
                f"{len(ctx.candidates)} candidate(s) (keep: {keep})")
    elif len({c.arch_str for c in ctx.candidates}) == 1:
        n = None
        what = (f"stage {key} found a single architecture meeting the constraint {ctx.constraint.describe()}; "
                "it may be the only one the space has")
    else:
        return
    ctx.log.event("few_feasible", stage=key, feasible=n, candidates=len(ctx.candidates), keep=keep)
    if ctx.dist.is_main:
        print(f"nascore: warning: {what}; loosen the constraint for a real choice", file=sys.stderr)
