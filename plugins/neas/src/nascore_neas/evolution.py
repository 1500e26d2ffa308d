"""The ``ensemble_evolution`` selector: NEAS's K-path evolution search.

SPOS-style evolution (population, top-k parents, mutation and crossover, every child checked against
the constraint before it is evaluated) whose genes are the split point and the K member paths, and
whose constraint is on the *whole ensemble* (the run's MACs/params bounds against the ensemble cost
table: trunk once, every branch counted). Variation is ensemble-aware:

* mutation redraws each member gene with probability ``mutation_prob`` and, with probability
  ``split_prob``, moves the split point to a neighbouring allowed one;
* crossover takes the split from either parent and K whole member paths drawn from both parents'
  2K members (so good members recombine into new ensembles).

Every child is canonical (shared layers tied, members sorted), so no ensemble is evaluated twice.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture, Candidate
from nascore.roles import SearchResult
from nascore.search import evaluate, rank, sample_feasible
from nascore_neas.ensemble import EnsembleSpace, require_ensemble


class EnsembleEvolutionConfig(BaseModel):
    """Options of ``ensemble_evolution``."""

    model_config = ConfigDict(extra="forbid")
    population: int = Field(20, gt=0, description="ensembles per generation")
    generations: int = Field(6, gt=0)
    top_k: int = Field(6, gt=0, description="parents: the best ensembles seen so far")
    mutations: int = Field(10, ge=0, description="children by mutation per generation")
    mutation_prob: float = Field(0.15, ge=0, le=1, description="per member gene")
    split_prob: float = Field(0.3, ge=0, le=1, description="chance a mutation also moves the split point")
    crossovers: int = Field(10, ge=0, description="children by member-level crossover per generation")
    max_tries: int = Field(50, gt=0, description="draws per child before giving up (infeasible or seen)")


class EnsembleEvolution:
    """Evolution over split point and member paths under a whole-ensemble constraint."""

    def __init__(self, cfg: EnsembleEvolutionConfig, ctx: Any = None) -> None:
        self.cfg = cfg

    def _child(self, ctx: Any, space: EnsembleSpace, make: Any, seen: set) -> Architecture | None:
        for _ in range(self.cfg.max_tries):
            a = make()
            if a not in seen and space.contains(a) and ctx.feasible(a):
                return a
        return None

    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        space = require_ensemble(ctx.space, "selector 'ensemble_evolution'")
        cfg = self.cfg
        rng = random.Random(ctx.stage_seed("ensemble_evolution"))
        pop_n, gens = (4, 2) if ctx.smoke else (cfg.population, cfg.generations)
        n_mut, n_cross = (2, 2) if ctx.smoke else (cfg.mutations, cfg.crossovers)
        seen: set[Architecture] = set()
        scored: dict[Architecture, Candidate] = {}
        population: list[Architecture] = []
        for _ in range(pop_n * cfg.max_tries):
            if len(population) >= pop_n:
                break
            a = sample_feasible(ctx, rng)
            if a not in seen:
                seen.add(a)
                population.append(a)
        bar = ctx.progress(total=gens, desc="ensemble evolution")
        for g in range(gens):
            new = [a for a in population if a not in scored]
            for c in evaluate(ctx, evaluator, new, origin=f"ensemble_evolution:gen{g}"):
                scored[c.arch] = c
            top = rank(list(scored.values()))[: cfg.top_k]
            best = top[0]
            ctx.log.metric("evolution", stage=ctx.stage_key, generation=g, best=best.score, arch=best.arch_str,
                           macs=best.macs, evaluated=len(scored))
            bar.set_postfix({"best": f"{best.score:.4g}", "evaluated": len(scored)}, refresh=False)
            bar.update(1)
            if g == gens - 1:
                break
            parents = [c.arch for c in top]
            children: list[Architecture] = []

            def mutate() -> Architecture:
                child = space.mutate(rng.choice(parents), cfg.mutation_prob, rng)
                if rng.random() < cfg.split_prob:
                    child = space.mutate_split(child, rng)
                return child

            def cross() -> Architecture:
                if len(parents) < 2:
                    return mutate()
                a, b = rng.sample(parents, 2)
                return space.crossover(a, b, rng)

            for make, n in ((mutate, n_mut), (cross, n_cross)):
                for _ in range(n):
                    child = self._child(ctx, space, make, seen)
                    if child is not None:
                        seen.add(child)
                        children.append(child)
            while len(children) < pop_n:
                child = self._child(ctx, space, lambda: sample_feasible(ctx, rng), seen)
                if child is None:
                    break
                seen.add(child)
                children.append(child)
            population = children
        bar.close()
        ranked = rank(list(scored.values()))  # (evaluate() logged every candidate to metrics.jsonl)
        return SearchResult(candidates=ranked, info={"evaluated": len(scored)})
