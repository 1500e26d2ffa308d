"""The ``block_distill`` evaluator: every candidate of every block scored against the teacher.

A block candidate (one option per decision of the block) is scored by how well it reproduces the
teacher's output of the block from the teacher's input feature, on the ``archval`` split. As in the
official code the ranking loss is the normalised L1, ``mean|s − t| / std(t)`` (``cl_loss``), while
training used MSE. BatchNorm statistics are recomputed for each candidate from a few training
batches of teacher features (``recalibrate``; the code runs BN on batch statistics, ``batch``).
Scores are cached per (block, candidate), so an architecture costs one lookup per block once its
blocks have been seen; ``block_table`` scores whole blocks exhaustively for the ``dna`` selector.
An architecture's score is the sum (or product) of its blocks' losses: lower is better.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field

from nascore.arch import Architecture
from nascore.errors import NascoreError
from nascore.evaluate import bn_state, load_bn_state

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
                total, count = 0.0, 0
                for feats in self._eval:
                    out = blocks.run(b, feats[b])
                    n = int(out.shape[0])
                    total += float(block_loss(out, feats[b + 1], self.cfg.loss)) * n
                    count += n
            finally:
                for m, w in zip(mods, was):
                    m.train(w)
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
                row = {}
                for k in ks:
                    row[k] = self.block_score(ctx, b, k)
                    bar.update(1)
                table.append(row)
            bar.close()
        finally:
            load_bn_state(net, saved)
            if prev is not None:
                net.set_active(prev)
        return table

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
