"""The ``diversity_shrink`` selector: NEAS's diversity-guided search-space shrinking.

NEAS released no search code; the paper describes the shrinking as scoring every candidate operator
by its *potential* (how good the ensembles containing it are) and its *diversity* (how much it makes
the members differ), and dropping the lowest. Our reading, step by step:

1. For every layer ``j`` still holding more than ``min_ops`` ops and every op ``o`` allowed there,
   draw ``samples_per_op`` feasible ensembles of the current space in which ``o`` is forced at layer
   ``j`` (into the trunk when ``j`` is shared, else into one random member's branch). Every distinct
   ensemble is scored once by the evaluator (``ensemble_accuracy``: supernet ensemble top-1 after BN
   recalibration, with the members' disagreement).
2. ``potential(j, o)`` = mean ensemble accuracy over *all* scored ensembles that run ``o`` at layer
   ``j`` (trunk or any member). ``diversity(j, o)`` = mean member diversity (``disagreement`` by
   default, or ``kl``) over the scored ensembles whose members *differ* at layer ``j`` and one of
   which runs ``o`` there — the op's contribution to ensembles that are diverse at that layer.
3. ``score = z(potential) + diversity_weight · z(diversity)``, z-scores over all scored (layer, op)
   pairs (scale-free; a pair never seen in a diverse ensemble gets z = 0 for diversity).
4. Drop the ``drop`` lowest-scoring pairs, never leaving a layer fewer than ``min_ops`` ops, and
   restrict every member alike (same interface as ABS: the result is a smaller space).

The per-op scores are logged (``metrics.jsonl``, event ``diversity_shrink``); the selector returns no
candidates, so a later search (``ensemble_evolution``) chooses the ensemble in the shrunk space.
"""

from __future__ import annotations

import math
import random
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture
from nascore.errors import NascoreError, PluginError
from nascore.roles import SearchResult
from nascore.search import evaluate, sample_feasible
from nascore_neas.ensemble import EnsembleSpace, require_ensemble


#: Ensembles scored per call under ``--smoke``.
SMOKE_ENSEMBLES = 6


class DiversityShrinkConfig(BaseModel):
    """Options of ``diversity_shrink``."""

    model_config = ConfigDict(extra="forbid")
    samples_per_op: int = Field(6, gt=0, description="ensembles drawn with each (layer, op) forced")
    drop: int = Field(2, ge=0, description="(layer, op) pairs dropped per call")
    min_ops: int = Field(1, ge=1, description="never leave a layer fewer ops than this")
    diversity_weight: float = Field(0.5, ge=0, description="weight of z(diversity) against z(potential)")
    diversity_metric: str = Field("disagreement", description="evaluator metric measuring member diversity (disagreement | kl)")
    batch: int = Field(16, gt=0, description="ensembles per evaluator call")


def _z(values: list[float]) -> list[float]:
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2:
        return [0.0 for _ in values]
    mean = sum(finite) / len(finite)
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))
    if sd == 0:
        return [0.0 for _ in values]
    return [0.0 if math.isnan(v) else (v - mean) / sd for v in values]


def force_op(space: EnsembleSpace, arch: Architecture, layer: int, op: str, rng: random.Random) -> Architecture:
    """``arch`` with ``op`` at ``layer``: in the trunk if the layer is shared, else in one member."""
    s = space.split_of(arch)
    ops = list(arch.ops)
    if layer < s:
        for k in range(space.members):
            ops[space.index(k, layer)] = op
    else:
        ops[space.index(rng.randrange(space.members), layer)] = op
    return space.canonical(Architecture(ops))


