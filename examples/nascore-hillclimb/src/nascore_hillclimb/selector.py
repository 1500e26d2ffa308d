"""A hill-climbing selector: the smallest complete example of a nascore search strategy.

From a random feasible start it tries single-decision changes in random order and moves to the
first one that scores better, until no neighbour improves or the evaluation budget runs out; then
it restarts. Every candidate respects the run's constraint (checked on the cost table).
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nascore.roles import SearchResult
from nascore.search import evaluate, rank, sample_feasible


class HillClimbConfig(BaseModel):
    """Options, validated before the run starts (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")
    budget: int = Field(60, gt=0, description="architectures to evaluate in total")
    restarts: int = Field(3, gt=0, description="random starting points")


class HillClimb:
    def __init__(self, cfg: HillClimbConfig, ctx: Any = None) -> None:
        self.cfg = cfg

    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        rng = random.Random(ctx.stage_seed("hillclimb"))
        budget = 6 if ctx.smoke else self.cfg.budget
        seen: dict = {}

        def score(arch: Any) -> float:
            if arch not in seen:
                seen[arch] = evaluate(ctx, evaluator, [arch], origin=f"hillclimb:{len(seen)}")[0]
            return seen[arch].score

        for _ in range(self.cfg.restarts):
            current = sample_feasible(ctx, rng)
            best = score(current)
            improved = True
            while improved and len(seen) < budget:
                improved = False
                moves = [(i, o) for i, opts in enumerate(ctx.space.allowed) for o in opts if o != current[i]]
                rng.shuffle(moves)
                for i, o in moves:
                    if len(seen) >= budget:
                        break
                    nxt = current.replace(i, o)
                    if not ctx.space.is_valid(nxt) or not ctx.feasible(nxt):
                        continue
                    s = score(nxt)
                    if s > best:
                        current, best, improved = nxt, s, True
                        break
            if len(seen) >= budget:
                break
        return SearchResult(candidates=rank(list(seen.values())), info={"evaluated": len(seen)})
