"""The ``block_distill`` evaluator: every candidate of every block scored against the teacher.

A block candidate (one option per decision of the block) is scored by how well it reproduces the
teacher's output of the block from the teacher's input feature, on the ``archval`` split. As in the
official code the ranking loss is the normalised L1, ``mean|s − t| / std(t)`` (``cl_loss``), while
training used MSE. BatchNorm statistics are recomputed for each candidate from a few training
batches of teacher features (``recalibrate``; the code runs BN on batch statistics, ``batch``).
Scores are cached per (block, candidate), so an architecture costs one lookup per block once its
blocks have been seen; ``block_table`` scores whole blocks exhaustively for the ``dna`` selector.
An architecture's score is the sum (or product) of its blocks' losses: lower is better.

**Prefix sharing** (``share_prefixes``, on by default; used by ``block_table``). Inside a block,
a layer's recalibrated BN statistics and its outputs (train mode on the recalibration batches,
eval mode on the evaluation batches) depend only on its input, i.e. on the choices of that layer
and of the layers before it: in train mode BN normalises with the batch's own statistics, and the
recalibration and evaluation batches are fixed. So ``block_table`` walks each block's candidate
tree depth first (:func:`block_steps` cuts the block's modules into *steps*: a module holding a
new decision's choice layer plus the fixed modules after it; fixed modules before the first one
form a root step) and computes each prefix once — 6 + 36 + 216 + 1,296 layer passes for a 4-layer
cell of 6 ops instead of 4 × 1,296 — holding only the current path's activations. Every BN layer
sees the same inputs in the same order as in the per-candidate path and every op runs on the same
tensors, so the losses are identical (the tests compare the two). A path whose activations would
exceed ``prefix_budget_mb`` runs its remaining layers per candidate; a block whose structure the
walk cannot prove (a decision whose choice layer is not inside the block's modules, a width
decision, a BN shared by two steps, active dropout, a module modifying its input in place) is
scored per candidate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs
import torch
from pydantic import Field
from torch import nn

from nascore.arch import Architecture, option_members
from nascore.errors import NascoreError
from nascore.evaluate import bn_state, load_bn_state
from nascore.space import ChoiceLayer

from nascore_dna.blocks import Blocks, check_blocks, student_blocks
from nascore_dna.teacher import TeacherBlocks, TeacherOptions, resolve
from nascore_dna.trainer import block_loss

BlockKey = tuple  # the options of one block's decisions, in decision order


class BlockDistillConfig(TeacherOptions):
    """Options of the ``block_distill`` evaluator."""

    loss: Literal["l1norm", "mse"] = Field("l1norm", description="ranking loss: the code's normalised L1, or MSE")
    combine: Literal["sum", "product"] = Field("sum", description="an architecture's score from its block losses")
    bn_mode: Literal["recalibrate", "batch", "stored"] = Field(
        "recalibrate", description="per-candidate BN statistics recomputed on teacher features, batch statistics, or stored")
    recal_batches: int = Field(4, gt=0, description="training batches for BN recalibration")
    eval_batches: int = Field(4, gt=0, description="archval batches each candidate is scored on")
    max_block_candidates: int = Field(20_000, gt=0, description="refuse exhaustive scoring of bigger blocks (use evolution)")
    share_prefixes: bool = Field(True, description="block_table computes each layer prefix of a block once (exact); "
                                 "off: every candidate runs its whole block")
    prefix_budget_mb: float = Field(4096.0, gt=0, description="activations the prefix walk may hold; deeper layers "
                                    "of a path beyond it run per candidate")


BatchNorm = nn.modules.batchnorm._BatchNorm


@attrs.define(eq=False)
class Step:
    """Consecutive modules of a block: the first holds the choice layers of ``decisions`` (new at this
    step; none for the root step of fixed modules), the rest are fixed (hold no new decision)."""

    units: list[nn.Module]
    decisions: tuple[int, ...]
    choice_layers: list[ChoiceLayer] = attrs.field(factory=list)
    _active: dict[tuple, tuple[list[nn.Module], list[BatchNorm]]] = attrs.field(factory=dict)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.units:
            x = m(x)
        return x

    def active(self) -> tuple[list[nn.Module], list[BatchNorm]]:
        """The modules the current path runs in this step (inactive candidates left out), and their BNs:
        what the walk switches between train and eval mode and recalibrates (cached per active ops)."""
        key = tuple(layer.active for layer in self.choice_layers)
        got = self._active.get(key)
        if got is None:
            mods: dict[int, nn.Module] = {}

            def visit(m: nn.Module) -> None:
                if id(m) in mods:
                    return
                mods[id(m)] = m
                if isinstance(m, ChoiceLayer):
                    for o in option_members(m.active):
                        visit(m.candidates[o])
                else:
                    for c in m.children():
                        visit(c)

            for unit in self.units:
                visit(unit)
            got = (list(mods.values()), [m for m in mods.values() if isinstance(m, BatchNorm)])
            self._active[key] = got
        return got


def block_steps(net: nn.Module, blocks: Blocks, b: int, bn_mode: str = "recalibrate") -> list[Step] | None:
    """Block ``b``'s modules cut into prefix-walk steps, or ``None`` when the walk could not be exact
    (see module docstring): then the block is scored per candidate."""
    decs = blocks.decisions[b]
    space = getattr(net, "space", None)
    if not callable(getattr(net, "choice_layers", None)) or space is None:
        return None
    from nascore.space import WidthDecision

    if any(isinstance(space.decisions[d], WidthDecision) for d in decs):
        return None
    layers = {d: {id(m) for m in net.choice_layers(d)} for d in decs}
    if any(not ids for ids in layers.values()):
        return None
    steps: list[Step] = []
    seen: set[int] = set()
    for unit in blocks.units[b]:
        inside = {id(m) for m in unit.modules()}
        new = tuple(d for d in decs if d not in seen and layers[d] & inside)
        if new or not steps:
            steps.append(Step([unit], new))
        else:
            steps[-1].units.append(unit)
        seen.update(new)
    if seen != set(decs):
        return None
    owner: dict[int, int] = {}
    for j, step in enumerate(steps):
        mods = {id(m): m for unit in step.units for m in unit.modules()}.values()
        for m in mods:
            if isinstance(m, BatchNorm):
                if owner.setdefault(id(m), j) != j:
                    return None  # one BN in two steps: its statistics would mix prefixes
            if isinstance(m, ChoiceLayer):
                step.choice_layers.append(m)
            if bn_mode != "stored" and isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
                return None  # train-mode dropout: outputs are random draws in scoring order
    return steps


class _InPlaceError(RuntimeError):
    """A module modified a kept activation in place: the walk's results for the block are unusable."""


