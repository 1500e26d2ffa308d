"""Helpers every selector uses: scoring batches of architectures, ranking, feasible sampling."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from nascore.arch import Architecture, Candidate
from nascore.errors import NascoreError, PluginError
from nascore.space import constrained_sample


def objective(evaluator: Any, metrics: dict[str, float]) -> float:
    """The evaluator's metric as a score where higher is better."""
    try:
        value = float(metrics[evaluator.metric])
    except KeyError:
        raise PluginError(
            f"evaluator {type(evaluator).__name__} returned no {evaluator.metric!r} metric (got {sorted(metrics)})"
        ) from None
    return value if getattr(evaluator, "higher_is_better", True) else -value


_RESERVED = {"kind", "time", "stage", "arch", "score", "macs", "params", "origin"}


def evaluate(ctx: Any, evaluator: Any, archs: Sequence[Architecture], origin: str = "") -> list[Candidate]:
    """Score ``archs`` with ``evaluator`` and wrap them as candidates (same order)."""
    if evaluator is None:
        raise NascoreError("this selector needs an evaluator", hint="add `evaluator: accuracy` (or another) to the search stage")
    results = _score_split(ctx, evaluator, list(archs))
    if not isinstance(results, list) or len(results) != len(archs):
        raise PluginError(
            f"evaluator {type(evaluator).__name__}.score returned {type(results).__name__} of "
            f"{len(results) if hasattr(results, '__len__') else '?'} items for {len(archs)} architectures; expected a list of dicts"
        )
    cands = [ctx.candidate(a, objective(evaluator, m), m, origin) for a, m in zip(archs, results)]
    for c in cands:  # every evaluated candidate is in metrics.jsonl: plots and reports read them from there
        ctx.log.metric("candidate", stage=ctx.stage_key, arch=c.arch_str, score=c.score, macs=c.macs,
                       params=c.params, origin=origin, **{k: v for k, v in c.metrics.items() if isinstance(v, (int, float)) and k not in _RESERVED})
    return cands


def _score_split(ctx: Any, evaluator: Any, archs: list[Architecture]) -> Any:
    """Score ``archs``; in a distributed run each rank scores every world_size-th one, then all gather."""
    dist = getattr(ctx, "dist", None)
    if dist is None or not dist.enabled or len(archs) < 2:
        return evaluator.score(archs, ctx)
    import torch.distributed as tdist

    world, rank_ = dist.world_size, dist.rank
    part = evaluator.score(archs[rank_::world], ctx)
    gathered: list[Any] = [None] * world
    tdist.all_gather_object(gathered, part)
    results: list[Any] = [None] * len(archs)
    for r, chunk in enumerate(gathered):
        for j, m in enumerate(chunk):
            results[r + j * world] = m
    return results


def rank(cands: Sequence[Candidate]) -> list[Candidate]:
    """Best first (ties broken by fewer MACs, then by the string, so the order is deterministic)."""
    return sorted(cands, key=lambda c: (-c.score, c.macs, c.arch_str))


def sample_feasible(ctx: Any, rng: random.Random, max_tries: int = 10_000) -> Architecture:
    """A uniform random architecture of ``ctx.space`` within ``ctx.constraint``."""
    if not ctx.constraint.unbounded:
        ctx.constraint.check_feasible(ctx.cost, ctx.space.allowed)
    return constrained_sample(ctx.space, rng, ctx.feasible, max_tries=max_tries)
