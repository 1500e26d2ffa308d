"""Built-in selector ``regularized_evolution``: aging evolution (Real et al., AAAI 2019).

The strongest baseline of the NAS-Bench-201 paper (Dong & Yang, ICLR 2020), which runs it with a
population of 10 and a tournament sample of 3 (AutoDL-Projects ``R-EA.sh``). Algorithm 1 of Real
et al.:

1. fill the population with ``population`` random (feasible, valid) architectures, scored;
2. each cycle: draw ``sample_size`` members uniformly *with replacement*, take the best as parent,
   mutate one decision to a different allowed op (NB201's ``mutate_arch``: one edge, another op),
   score the child, append it and remove the *oldest* member (aging, not the worst);
3. return the whole history ranked: the best architecture ever scored is the answer.

Unlike the SPOS-style ``evolution`` (top-k parents, crossover + mutation, generations), there are
no generations and no crossover; every cycle costs exactly one new evaluation. A child that was
already scored reuses its score (a table lookup or a supernet score would return the same number),
so ``evaluated`` counts distinct architectures.
"""

from __future__ import annotations

import collections
import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture, Candidate
from nascore.hookspecs import hookimpl
from nascore.roles import SearchResult
from nascore.search import evaluate, rank, sample_feasible


class RegularizedEvolutionConfig(BaseModel):
    """Options of ``regularized_evolution`` (defaults: NAS-Bench-201 paper's REA)."""

    model_config = ConfigDict(extra="forbid")
    population: int = Field(10, ge=2, description="population size P (aging: the oldest dies each cycle)")
    sample_size: int = Field(3, ge=1, description="tournament size S: members drawn (with replacement) to pick a parent")
    cycles: int = Field(100, ge=0, description="mutation cycles after the initial population (one new evaluation each)")
    max_tries: int = Field(100, gt=0, description="redraws of a mutation that is invalid or breaks the constraint")


class RegularizedEvolution:
    """Aging evolution over ``ctx.space`` under ``ctx.constraint`` (see module docstring)."""

    def __init__(self, cfg: RegularizedEvolutionConfig, ctx: Any = None) -> None:
        if cfg.sample_size > cfg.population:
            from nascore.errors import ConfigError

            raise ConfigError([f"sample_size ({cfg.sample_size}) must not exceed population ({cfg.population})"],
                              source="regularized_evolution options")
        self.cfg = cfg

    def mutate(self, ctx: Any, parent: Architecture, rng: random.Random) -> Architecture:
        """One decision set to a different allowed op; redrawn until valid and feasible."""
        space = ctx.space
        choices = [i for i, a in enumerate(space.allowed) if len(a) > 1]
        if not choices:
            return parent
        for _ in range(self.cfg.max_tries):
            i = rng.choice(choices)
            others = [o for o in space.allowed[i] if o != parent.ops[i]]
            child = parent.replace(i, rng.choice(others))
            if space.is_valid(child) and ctx.feasible(child):
                return child
        return parent

    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        cfg = self.cfg
        rng = random.Random(ctx.stage_seed("regularized_evolution"))
        pop_size, cycles = (min(cfg.population, 4), 4) if ctx.smoke else (cfg.population, cfg.cycles)
        sample_size = min(cfg.sample_size, pop_size)
        seen: dict[Architecture, Candidate] = {}

        def score(archs: list[Architecture], origin: str) -> list[Candidate]:
            new = [a for a in dict.fromkeys(archs) if a not in seen]
            if new:
                for c in evaluate(ctx, evaluator, new, origin=origin):
                    seen[c.arch] = c
            return [seen[a] for a in archs]

        bar = ctx.progress(total=pop_size + cycles, desc="regularized evolution")
        population: collections.deque[Candidate] = collections.deque()
        for c in score([sample_feasible(ctx, rng) for _ in range(pop_size)], "rea:init"):
            population.append(c)
        bar.update(pop_size)
        best = max(population, key=lambda c: c.score)
        for cycle in range(cycles):
            contestants = [population[rng.randrange(len(population))] for _ in range(sample_size)]
            parent = max(contestants, key=lambda c: c.score)
            child = score([self.mutate(ctx, parent.arch, rng)], f"rea:cycle{cycle}")[0]
            population.append(child)
            population.popleft()
            if child.score > best.score:
                best = child
            bar.update(1)
            bar.set_postfix({"best": f"{best.score:.4g}"}, refresh=False)
            if (cycle + 1) % 10 == 0 or cycle + 1 == cycles:
                ctx.log.metric("rea", stage=ctx.stage_key, cycle=cycle + 1, best=best.score, evaluated=len(seen))
        bar.close()
        ranked = rank(list(seen.values()))
        return SearchResult(candidates=ranked, info={"evaluated": len(seen), "cycles": cycles, "population": pop_size})


@hookimpl
def register_selectors(register: Any) -> None:
    register("regularized_evolution", RegularizedEvolution, config=RegularizedEvolutionConfig,
             summary="aging evolution (Real et al.; NAS-Bench-201's REA: population 10, tournament 3)")