class BlockDistillEvaluator:
    """Per-block distillation loss of candidates (lower is better); see module docstring."""

    metric = "block_loss"
    higher_is_better = False

    def __init__(self, cfg: BlockDistillConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self.combine = cfg.combine
        self.cache: dict[tuple[int, BlockKey], float] = {}
        self.evaluations = 0
        self._blocks: Blocks | None = None
        self._teacher: TeacherBlocks | None = None
        self._recal: list[list[torch.Tensor]] = []
        self._eval: list[list[torch.Tensor]] = []
        #: prefix walk counters: ``nodes`` (prefix layer passes kept for the children), ``leaves``
        #: (candidates' last steps), ``plain`` (candidates scored per candidate: fallback or budget)
        self.stats = {"nodes": 0, "leaves": 0, "plain": 0}

    # -- setup ------------------------------------------------------------------------------------
    def prepare(self, ctx: Any) -> tuple[Blocks, TeacherBlocks]:
        if self._blocks is None:
            net = ctx.supernet
            self._blocks = student_blocks(net)
            check_blocks(net, self._blocks, ctx.data.input_shape)
            opts = TeacherOptions(teacher=self.cfg.teacher, teacher_weights=self.cfg.teacher_weights,
                                  teacher_cuts=self.cfg.teacher_cuts)
            self._teacher = resolve(ctx, opts, self._blocks)
            # whole batches on every rank (shard=False): all ranks compute the same scores
            recal, ev = self.cfg.recal_batches, self.cfg.eval_batches
            if ctx.smoke:
                recal, ev = 1, 1
            if self.cfg.bn_mode == "recalibrate":
                self._recal = [self._teacher.features(x)
                               for x, _ in ctx.data.batches("train", epoch=0, limit=recal, device=ctx.device, shard=False)]
            self._eval = [self._teacher.features(x)
                          for x, _ in ctx.data.batches("archval", shuffle=False, batch_size=ctx.data.eval_batch_size,
                                                       drop_last=False, limit=ev, device=ctx.device, shard=False)]
        assert self._teacher is not None
        return self._blocks, self._teacher

    def block_keys(self, ctx: Any, b: int) -> list[BlockKey]:
        """Every candidate of block ``b`` in the current (possibly restricted) space."""
        blocks, _ = self.prepare(ctx)
        options = [ctx.space.allowed[d] for d in blocks.decisions[b]]
        n = math.prod(len(o) for o in options)
        if n > self.cfg.max_block_candidates:
            raise NascoreError(
                f"block {b} has {n:,} candidates (> max_block_candidates {self.cfg.max_block_candidates:,})",
                hint="score architectures with the evolution selector on this evaluator instead of exhaustively",
            )
        return [tuple(k) for k in itertools.product(*options)]

    # -- scoring ----------------------------------------------------------------------------------
    def block_score(self, ctx: Any, b: int, key: BlockKey) -> float:
        """The ranking loss of candidate ``key`` of block ``b`` (cached)."""
        if (b, key) not in self.cache:
            self.cache[(b, key)] = self._score_block(ctx, b, key)
        return self.cache[(b, key)]

    def _score_block(self, ctx: Any, b: int, key: BlockKey) -> float:
        blocks, _ = self.prepare(ctx)
        net = ctx.supernet
        base = ctx.space.first()
        ops = list(base.ops)
        for d, o in zip(blocks.decisions[b], key):
            ops[d] = o
        net.set_active(Architecture(ops))
        mods = blocks.units[b]
        bns = blocks.bn_layers(b)
        was = [m.training for m in mods]
        self.evaluations += 1
        with torch.no_grad():
            try:
                if self.cfg.bn_mode == "recalibrate" and bns:
                    moms = [bn.momentum for bn in bns]
                    for bn in bns:
                        bn.reset_running_stats()
                        bn.momentum = None
                    for m in mods:
                        m.train()
                    for feats in self._recal:
                        blocks.run(b, feats[b])
                    for bn, mom in zip(bns, moms):
                        bn.momentum = mom
                for m in mods:
                    m.train(self.cfg.bn_mode == "batch")
                loss = self._mean_loss((blocks.run(b, feats[b]) for feats in self._eval), b)  # streamed
            finally:
                for m, w in zip(mods, was):
                    m.train(w)
        return loss

    def _mean_loss(self, outs: Iterable[torch.Tensor], b: int) -> float:
        """Block ``b``'s ranking loss over the eval batches' outputs, weighted by batch size."""
        total, count = 0.0, 0
        for y, feats in zip(outs, self._eval):
            n = int(y.shape[0])
            total += float(block_loss(y, feats[b + 1], self.cfg.loss)) * n
            count += n
        return total / max(count, 1)

    def block_table(self, ctx: Any) -> list[dict[BlockKey, float]]:
        """Exhaustive per-block scores: ``table[b][candidate] = loss`` (what the dna selector combines)."""
        blocks, _ = self.prepare(ctx)
        net = ctx.supernet
        saved = bn_state(net)
        prev = net.active_arch
        try:
            keys = [self.block_keys(ctx, b) for b in range(len(blocks))]
            bar = ctx.progress(total=sum(len(k) for k in keys), desc="dna block scores")
            table = []
            for b, ks in enumerate(keys):
                todo = [k for k in ks if (b, k) not in self.cache]
                bar.update(len(ks) - len(todo))
                steps = block_steps(net, blocks, b, self.cfg.bn_mode) if self.cfg.share_prefixes else None
                if todo and steps is not None:
                    try:
                        got = self._prefix_scores(ctx, b, steps, todo, bar)
                    except _InPlaceError:
                        got = None
                    if got is not None:
                        self.cache.update(((b, k), v) for k, v in got.items())
                        todo = []
                for k in todo:
                    self.block_score(ctx, b, k)
                    self.stats["plain"] += 1
                    bar.update(1)
                table.append({k: self.cache[(b, k)] for k in ks})
            bar.close()
        finally:
            load_bn_state(net, saved)
            if prev is not None:
                net.set_active(prev)
        return table

    def _prefix_scores(self, ctx: Any, b: int, steps: list[Step], keys: list[BlockKey], bar: Any) -> dict[BlockKey, float]:
        """Scores of ``keys`` (candidates of block ``b``) by the depth-first prefix walk (module docstring)."""
        blocks = self._blocks
        assert blocks is not None
        net = ctx.supernet
        pos = {d: i for i, d in enumerate(blocks.decisions[b])}
        ops = list(ctx.space.first().ops)
        recal = self.cfg.bn_mode == "recalibrate" and bool(blocks.bn_layers(b))
        train_eval = self.cfg.bn_mode == "batch"
        budget = self.cfg.prefix_budget_mb * 2**20
        depth_bytes: dict[int, int] = {}
        held = 0
        out: dict[BlockKey, float] = {}
        mods = blocks.units[b]
        was = [m.training for m in mods]

        def activate(key: BlockKey) -> None:
            for d, o in zip(blocks.decisions[b], key):
                ops[d] = o
            net.set_active(Architecture(ops))

        def run(part: list[Step], r_in: list[torch.Tensor], e_in: list[torch.Tensor],
                keep: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            """``part`` recalibrated on ``r_in`` (its BNs reset, cumulative average) then run on ``e_in``,
            exactly as the per-candidate path does for the whole block."""
            act = [s.active() for s in part]
            path = [m for ms, _ in act for m in ms]
            bns = [bn for _, bs in act for bn in bs]
            r: list[torch.Tensor] = []
            if recal and (keep or bns):
                moms = [bn.momentum for bn in bns]
                for bn in bns:
                    bn.reset_running_stats()
                    bn.momentum = None
                for m in path:
                    m.training = True
                try:
                    for x in r_in:
                        for s in part:
                            x = s(x)
                        r.append(x)
                finally:
                    for bn, mom in zip(bns, moms):
                        bn.momentum = mom
            for m in path:
                m.training = train_eval
            e = []
            for x in e_in:
                for s in part:
                    x = s(x)
                e.append(x)
            return (r if keep else []), e

        def score(key: BlockKey, part: list[Step], r_in: list[torch.Tensor], e_in: list[torch.Tensor],
                  counter: str) -> None:
            activate(key)
            out[key] = self._mean_loss(run(part, r_in, e_in, keep=False)[1], b)
            self.evaluations += 1
            self.stats[counter] += 1
            bar.update(1)

        def versions(ts: list[torch.Tensor]) -> list[int]:
            return [t._version for t in ts]

        def walk(j: int, r_in: list[torch.Tensor], e_in: list[torch.Tensor], group: list[BlockKey]) -> None:
            nonlocal held
            step = steps[j]
            idx = [pos[d] for d in step.decisions]
            subs: dict[tuple, list[BlockKey]] = {}
            for k in group:
                subs.setdefault(tuple(k[i] for i in idx), []).append(k)
            for sub in subs.values():
                if j == len(steps) - 1:
                    score(sub[0], [step], r_in, e_in, "leaves")  # (one key: the prefix fixes every decision)
                    continue
                node = None
                if held + depth_bytes.get(j, 0) <= budget:
                    activate(sub[0])
                    node = run([step], r_in, e_in, keep=True)
                    self.stats["nodes"] += 1
                    size = sum(t.numel() * t.element_size() for t in {t.data_ptr(): t for t in node[0] + node[1]}.values())
                    depth_bytes[j] = max(depth_bytes.get(j, 0), size)
                    if held + size > budget:
                        node = None
                if node is None:  # over budget: the rest of each candidate's path from here, per candidate
                    for k in sub:
                        score(k, steps[j:], r_in, e_in, "plain")
                    continue
                held += size
                vs = versions(node[0] + node[1])
                walk(j + 1, node[0], node[1], sub)
                if versions(node[0] + node[1]) != vs:
                    raise _InPlaceError(f"a module of block {b} modified its input in place")
                held -= size

        r0 = [feats[b] for feats in self._recal] if recal else []
        e0 = [feats[b] for feats in self._eval]
        counts = (self.evaluations, dict(self.stats))
        with torch.no_grad():
            try:
                walk(0, r0, e0, keys)
            except _InPlaceError:
                self.evaluations, self.stats = counts[0], counts[1]  # the block is rescored per candidate
                raise
            finally:
                for m, w in zip(mods, was):
                    m.train(w)
        return out

    def combined(self, losses: Sequence[float]) -> float:
        return float(sum(losses)) if self.combine == "sum" else float(math.prod(losses))

    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        blocks, _ = self.prepare(ctx)
        net = ctx.supernet
        saved = bn_state(net)
        prev = net.active_arch
        out = []
        try:
            for arch in archs:
                losses = [self.block_score(ctx, b, tuple(arch.ops[d] for d in ds)) for b, ds in enumerate(blocks.decisions)]
                row = {"block_loss": self.combined(losses)}
                row.update({f"block{b}_loss": v for b, v in enumerate(losses)})
                out.append(row)
        finally:
            load_bn_state(net, saved)
            if prev is not None:
                net.set_active(prev)
        return out
