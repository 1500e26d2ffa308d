"""The ``nse`` selector: one round of neural search-space evolution, inside a ``loop`` stage.

Run as ``{kind: loop, rounds: R, stages: [train (nse), search (nse)]}``; each call is one round:

1. Draw ``samples`` distinct feasible architectures of the current active sub-space from the gates
   (each active op on with σ(α) as learned by the ``nse`` trainer; p = 0.5 without α), and add the
   Pareto architectures carried over from the previous round (re-evaluated on this round's supernet).
2. Score them with the evaluator (``accuracy``: supernet top-1 after BN recalibration) and keep the
   MACs/accuracy Pareto front: printed as a table, plotted to ``plots/nse_round<r>.png``, its
   hypervolume logged; it is what the selector returns (best accuracy first).
3. Rebuild the active sub-space: the ops of the front, then ops popped from each layer's pending
   queue until the layer holds K (the space's ``active``). By default every front op is kept and
   the whole front is carried, as NSE's ``update_space`` does (a layer whose front uses all K ops
   then gets no new op that round). ``keep`` < K caps the front ops a layer retains so that every
   round tries a new op per layer while its queue lasts: the most accurate front architecture is
   always carried (its ops kept even beyond ``keep``), the other front architectures follow, most
   accurate first, while their ops fit — either way the new sub-space contains every op of the
   carried front. Popped ops are marked tried and never queued again; ops leaving the active set
   are dropped.
4. Ask the next ``nse`` train stage to re-initialise the weights and α (NSE's ``re_init``), and
   return ``done`` when every queue is empty and no op was added: the pool is exhausted and this
   round's front is final (a loop's ``rounds`` is the other limit).

The queue, tried ops, carried front and per-round history live in ``ctx.state["nse"]`` (JSON), so a
killed run resumes at the round it was in.
"""

from __future__ import annotations

import random
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture, Candidate
from nascore.cost import human
from nascore.errors import NascoreError
from nascore.roles import SearchResult
from nascore.search import evaluate
from nascore_nse.pareto import front_table, hypervolume, pareto_front, plot_round
from nascore_nse.pool import NSEPoolSpace, require_pool, sample_gated
from nascore_nse.state import alpha_probs, ensure_state


class NseSelectorConfig(BaseModel):
    """Options of the ``nse`` selector."""

    model_config = ConfigDict(extra="forbid")
    samples: int = Field(60, gt=0, description="distinct architectures drawn from the gates per round (NSE: 2000)")
    keep: int | None = Field(None, gt=0, description="most front ops a layer keeps (null: K, as NSE's update_space; "
                             "K-1 guarantees a new op per layer each round)")
    batch: int = Field(16, gt=0, description="architectures per evaluator call")
    plot: bool = Field(True, description="write plots/nse_round<r>.png")


def carry_front(space: NSEPoolSpace, front: list[Candidate], keep: int) -> tuple[list[Candidate], list[list[str]]]:
    """Front archs to carry and the ops they use per layer (what the next sub-space retains).

    The most accurate front architecture is always carried (a layer keeps all its ops even beyond
    ``keep``); the others follow, most accurate first, while the ops they add keep every layer
    within ``max(keep, ops of the best)``.
    """
    L = len(space.decisions)
    ordered = sorted(front, key=lambda c: (-c.score, c.macs, c.arch_str))
    if not ordered:
        return [], [[] for _ in range(L)]
    retained: list[set[str]] = [set(o) for o in space.ops_of(ordered[0].arch)]
    limit = [max(keep, len(r)) for r in retained]
    carried = [ordered[0]]
    for c in ordered[1:]:
        ops = space.ops_of(c.arch)
        if all(len(retained[j] | ops[j]) <= limit[j] for j in range(L)):
            carried.append(c)
            for j in range(L):
                retained[j] |= ops[j]
    return carried, [sorted(r, key=space.pool.index) for r in retained]


def evolve_space(ns: dict[str, Any], retained: list[list[str]], k: int) -> tuple[list[list[str]], list[list[str]]]:
    """New active ops per layer (retained + popped from the queue up to ``k``) and the popped ops;
    updates ``ns["queue"]`` and ``ns["tried"]`` in place."""
    active, popped = [], []
    for j, keep_ops in enumerate(retained):
        new = list(keep_ops)
        got = []
        queue = ns["queue"][j]
        while len(new) < k and queue:
            op = queue.pop(0)
            if op in ns["tried"][j]:  # never try an op twice
                continue
            ns["tried"][j].append(op)
            new.append(op)
            got.append(op)
        active.append(new)
        popped.append(got)
    return active, popped


