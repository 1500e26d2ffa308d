"""Built-in selectors: ``random`` search (the baseline every method must beat)."""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nascore.hookspecs import hookimpl
from nascore.roles import SearchResult
from nascore.search import evaluate, rank, sample_feasible


class RandomSearchConfig(BaseModel):
    """Options of ``random`` search."""

    model_config = ConfigDict(extra="forbid")
    samples: int = Field(100, gt=0, description="distinct architectures to evaluate")
    batch: int = Field(10, gt=0, description="architectures scored per evaluator call")


class RandomSearch:
    """Evaluate N distinct feasible architectures drawn uniformly; return them ranked."""

    def __init__(self, cfg: RandomSearchConfig, ctx: Any = None) -> None:
        self.cfg = cfg

    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        rng = random.Random(ctx.stage_seed("random"))
        target = 3 if ctx.smoke else self.cfg.samples
        seen: dict = {}
        tries = 0
        while len(seen) < target and tries < 50 * target:
            tries += 1
            arch = sample_feasible(ctx, rng)
            seen.setdefault(arch, None)
        archs = list(seen)
        cands = []
        bar = ctx.progress(total=len(archs), desc="random search")
        for i in range(0, len(archs), self.cfg.batch):
            part = archs[i : i + self.cfg.batch]
            cands += evaluate(ctx, evaluator, part, origin="random")
            bar.set_postfix({"best": f"{max(c.score for c in cands):.4g}"}, refresh=False)
            bar.update(len(part))
        bar.close()
        ranked = rank(cands)
        return SearchResult(candidates=ranked, info={"evaluated": len(cands)})


@hookimpl
def register_selectors(register: Any) -> None:
    register("random", RandomSearch, config=RandomSearchConfig, summary="uniform random search under the constraint")