class DiversityShrink:
    """Score (layer, op) pairs by ensemble potential and member diversity; drop the lowest."""

    def __init__(self, cfg: DiversityShrinkConfig, ctx: Any = None) -> None:
        self.cfg = cfg

    def sample_with(self, ctx: Any, space: EnsembleSpace, layer: int, op: str, rng: random.Random) -> Architecture | None:
        for _ in range(200):
            arch = force_op(space, sample_feasible(ctx, rng), layer, op, rng)
            if ctx.feasible(arch) and space.contains(arch):
                return arch
        return None

    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        space = require_ensemble(ctx.space, "selector 'diversity_shrink'")
        if evaluator is None:
            raise NascoreError("diversity_shrink needs an evaluator", hint="add `evaluator: ensemble_accuracy` to the shrink stage")
        cfg = self.cfg
        rng = random.Random(ctx.stage_seed("diversity_shrink"))
        per_op = 1 if ctx.smoke else cfg.samples_per_op
        pairs = [(j, o) for j in range(space.layers) for o in space.layer_allowed(j)
                 if len(space.layer_allowed(j)) > cfg.min_ops]
        if not pairs or cfg.drop == 0:
            return SearchResult(space=space, info={"dropped": []})
        archs: dict[Architecture, None] = {}
        for j, o in pairs:
            for _ in range(per_op):
                a = self.sample_with(ctx, space, j, o, rng)
                if a is not None:
                    archs.setdefault(a, None)
        archs_list = list(archs)
        if ctx.smoke:  # a handful of ensembles: the same code path in seconds
            archs_list = archs_list[:SMOKE_ENSEMBLES]
        cands = []
        bar = ctx.progress(total=len(archs_list), desc="diversity shrink")
        for i in range(0, len(archs_list), cfg.batch):
            part = archs_list[i : i + cfg.batch]
            cands += evaluate(ctx, evaluator, part, origin="diversity_shrink")
            bar.update(len(part))
        bar.close()
        if cands and cfg.diversity_metric not in cands[0].metrics:
            raise PluginError(
                f"evaluator {type(evaluator).__name__} returned no {cfg.diversity_metric!r} metric "
                f"(got {sorted(cands[0].metrics)})",
                hint="use `evaluator: ensemble_accuracy`, or set diversity_metric to one it returns",
            )
        scores = self.score_pairs(space, cands, pairs)
        new, dropped = self.drop_lowest(space, scores)
        ctx.log.event("diversity_shrink", stage=ctx.stage_key, evaluated=len(cands),
                      dropped=[f"layer{j}:{o}" for j, o in dropped],
                      scores={f"layer{j}:{o}": v for (j, o), v in scores.items()})
        if not ctx.quiet and ctx.dist.is_main:
            print(f"  diversity shrink: scored {len(scores)} (layer, op) pairs on {len(cands)} ensembles; "
                  f"dropped {', '.join(f'layer{j}:{o}' for j, o in dropped) or 'nothing'}", file=sys.stderr)
        restricted = space.restrict_layers(new)
        return SearchResult(space=restricted, info={"dropped": dropped, "scores": scores, "evaluated": len(cands)})

    def score_pairs(self, space: EnsembleSpace, cands: list[Any], pairs: list[tuple[int, str]]) -> dict[tuple[int, str], dict[str, float]]:
        """``{(layer, op): {potential, diversity, score}}`` from the scored ensembles."""
        metric = self.cfg.diversity_metric
        pot: dict[tuple[int, str], list[float]] = {p: [] for p in pairs}
        div: dict[tuple[int, str], list[float]] = {p: [] for p in pairs}
        for c in cands:
            s, trunk, branches = space.decode(c.arch)
            acc = float(c.metrics.get("acc", c.score))
            d = float(c.metrics[metric])
            for j in range(space.layers):
                ops_here = [trunk[j]] if j < s else [b[j - s] for b in branches]
                for o in set(ops_here):
                    if (j, o) in pot:
                        pot[(j, o)].append(acc)
                        if j >= s and len(set(ops_here)) > 1:
                            div[(j, o)].append(d)
        mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
        p_vals = [mean(pot[p]) for p in pairs]
        d_vals = [mean(div[p]) for p in pairs]
        zp, zd = _z(p_vals), _z(d_vals)
        out = {}
        for p, pv, dv, a, b in zip(pairs, p_vals, d_vals, zp, zd):
            score = (a if not math.isnan(pv) else -1e9) + self.cfg.diversity_weight * b
            out[p] = {"potential": pv, "diversity": dv, "score": score, "n": float(len(pot[p])), "n_diverse": float(len(div[p]))}
        return out

    def drop_lowest(self, space: EnsembleSpace, scores: dict[tuple[int, str], dict[str, float]]) -> tuple[dict[int, list[str]], list[tuple[int, str]]]:
        """Remove the lowest-scoring pairs, never leaving a layer below ``min_ops`` ops."""
        allowed = {j: list(space.layer_allowed(j)) for j in range(space.layers)}
        dropped: list[tuple[int, str]] = []
        for (j, o), _ in sorted(scores.items(), key=lambda kv: (kv[1]["score"], kv[0])):
            if len(dropped) >= self.cfg.drop:
                break
            if len(allowed[j]) <= self.cfg.min_ops or o not in allowed[j]:
                continue
            allowed[j].remove(o)
            dropped.append((j, o))
        return allowed, dropped