class NseSelector:
    """One NSE round per call (see module docstring)."""

    def __init__(self, cfg: NseSelectorConfig, ctx: Any = None) -> None:
        self.cfg = cfg

    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        pool = require_pool(ctx.base_space, "selector 'nse'")
        if evaluator is None:
            raise NascoreError("the nse selector needs an evaluator", hint="add `evaluator: accuracy` to its search stage")
        ns = ensure_state(ctx)
        space: NSEPoolSpace = ctx.space
        r = int(ns["round"])
        k = pool.active_k
        keep = min(self.cfg.keep if self.cfg.keep is not None else k, k)
        if ns.get("hv_ref") is None:
            ns["hv_ref"] = float(ctx.constraint.macs_max) if ctx.constraint.macs_max else float(_max_macs(pool, ctx))
        rng = random.Random(ctx.stage_seed("nse"))
        probs = alpha_probs(space, ns)
        target = 4 if ctx.smoke else self.cfg.samples
        archs: dict[Architecture, None] = {}
        for _ in range(50 * target):
            if len(archs) >= target:
                break
            a = sample_gated(space, rng, probs or [None] * len(space.decisions))
            if ctx.feasible(a):
                archs.setdefault(a, None)
        carried_prev = [pool.parse(s) for s in ns["front"]]
        missing = [space.format(a) for a in carried_prev if not space.contains(a)]
        if missing:  # cannot happen: the sub-space is built to contain them
            raise NascoreError(f"NSE round {r}: carried architectures {missing} are outside the active sub-space")
        for a in carried_prev:
            archs.setdefault(a, None)
        arch_list = list(archs)
        cands: list[Candidate] = []
        bar = ctx.progress(total=len(arch_list), desc=f"nse round {r}")
        for i in range(0, len(arch_list), self.cfg.batch):
            part = arch_list[i : i + self.cfg.batch]
            cands += evaluate(ctx, evaluator, part, origin=f"nse:round{r}")
            bar.update(len(part))
        bar.close()
        front = pareto_front(cands)
        carried, retained = carry_front(space, front, keep)
        active, popped = evolve_space(ns, retained, k)
        done = not any(popped) and not any(ns["queue"])  # the pool is exhausted (not merely full)
        carried_set = {c.arch for c in carried}
        rows = [{"arch": c.arch_str, "macs": c.macs, "acc": c.score, "carried": c.arch in carried_set} for c in front]
        hv = hypervolume([(c.macs, c.score) for c in front], ns["hv_ref"])
        ns["history"].append({
            "round": r, "evaluated": len(cands), "front": rows, "hypervolume": hv,
            "active": [list(space.layer_ops(j)) for j in range(len(space.decisions))],
            "added_next": popped, "retained_next": retained,
        })
        ns["front"] = [c.arch_str for c in sorted(carried, key=lambda c: (c.macs, c.arch_str))]
        ns["round"] = r + 1
        ns["reinit"] = not done
        if not done:
            ns["active"] = active
        self.report(ctx, r, cands, rows, hv, popped, done, ns)
        ranked = sorted(front, key=lambda c: (-c.score, c.macs, c.arch_str))
        new_space = None if done else pool.restrict_active(active)
        return SearchResult(candidates=ranked, space=new_space, done=done,
                            info={"round": r, "hypervolume": hv, "added": popped})

    def report(self, ctx: Any, r: int, cands: list[Candidate], rows: list[dict[str, Any]], hv: float,
               popped: list[list[str]], done: bool, ns: dict[str, Any]) -> None:
        ctx.log.event("nse_round", stage=ctx.stage_key, round=r, evaluated=len(cands), hypervolume=hv,
                      front=rows, added=popped, done=done, queue=ns["queue"])
        if self.cfg.plot and ctx.run_dir is not None and ctx.dist.is_main:
            plot_round(ctx.run_dir / "plots" / f"nse_round{r}.png", r, [(c.macs, c.score) for c in cands],
                       ns["history"], ns["hv_ref"])
        if ctx.quiet or not ctx.dist.is_main:
            return
        added = ", ".join(f"layer{j}+{'+'.join(p)}" for j, p in enumerate(popped) if p) or "none (pool exhausted)"
        print(f"NSE round {r}: {len(cands)} architectures evaluated, Pareto front of {len(rows)} "
              f"(hypervolume {hv:.4f} up to {human(ns['hv_ref'])} MACs); next round adds {added}")
        print(front_table(sorted(rows, key=lambda x: x["macs"])))
        sys.stdout.flush()


def _max_macs(pool: NSEPoolSpace, ctx: Any) -> int:
    """MACs of the most expensive architecture of the whole pool (the hypervolume reference)."""
    table = ctx.cost
    total = table.fixed_macs
    for j in range(len(pool.decisions)):
        costs = sorted((table.macs_table[j][o] for o in pool.pool), reverse=True)
        n = len(costs) if pool.max_branches is None else min(len(costs), pool.max_branches)
        total += sum(costs[:n])
    return int(total)
