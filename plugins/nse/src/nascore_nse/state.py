"""NSE's state across rounds, kept in ``ctx.state["nse"]`` (JSON, saved after every stage).

``round``       rounds completed by the selector so far
``active``      per layer, the active ops (K at most) the current round trains and searches
``queue``       per layer, the pending ops not yet tried, in the (seeded, random) order they enter
``tried``       per layer, every op that has been active at least once (never re-queued)
``front``       the Pareto-front architectures carried into the next round (strings)
``history``     per round: evaluated count, the front (arch, MACs, accuracy), hypervolume, ops added
``alpha``       per layer ``{op: α}`` written by the ``nse`` trainer at the end of its stage
``reinit``      set by the selector after a round: the next ``nse`` train stage re-initialises the
                supernet weights and α (NSE's ``re_init``) and clears it
``hv_ref``      the MACs reference point of the hypervolume (fixed for the whole run)

The state is created on first use by the trainer or the selector (whichever runs first): the first
round's active ops (the space's ``initial`` ops, else ``active`` ops drawn at random per layer) and
the queues (the rest of the pool in a random order), both seeded by the run seed, and the run's
space becomes that active sub-space.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from nascore_nse.pool import NSEPoolSpace, require_pool


def _rng(seed: int, layer: int) -> random.Random:
    h = hashlib.sha256(f"nse-queue/{seed}/{layer}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


def initial_state(space: NSEPoolSpace, seed: int) -> dict[str, Any]:
    """Round-0 active ops and pending queues (seeded per layer)."""
    active, queue = [], []
    for j in range(len(space.decisions)):
        order = list(space.pool)
        _rng(seed, j).shuffle(order)
        if space.initial:
            first = [o for o in space.pool if o in space.initial]
        else:
            first = order[: space.active_k]
        active.append(sorted(first, key=space.pool.index))
        queue.append([o for o in order if o not in first])
    return {
        "round": 0, "active": active, "queue": queue, "tried": [list(a) for a in active],
        "front": [], "history": [], "alpha": None, "reinit": False, "hv_ref": None,
    }


def ensure_state(ctx: Any) -> dict[str, Any]:
    """The run's NSE state, created (and the run's space restricted to round 0's ops) on first use."""
    space = require_pool(ctx.base_space, "NSE")
    ns = ctx.state.get("nse")
    if ns is None:
        ns = initial_state(space, int(ctx.cfg.seed))
        ctx.state["nse"] = ns
        ctx.space = space.restrict_active(ns["active"])
        ctx.log.event("nse_init", active=ns["active"], queue=ns["queue"])
    return ns


def alpha_probs(space: NSEPoolSpace, ns: dict[str, Any]) -> list[dict[str, float]] | None:
    """Gate probabilities σ(α) per layer and active op, from the last train stage (None: no α yet)."""
    import math

    alpha = ns.get("alpha")
    if not alpha:
        return None
    return [{o: 1.0 / (1.0 + math.exp(-float(alpha[j].get(o, 0.0)))) for o in space.layer_ops(j)}
            for j in range(len(space.decisions))]
