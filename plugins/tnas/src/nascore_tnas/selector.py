"""``tnas`` selector: TNAS's modified bi-level breadth-first search over the architecture tree.

Every decision (cell edge) starts at the root of its operation tree (:mod:`nascore_tnas.optree`):
it holds all its ops, run as a mixed op. Then, until every decision is a single op (official
``search-cell-tnas.py``):

1. the undecided decisions are taken ``d_a`` at a time (``order: random`` shuffles them, as the
   code's default);
2. the children are the Cartesian product of the chosen decisions' tree children (≤ 2^d_a for a
   binary tree); children that are not valid cells (a node cut off by ``none``) are dropped and
   never trained or scored;
3. each child is scored: ``child_score: train`` fine-tunes the child sub-supernet from the
   parent's weights for ``decision_epochs`` (fresh SGD, mixed op = softmax(α)-weighted or summed)
   and takes its validation accuracy (or its training loss); ``child_score: evaluator`` asks the
   stage's evaluator instead (see below);
4. the top-k children are re-examined (trained on and scored again) up to ``repeats`` times: if the
   first-ranked child wins again it is kept, otherwise the child that won the most re-examinations
   (for k = 2: the runner-up, exactly the code's rule);
5. the winner's sub-space (and, when trained, its weights and α) becomes the new supernet; after
   each pass over the undecided decisions it is trained for ``stabilize_epochs`` more.

**Scoring with an evaluator** (e.g. ``nb201_table``, for benchmarking in seconds): an evaluator
with ``scores_subspaces = True`` receives the set-valued child itself; any other evaluator scores
single architectures, so a child's score is the ``aggregate`` (mean, or max) of its scores over
``subspace_samples`` valid members drawn uniformly from the child's sub-space (all members when the
sub-space is that small, or when ``subspace_samples`` is 0). The mean is a Monte-Carlo estimate of
"how good is a random architecture of this sub-space", the analogue of a briefly trained
sub-supernet; re-examination draws fresh members. Member scores are cached, so ``arch_queries``
counts distinct architectures looked up.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture, Candidate, option_members
from nascore.errors import ConfigError, NascoreError
from nascore.methods.mixed import ALPHA_STATE_KEY, ArchAlpha, path_accuracy, subspace_members, subspace_size, train_steps
from nascore.roles import SearchResult
from nascore.search import objective
from nascore.space import constrained_sample
from nascore_tnas import optree


class TNASConfig(BaseModel):
    """Options of the ``tnas`` selector (defaults: official code, ``cfgs/search_cell/tnas.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    grouping: Literal["alpha", "fixed"] = Field(
        "alpha", description="operation tree: from the warm-up's α (code default; needs a tnas_warmup/setn stage) or fixed")
    tree: list | None = Field(
        None, description="fixed operation tree for every decision, nested lists of op names "
        "(default: none | ((skip, avg-pool) | (conv1x1, conv3x3)) for NB201 ops)")
    alpha_top: int = Field(2, ge=1, description="size of the first α group ([top-k by α, rest])")
    d_a: int = Field(6, ge=1, description="decisions expanded together per step (6 = every NB201 edge: ≤ 64 children)")
    order: Literal["random", "fixed"] = Field("random", description="order in which undecided decisions are expanded")
    top_k: int = Field(2, ge=1, description="children re-examined to reduce variance (1 = no re-examination)")
    repeats: int = Field(2, ge=0, description="maximum re-examination rounds of the top-k (code: 2)")
    child_score: Literal["train", "evaluator"] = Field(
        "train", description="train each child sub-supernet briefly (paper/code), or ask the stage's evaluator")
    # -- child_score: train ---------------------------------------------------------------------
    decision_epochs: int = Field(2, ge=0, description="training epochs per child (code: 2)")
    decision_steps: int | None = Field(None, ge=1, description="training steps per child (overrides decision_epochs)")
    stabilize_epochs: int = Field(2, ge=0, description="epochs training the winner after each pass (code: 2)")
    stabilize_steps: int | None = Field(None, ge=0, description="steps instead of stabilize_epochs")
    lr: float = Field(0.025, gt=0, description="child SGD learning rate (cosine to lr_min)")
    lr_min: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="per-child lr schedule (the NATS script's scheduler never advances: constant)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    metric: Literal["val_acc", "train_loss"] = Field("val_acc", description="child score: validation accuracy or -training loss")
    split: Literal["archval", "val"] = Field("archval", description="split the validation accuracy is measured on")
    eval_batches: int | None = Field(None, ge=1, description="validation batches per child score (null: the whole split)")
    bn: Literal["batch", "stored"] = Field("batch", description="BatchNorm at scoring: batch statistics (TNAS: no running stats) or stored")
    mix: Literal["auto", "alpha", "sum"] = Field(
        "auto", description="how a mixed edge combines its ops: softmax(α) (code), plain sum, auto = α if learned")
    train_alpha: bool = Field(True, description="keep training α with the weights in each child (code: true)")
    # -- child_score: evaluator -----------------------------------------------------------------
    subspace_samples: int = Field(4, ge=0, description="members scored per child sub-space (0 = all)")
    aggregate: Literal["mean", "max"] = Field("mean", description="child score from its members' scores")
    common_samples: bool = Field(
        True, description="siblings draw members at the same random quantiles (common random numbers), "
        "as trained siblings see the same batches")


class TNASSelector:
    """Tree search over sub-supernets (see module docstring)."""

    def __init__(self, cfg: TNASConfig, ctx: Any = None) -> None:
        if cfg.grouping == "alpha" and cfg.tree is not None:
            raise ConfigError(["tree is only used with grouping: fixed (remove it or set grouping: fixed)"],
                              source="tnas options")
        if cfg.tree is not None:
            optree.normalize(cfg.tree)
        self.cfg = cfg
        self.children_evaluated = 0
        self.reexaminations = 0
        self.trainings = 0
        self.member_cache: dict[Architecture, float] = {}
        self.member_lookups = 0

    # -- the operation tree ----------------------------------------------------------------------
    def trees(self, ctx: Any, alpha: ArchAlpha | None) -> list[optree.Node]:
        space = ctx.space
        if self.cfg.grouping == "fixed":
            if self.cfg.tree is not None:
                base_ops = sorted({o for d in ctx.base_space.decisions for o in d.options})
                bad = optree.unknown_ops(self.cfg.tree, base_ops)
                if bad:
                    raise ConfigError([f"tree: unknown op(s) {bad}; the space's ops are {base_ops}"], source="tnas options")
            return [optree.fixed_tree(a, self.cfg.tree, d.name) for a, d in zip(space.allowed, space.decisions)]
        if alpha is None:
            raise NascoreError(
                "tnas with grouping: alpha needs α from a warm-up, but no earlier stage learned any",
                hint="add a train stage with trainer tnas_warmup before the search, or set grouping: fixed",
            )
        return [optree.alpha_tree(list(a), alpha.values(i), self.cfg.alpha_top) for i, a in enumerate(space.allowed)]

    # -- scoring a child -------------------------------------------------------------------------
    def _members_score(
        self, ctx: Any, evaluator: Any, child: Architecture, rng: random.Random,
        uniforms: list[list[float]] | None = None,
    ) -> tuple[float, int]:
        cfg = self.cfg
        size = subspace_size(child)
        bounded = not ctx.constraint.unbounded
        members: list[Architecture] = []
        if cfg.subspace_samples == 0 or size <= cfg.subspace_samples:
            members = [m for m in subspace_members(ctx.space, child) if not bounded or ctx.feasible(m)]
        elif uniforms is not None:
            # common random numbers: sibling sub-spaces are sampled at the same quantiles, so
            # their difference is not drowned by which members each happened to draw
            opts = [option_members(o) for o in child.ops]
            drawn = [Architecture([ops[min(int(u[i] * len(ops)), len(ops) - 1)] for i, ops in enumerate(opts)])
                     for u in uniforms]
            members = list(dict.fromkeys(m for m in drawn if ctx.space.is_valid(m) and ctx.feasible(m)))
        if not members:
            sub = ctx.space.restrict({i: option_members(o) for i, o in enumerate(child.ops)})
            picked: dict[Architecture, None] = {}
            for _ in range(20 * cfg.subspace_samples):
                picked[constrained_sample(sub, rng, ctx.feasible)] = None
                if len(picked) >= cfg.subspace_samples:
                    break
            members = list(picked)
        new = [m for m in members if m not in self.member_cache]
        if new:
            for m, metrics in zip(new, self._score(ctx, evaluator, new)):
                self.member_cache[m] = objective(evaluator, metrics)
        self.member_lookups += len(members)
        vals = [self.member_cache[m] for m in members]
        score = max(vals) if cfg.aggregate == "max" else sum(vals) / len(vals)
        return score, len(members)

    def _uniforms(self, ctx: Any, rng: random.Random) -> list[list[float]] | None:
        """Quantiles shared by the siblings of one comparison (``common_samples``)."""
        if not self.cfg.common_samples or self.cfg.child_score != "evaluator":
            return None
        return [[rng.random() for _ in ctx.space.decisions] for _ in range(self.cfg.subspace_samples)]

    @staticmethod
    def _score(ctx: Any, evaluator: Any, archs: list[Architecture]) -> list[dict[str, float]]:
        out = evaluator.score(archs, ctx)
        if not isinstance(out, list) or len(out) != len(archs):
            raise NascoreError(f"evaluator {type(evaluator).__name__}.score returned {type(out).__name__} for {len(archs)} archs")
        return out

    def _feasible_subspace(self, ctx: Any, child: Architecture) -> bool:
        if ctx.constraint.unbounded:
            return True
        return any(ctx.feasible(m) for m in subspace_members(ctx.space, child))

    # -- the search ------------------------------------------------------------------------------
    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        cfg = self.cfg
        train = cfg.child_score == "train"
        if not train and evaluator is None:
            raise NascoreError("tnas with child_score: evaluator needs an evaluator in the search stage",
                               hint="add `evaluator: nb201_table` (or another) to the stage, or use child_score: train")
        state = ctx.state.get(ALPHA_STATE_KEY)
        alpha = ArchAlpha.from_state(ctx.base_space, state) if state else None
        nodes = self.trees(ctx, alpha)
        rng = random.Random(ctx.stage_seed("tnas"))
        d_a = min(cfg.d_a, 2) if ctx.smoke else cfg.d_a  # smoke: ≤ 4 children per step
        ctx.log.event("tnas_tree", stage=ctx.stage_key, trees=[optree.list_form(n) for n in nodes])
        use_alpha = train and (cfg.mix == "alpha" or (cfg.mix == "auto" and alpha is not None))
        if use_alpha and alpha is None:
            raise NascoreError("tnas with mix: alpha needs α from a warm-up stage", hint="add a tnas_warmup train stage or use mix: sum")
        if use_alpha:
            assert alpha is not None
            alpha = alpha.to(ctx.device)
        dsteps = ssteps = 0
        ev_batches = cfg.eval_batches
        if train:
            spe = max(ctx.data.num_batches("train"), 1)
            dsteps = cfg.decision_steps or cfg.decision_epochs * spe
            ssteps = cfg.stabilize_steps if cfg.stabilize_steps is not None else cfg.stabilize_epochs * spe
            if ctx.smoke:
                dsteps, ssteps, ev_batches = min(dsteps, 1), min(ssteps, 1), 1
            if cfg.metric == "train_loss":
                dsteps = max(dsteps, 1)

        def arch_of(ns: list[optree.Node]) -> Architecture:
            return Architecture([n if optree.is_leaf(n) else frozenset(optree.leaves(n)) for n in ns])

        def alpha_values() -> torch.Tensor | None:
            return alpha.alpha.detach().clone() if use_alpha and alpha is not None else None

        def set_alpha(v: torch.Tensor | None) -> None:
            if v is not None and alpha is not None:
                with torch.no_grad():
                    alpha.alpha.copy_(v)

        def train_and_score(child: Architecture, epoch: int) -> tuple[float, float]:
            """Fine-tune the loaded weights on ``child``; return (score, tie-break)."""
            stats = {"loss": math.nan}
            if dsteps > 0:
                self.trainings += 1
                stats = train_steps(
                    ctx, child, dsteps, lr=cfg.lr, lr_min=cfg.lr_min, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay, schedule=cfg.schedule, epoch=epoch,
                    alpha=alpha if use_alpha else None, train_alpha=cfg.train_alpha)
            if cfg.metric == "train_loss":
                return -stats["loss"], 0.0
            acc, loss = path_accuracy(ctx, child, split=cfg.split, batches=ev_batches, bn=cfg.bn,
                                      alpha=alpha if use_alpha else None)
            return acc, -loss

        trace: list[dict[str, Any]] = []
        step_index = 0
        level = 0
        last_children: list[tuple[Architecture, float]] = []
        final_score: float | None = None
        while not all(optree.is_leaf(n) for n in nodes):
            level += 1
            undecided = [i for i, n in enumerate(nodes) if not optree.is_leaf(n)]
            if cfg.order == "random":
                rng.shuffle(undecided)
            for start in range(0, len(undecided), d_a):
                step_index += 1
                edges = undecided[start : start + d_a]
                options = [optree.children(nodes[i]) for i in edges]
                kids: list[tuple[list[optree.Node], Architecture]] = []
                for combo in itertools.product(*options):
                    ns = list(nodes)
                    for i, n in zip(edges, combo):
                        ns[i] = n
                    child = arch_of(ns)
                    if ctx.space.is_valid(child) and self._feasible_subspace(ctx, child):
                        kids.append((ns, child))
                if not kids:
                    raise NascoreError(f"tnas: no valid child at level {level} (edges {edges})",
                                       hint="check the operation tree and the resource constraint")
                record: dict[str, Any] = {"level": level, "step": step_index,
                                          "edges": [ctx.space.decisions[i].name for i in edges], "children": []}
                epoch0 = 1000 * step_index
                if len(kids) == 1:
                    nodes = kids[0][0]
                    record["winner"] = ctx.space.format(kids[0][1])
                    trace.append(record)
                    continue
                parent_snap = ctx.supernet.snapshot() if train else None
                uniforms = self._uniforms(ctx, rng)
                parent_alpha = alpha_values()
                scores: list[tuple[float, float]] = []
                kept: dict[int, tuple[dict, torch.Tensor | None]] = {}
                bar = ctx.progress(total=len(kids), desc=f"tnas level {level} step {step_index}")
                for j, (_, child) in enumerate(kids):
                    if train:
                        assert parent_snap is not None
                        ctx.supernet.load_snapshot(parent_snap)
                        set_alpha(parent_alpha)
                        s = train_and_score(child, epoch0)
                    elif getattr(evaluator, "scores_subspaces", False):
                        s = (objective(evaluator, self._score(ctx, evaluator, [child])[0]), 0.0)
                    else:
                        s = (self._members_score(ctx, evaluator, child, rng, uniforms)[0], 0.0)
                    self.children_evaluated += 1
                    scores.append(s)
                    ctx.log.metric("tnas_child", stage=ctx.stage_key, level=level, step=step_index,
                                   arch=ctx.space.format(child), score=s[0], phase="first")
                    record["children"].append([ctx.space.format(child), s[0]])
                    if train:
                        ranked_now = sorted(range(len(scores)), key=lambda q: (-scores[q][0], -scores[q][1], q))
                        if j in ranked_now[: cfg.top_k]:
                            kept[j] = (ctx.supernet.snapshot(), alpha_values())
                        for q in list(kept):
                            if q not in ranked_now[: cfg.top_k]:
                                del kept[q]
                    bar.update(1)
                bar.close()
                order = sorted(range(len(kids)), key=lambda q: (-scores[q][0], -scores[q][1], q))
                top = order[: cfg.top_k]
                best = top[0]
                reexam: list[dict[str, float]] = []
                if len(top) > 1 and cfg.repeats > 0:
                    wins: Counter = Counter()
                    confirmed = False
                    for r in range(1, cfg.repeats + 1):
                        again: dict[int, tuple[float, float]] = {}
                        uniforms = self._uniforms(ctx, rng)
                        for q in top:
                            child = kids[q][1]
                            if train:
                                snap, av = kept[q]
                                ctx.supernet.load_snapshot(snap)
                                set_alpha(av)
                                again[q] = train_and_score(child, epoch0 + r)
                                kept[q] = (ctx.supernet.snapshot(), alpha_values())
                            elif getattr(evaluator, "scores_subspaces", False):
                                again[q] = (objective(evaluator, self._score(ctx, evaluator, [child])[0]), 0.0)
                            else:
                                again[q] = (self._members_score(ctx, evaluator, child, rng, uniforms)[0], 0.0)
                            self.reexaminations += 1
                            ctx.log.metric("tnas_child", stage=ctx.stage_key, level=level, step=step_index,
                                           arch=ctx.space.format(child), score=again[q][0], phase=f"reexam{r}")
                        winner = min(top, key=lambda q: (-again[q][0], -again[q][1], top.index(q)))
                        wins[winner] += 1
                        reexam.append({ctx.space.format(kids[q][1]): again[q][0] for q in top})
                        if winner == top[0]:
                            confirmed = True
                            break
                    if not confirmed:
                        best = max(top[1:], key=lambda q: (wins[q], -top.index(q)))
                nodes = kids[best][0]
                final_score = scores[best][0]
                if train:
                    snap, av = kept[best]
                    ctx.supernet.load_snapshot(snap)
                    set_alpha(av)
                last_children = [(kids[q][1], scores[q][0]) for q in order]
                record.update(winner=ctx.space.format(kids[best][1]), reexam=reexam)
                trace.append(record)
                ctx.log.event("tnas_step", stage=ctx.stage_key, level=level, step=step_index,
                              winner=record["winner"], children=len(kids))
            if train and ssteps > 0 and not all(optree.is_leaf(n) for n in nodes):
                self.trainings += 1
                train_steps(ctx, arch_of(nodes), ssteps, lr=cfg.lr, lr_min=cfg.lr_min, momentum=cfg.momentum,
                            weight_decay=cfg.weight_decay, schedule=cfg.schedule, epoch=1000 * step_index + 500,
                            alpha=alpha if use_alpha else None, train_alpha=cfg.train_alpha)

        final = arch_of(nodes)
        if train:
            ctx.supernet.set_active(final)
            if alpha is not None and use_alpha:
                ctx.state[ALPHA_STATE_KEY] = alpha.to_state()
        cands = self._candidates(ctx, evaluator, final, final_score, last_children, train, level)
        info = {
            "children_evaluated": self.children_evaluated,
            "reexaminations": self.reexaminations,
            "trainings": self.trainings,
            "arch_queries": len(self.member_cache),
            "member_lookups": self.member_lookups,
            "levels": level,
            "steps": step_index,
            "space_size": ctx.space.size(),
        }
        ctx.state.setdefault("tnas", {})[ctx.stage_key] = {**info, "trace": trace}
        ctx.log.event("tnas_done", stage=ctx.stage_key, arch=ctx.space.format(final), **info)
        return SearchResult(candidates=cands, info=info)

    def _candidates(
        self, ctx: Any, evaluator: Any, final: Architecture, final_score: float | None,
        last_children: list[tuple[Architecture, float]], train: bool, level: int,
    ) -> list[Candidate]:
        """The chosen architecture first, then its single-op siblings of the last step by score.

        The choice is made before this is called; an evaluator with ``report_metrics`` (the NB201
        table) then adds its report columns (e.g. the test accuracy) to the returned candidates'
        metrics, for results.json only: scores and order still come from the search metric.
        """
        singles = [final] + [a for a, _ in last_children
                             if a != final and all(isinstance(o, str) for o in a.ops)]
        first_pass = dict(last_children)
        metrics: list[dict[str, float]] = [{} for _ in singles]
        report: list[dict[str, float]] = [{} for _ in singles]
        if evaluator is not None:
            metrics = self._score(ctx, evaluator, singles)
            if not train and not getattr(evaluator, "scores_subspaces", False):
                for a, m in zip(singles, metrics):
                    self.member_cache.setdefault(a, objective(evaluator, m))
            if callable(getattr(evaluator, "report_metrics", None)):
                report = evaluator.report_metrics(singles, ctx)
        out = []
        for k, (a, m, extra) in enumerate(zip(singles, metrics, report)):
            if train or evaluator is None:
                score = final_score if (k == 0 and final_score is not None) else first_pass.get(a, math.nan)
                m = {**m, "tnas_" + self.cfg.metric: score}
            else:
                score = objective(evaluator, m)
            m = {**extra, **m}
            c = ctx.candidate(a, float(score), m, origin=f"tnas:level{level}" + ("" if k == 0 else ":sibling"))
            out.append(c)
            ctx.log.metric("candidate", stage=ctx.stage_key, arch=c.arch_str, score=c.score, macs=c.macs,
                           params=c.params, origin=c.origin)
        return out[:1] + sorted(out[1:], key=lambda c: (-c.score if not math.isnan(c.score) else math.inf, c.arch_str))
