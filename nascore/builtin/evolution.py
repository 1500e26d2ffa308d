"""The ``evolution`` selector: SPOS's evolutionary search under a resource constraint.

Follows ``megvii-model/SinglePathOneShot:src/Search/search.py`` (``EvolutionSearcher``):

1. an initial population of ``population`` random architectures that satisfy the constraint;
2. for each of ``generations`` rounds: the ``top_k`` best architectures evaluated so far are the
   parents; ``mutations`` children redraw each decision of a random parent with probability
   ``mutation_prob``; ``crossovers`` children take each decision from one of two random parents
   (p = 1/2); a child is *legal* if it satisfies the constraint (by the cost table, never fvcore),
   is a valid architecture of the current space and was never evaluated before; each kind stops
   after ``max_tries_factor`` × its count draws; the rest of the population is filled with random
   legal architectures;
3. every candidate is evaluated exactly once (a visited set), with whatever evaluator the stage
   names (``accuracy``, an angle, a table …), through :func:`nascore.search.evaluate`.

**Fixed bug.** The official code evaluates the last generation's children but never merges them
into its top-k lists before returning, so its answer ignores the final ~50 evaluations. Here every
evaluated candidate is ranked: the returned list is *all* evaluated architectures, best first.

**Resume.** After each generation the selector writes its progress (generation, RNG state, every
evaluated candidate with its metrics) to ``ctx.state["evolution"][stage key]`` and the run's
``state.json``; a resumed stage continues from there without re-evaluating anything and returns
exactly what an uninterrupted run would (all randomness comes from one ``random.Random`` seeded by
``ctx.stage_seed("evolution")``, whose state is part of the checkpoint).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture, Candidate
from nascore.errors import ConstraintError, NascoreError
from nascore.hookspecs import hookimpl
from nascore.roles import SearchResult
from nascore.search import evaluate, rank
from nascore.trainer import rng_from_json, rng_state_json

#: Enumerate the remaining legal architectures when random draws stop finding new ones and the
#: space has at most this many architectures (tiny test beds are exhausted by evolution).
ENUMERATE_LIMIT = 200_000


class EvolutionConfig(BaseModel):
    """Options of ``evolution`` (defaults: the SPOS code's ``search.py``)."""

    model_config = ConfigDict(extra="forbid")
    population: int = Field(50, gt=0, description="architectures per generation")
    generations: int = Field(20, ge=0, description="rounds of children after the initial population")
    top_k: int = Field(10, gt=0, description="parents: the k best architectures evaluated so far")
    mutations: int = Field(25, ge=0, description="mutated children per generation")
    mutation_prob: float = Field(0.1, ge=0, le=1, description="probability of redrawing each decision of a mutant")
    crossovers: int = Field(25, ge=0, description="crossover children per generation")
    max_tries_factor: int = Field(10, gt=0, description="draws per wanted child before giving up on that kind")
    fill_tries: int = Field(100, gt=0, description="random draws per missing population member before giving up")
    smoke_population: int = Field(8, gt=0, description="population under --smoke (2 generations)")


class EvolutionSearch:
    """SPOS evolution (see module docstring); returns every evaluated candidate, best first."""

    def __init__(self, cfg: EvolutionConfig, ctx: Any = None) -> None:
        self.cfg = cfg

    # -- budget --------------------------------------------------------------------------------
    def budget(self, ctx: Any) -> dict[str, int]:
        """The effective sizes (shrunk under ``--smoke``)."""
        c = self.cfg
        if not ctx.smoke:
            return {"population": c.population, "generations": c.generations, "top_k": c.top_k,
                    "mutations": c.mutations, "crossovers": c.crossovers}
        pop = min(c.population, c.smoke_population)
        return {"population": pop, "generations": min(c.generations, 2), "top_k": min(c.top_k, max(pop // 3, 1)),
                "mutations": min(c.mutations, pop // 2), "crossovers": min(c.crossovers, pop // 2)}

    # -- search --------------------------------------------------------------------------------
    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        if evaluator is None:
            raise NascoreError("evolution needs an evaluator", hint="add `evaluator: accuracy` (or another) to the search stage")
        if not ctx.constraint.unbounded:
            ctx.constraint.check_feasible(ctx.cost, ctx.space.allowed)
        b = self.budget(ctx)
        saved = ctx.state.setdefault("evolution", {}).get(ctx.stage_key)
        evaluated: list[Candidate] = []
        if saved is not None:
            evaluated = [Candidate.from_json(c) for c in saved["evaluated"]]
            rng = rng_from_json(saved["rng"])
            gen = int(saved["generation"]) + 1
            done = bool(saved.get("done", False))
            ctx.log.event("resume", stage=ctx.stage_key, generation=gen, evaluated=len(evaluated))
        else:
            rng = random.Random(ctx.stage_seed("evolution"))
            gen, done = 0, False
        visited: set[Architecture] = {c.arch for c in evaluated}
        bar = ctx.progress(total=b["generations"] + 1, initial=min(gen, b["generations"] + 1), desc="evolution")
        try:
            while not done and gen <= b["generations"]:
                if gen == 0:
                    groups = {"random": self._fill(ctx, rng, visited, [], b["population"])}
                    if not groups["random"]:
                        raise ConstraintError(
                            "evolution found no architecture that satisfies the constraint",
                            hint="loosen the constraint (see `nascore cost` for the MACs range of the space)",
                        )
                else:
                    parents = [c.arch for c in rank(evaluated)[: b["top_k"]]]
                    mut = self._children(ctx, rng, visited, b["mutations"], lambda: self._mutate(ctx, rng, parents))
                    cross = self._children(ctx, rng, visited, b["crossovers"], lambda: self._cross(ctx, rng, parents))
                    fill = self._fill(ctx, rng, visited, mut + cross, b["population"] - len(mut) - len(cross))
                    groups = {"mutation": mut, "crossover": cross, "random": fill}
                new: list[Candidate] = []
                for kind, archs in groups.items():
                    if archs:
                        new += evaluate(ctx, evaluator, archs, origin=f"evolution:gen{gen}:{kind}")
                evaluated += new
                done = not new or gen == b["generations"]
                self._report(ctx, gen, new, evaluated, b["top_k"], {k: len(v) for k, v in groups.items()})
                if not new:
                    ctx.log.event("evolution_exhausted", stage=ctx.stage_key, generation=gen, evaluated=len(evaluated))
                ctx.state["evolution"][ctx.stage_key] = {
                    "generation": gen, "rng": rng_state_json(rng), "done": done,
                    "evaluated": [c.to_json() for c in evaluated],
                }
                ctx.write_state()
                bar.update(1)
                if evaluated:
                    best = rank(evaluated)[0]
                    bar.set_postfix({"best": f"{best.score:.4g}", "evaluated": len(evaluated)})
                gen += 1
        finally:
            bar.close()
        ranked = rank(evaluated)  # (every candidate is already in metrics.jsonl: evaluate() logs it)
        return SearchResult(candidates=ranked, info={"evaluated": len(evaluated), "generations": gen})

    # -- children ------------------------------------------------------------------------------
    @staticmethod
    def _legal(ctx: Any, arch: Architecture, visited: set[Architecture]) -> bool:
        return arch not in visited and ctx.space.is_valid(arch) and ctx.feasible(arch)

    def _mutate(self, ctx: Any, rng: random.Random, parents: list[Architecture]) -> Architecture:
        return ctx.space.mutate(parents[rng.randrange(len(parents))], self.cfg.mutation_prob, rng)

    @staticmethod
    def _cross(ctx: Any, rng: random.Random, parents: list[Architecture]) -> Architecture:
        a = parents[rng.randrange(len(parents))]
        b = parents[rng.randrange(len(parents))]
        return ctx.space.crossover(a, b, rng)

    def _children(
        self, ctx: Any, rng: random.Random, visited: set[Architecture], n: int, make: Callable[[], Architecture]
    ) -> list[Architecture]:
        """Up to ``n`` legal children from ``make``, at most ``max_tries_factor × n`` draws."""
        out: list[Architecture] = []
        tries = self.cfg.max_tries_factor * n
        while len(out) < n and tries > 0:
            tries -= 1
            arch = make()
            if self._legal(ctx, arch, visited):
                visited.add(arch)
                out.append(arch)
        return out

    def _fill(
        self, ctx: Any, rng: random.Random, visited: set[Architecture], have: list[Architecture], n: int
    ) -> list[Architecture]:
        """``n`` random legal architectures (fewer when the space runs out of them)."""
        out: list[Architecture] = []
        if n <= 0:
            return out
        tries = self.cfg.fill_tries * n
        while len(out) < n and tries > 0:
            tries -= 1
            arch = ctx.space.sample(rng)
            if self._legal(ctx, arch, visited):
                visited.add(arch)
                out.append(arch)
        if len(out) < n and ctx.space.size() <= ENUMERATE_LIMIT:
            rest = [a for a in ctx.space.enumerate() if self._legal(ctx, a, visited)]
            rng.shuffle(rest)
            for arch in rest[: n - len(out)]:
                visited.add(arch)
                out.append(arch)
        return out

    # -- logging -------------------------------------------------------------------------------
    @staticmethod
    def _report(ctx: Any, gen: int, new: list[Candidate], evaluated: list[Candidate], k: int,
                sizes: dict[str, int]) -> None:
        if not evaluated:
            return
        top = rank(evaluated)[:k]
        scores = [c.score for c in new]
        ctx.log.metric(
            "generation", stage=ctx.stage_key, generation=gen, evaluated=len(new), total_evaluated=len(evaluated),
            best=max(scores) if scores else None, mean=statistics.fmean(scores) if scores else None,
            topk_best=top[0].score, topk_mean=statistics.fmean(c.score for c in top), best_arch=top[0].arch_str,
            **{f"n_{kind}": v for kind, v in sizes.items()},
        )


@hookimpl
def register_selectors(register: Any) -> None:
    register("evolution", EvolutionSearch, config=EvolutionConfig,
             summary="SPOS evolutionary search under the constraint (visited set, final generation merged)")
