"""The ``dna`` selector: the best combination of per-block candidates under a MACs/params budget.

DNA ranks every candidate of every block on its own (``block_distill``), then picks one candidate
per block so that the summed (or multiplied) block losses are smallest while the whole network
meets the resource constraint. The official ``process_potential.py`` walks the blocks in nested
loops over candidates sorted by loss, skipping a candidate when the budget left cannot hold it and
shrinking the loop bounds once a feasible leaf is found. We keep that structure — depth-first over
blocks, candidates sorted by loss, budget pruning — as an *exact* branch and bound
(:func:`best_combinations`): a branch is cut only when an admissible bound proves it cannot beat the
k-th best found, so the answer equals brute force (the code's bound shrinking is a heuristic that
can miss the optimum). Costs are exact and additive: each block's MACs/params come from the space's
fvcore cost table, plus the fixed part.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

import attrs
from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture
from nascore.cost import ResourceConstraint
from nascore.errors import ConstraintError, NascoreError
from nascore.roles import SearchResult


@attrs.frozen
class BlockItem:
    """One candidate of one block: its loss and the MACs/params (and predicted latency, ms) it adds."""

    loss: float
    macs: int = 0
    params: int = 0
    key: Any = None
    latency_ms: float = 0.0


def _value(loss: float, combine: str) -> float:
    if combine == "sum":
        return float(loss)
    if loss < 0:
        raise NascoreError("combine: product needs non-negative block losses")
    return math.log(loss) if loss > 0 else -math.inf


def best_combinations(
    blocks: Sequence[Sequence[BlockItem]], constraint: ResourceConstraint | None = None, *, k: int = 1,
    fixed_macs: int = 0, fixed_params: int = 0, combine: str = "sum", fixed_latency_ms: float = 0.0,
) -> list[tuple[float, tuple[int, ...]]]:
    """The ``k`` lowest-scoring feasible choices (one item index per block), best first.

    Score = Σ losses (``sum``) or Π losses (``product``); feasibility = ``constraint.admits`` on
    ``fixed + Σ`` item costs. Exact: branch and bound over blocks with candidates sorted by loss,
    cutting a branch when (partial score + the smallest possible rest) cannot beat the k-th best,
    or when no completion fits the budget. Ties are broken by the index tuple.
    """
    c = constraint or ResourceConstraint()
    nb = len(blocks)
    if nb == 0 or any(len(items) == 0 for items in blocks):
        return []
    vals = [[_value(it.loss, combine) for it in items] for items in blocks]
    order = [sorted(range(len(items)), key=lambda i, v=v: (v[i], i)) for items, v in zip(blocks, vals)]

    def suffix(fn: Any) -> list[float]:
        out = [0.0] * (nb + 1)
        for b in range(nb - 1, -1, -1):
            out[b] = out[b + 1] + fn(b)
        return out

    min_val = suffix(lambda b: min(vals[b]))
    min_macs = suffix(lambda b: min(it.macs for it in blocks[b]))
    max_macs = suffix(lambda b: max(it.macs for it in blocks[b]))
    min_par = suffix(lambda b: min(it.params for it in blocks[b]))
    max_par = suffix(lambda b: max(it.params for it in blocks[b]))
    min_lat = suffix(lambda b: min(it.latency_ms for it in blocks[b]))
    max_lat = suffix(lambda b: max(it.latency_ms for it in blocks[b]))
    lat_on = c.bounds_latency
    heap: list[tuple[float, tuple[int, ...]]] = []  # max-heap via negated score; (−score, −idx) worst on top

    def worst() -> float:
        return -heap[0][0] if len(heap) >= k else math.inf

    def fits(b: int, macs: int, params: int, lat: float) -> bool:
        """Can some completion from block ``b`` on satisfy the constraint?"""
        if lat_on and c.latency_ms_max is not None and lat + min_lat[b] > c.latency_ms_max:
            return False
        if lat_on and c.latency_ms_min is not None and lat + max_lat[b] < c.latency_ms_min:
            return False
        if c.macs_max is not None and macs + min_macs[b] > c.macs_max:
            return False
        if c.macs_min is not None and macs + max_macs[b] < c.macs_min:
            return False
        if c.params_max is not None and params + min_par[b] > c.params_max:
            return False
        if c.params_min is not None and params + max_par[b] < c.params_min:
            return False
        return True

    choice: list[int] = []

    def dfs(b: int, val: float, macs: int, params: int, lat: float) -> None:
        if b == nb:
            if not c.admits(macs, params, lat if lat_on else None):
                return
            key = tuple(choice)
            entry = (-val, tuple(-i for i in key))
            if len(heap) < k:
                heapq.heappush(heap, entry)
            elif (val, key) < (-heap[0][0], tuple(-i for i in heap[0][1])):
                heapq.heapreplace(heap, entry)
            return
        for i in order[b]:
            v = val + vals[b][i]
            if v + min_val[b + 1] > worst():
                break  # sorted by loss: every later candidate of this block is worse still
            it = blocks[b][i]
            m, p, t = macs + it.macs, params + it.params, lat + it.latency_ms
            if not fits(b + 1, m, p, t):
                continue
            choice.append(i)
            dfs(b + 1, v, m, p, t)
            choice.pop()

    if fits(0, fixed_macs, fixed_params, fixed_latency_ms):
        dfs(0, 0.0, fixed_macs, fixed_params, fixed_latency_ms)
    found = sorted(((-s, tuple(-i for i in idx)) for s, idx in heap))
    if combine == "product":
        found = [(math.exp(s) if s != -math.inf else 0.0, idx) for s, idx in found]
    return found


class DNASelectorConfig(BaseModel):
    """Options of the ``dna`` selector."""

    model_config = ConfigDict(extra="forbid")
    top: int = Field(5, gt=0, description="how many best combinations to return (the code keeps 3)")


class DNASelector:
    """Exhaustive per-block ranking + exact constrained combination (see module docstring)."""

    def __init__(self, cfg: DNASelectorConfig, ctx: Any = None) -> None:
        self.cfg = cfg

    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        if evaluator is None or not hasattr(evaluator, "block_table"):
            raise NascoreError("the dna selector needs a per-block evaluator",
                               hint="add `evaluator: block_distill` to the search stage")
        table = evaluator.block_table(ctx)
        blocks = evaluator.prepare(ctx)[0]
        covered = sorted(d for ds in blocks.decisions for d in ds)
        if covered != list(range(len(ctx.space.decisions))):
            raise NascoreError("the space's blocks do not cover every decision once; DNA cannot combine them")
        cost = ctx.cost
        lat_t = getattr(cost, "latency_ms_table", None)  # set when the run has a latency table
        items: list[list[BlockItem]] = []
        for b, row in enumerate(table):
            its = []
            for key, loss in row.items():
                macs = sum(cost.macs_table[d][o] for d, o in zip(blocks.decisions[b], key))
                params = sum(cost.params_table[d][o] for d, o in zip(blocks.decisions[b], key))
                lat = sum(lat_t[d][o] for d, o in zip(blocks.decisions[b], key)) if lat_t else 0.0
                its.append(BlockItem(loss, macs, params, key, lat))
            items.append(its)
        for b, its in enumerate(items):
            for rank, it in enumerate(sorted(its, key=lambda t: t.loss)):
                ctx.log.metric("dna_block", stage=ctx.stage_key, block=b, rank=rank, ops=list(it.key), loss=it.loss,
                               macs=it.macs, params=it.params)
        top = 2 if ctx.smoke else self.cfg.top
        best = best_combinations(items, ctx.constraint, k=top, fixed_macs=cost.fixed_macs,
                                 fixed_params=cost.fixed_params, combine=evaluator.combine,
                                 fixed_latency_ms=float(getattr(cost, "latency_fixed_ms", None) or 0.0))
        if not best:
            raise ConstraintError("no combination of block candidates meets the constraint",
                                  hint=f"loosen the constraint ({ctx.constraint.describe()})")
        cands = []
        for score, idx in best:
            ops: list[Any] = [None] * len(ctx.space.decisions)
            metrics = {"block_loss": score}
            for b, i in enumerate(idx):
                it = items[b][i]
                for d, o in zip(blocks.decisions[b], it.key):
                    ops[d] = o
                metrics[f"block{b}_loss"] = it.loss
            arch = Architecture(ops)
            assert ctx.feasible(arch)
            cands.append(ctx.candidate(arch, -score, metrics, origin="dna"))
        for cnd in cands:
            ctx.log.metric("candidate", stage=ctx.stage_key, arch=cnd.arch_str, score=cnd.score, macs=cnd.macs,
                           params=cnd.params)
        n = sum(len(r) for r in table)
        return SearchResult(candidates=cands, info={"block_candidates": n, "evaluated": evaluator.evaluations})
