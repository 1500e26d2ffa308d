"""The ``accuracy`` evaluator: top-1 of a supernet path after BN recalibration.

Shared by SPOS, Cream, ABS, NEAS and every method that scores candidates with the supernet, so it
lives in the core. Scores on the ``archval`` split (never trained on); caches by architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture
from nascore.evaluate import accuracy, bn_state, load_bn_state, recalibrate_bn
from nascore.hookspecs import hookimpl


class AccuracyConfig(BaseModel):
    """Options of the ``accuracy`` evaluator."""

    model_config = ConfigDict(extra="forbid")
    bn_mode: Literal["recalibrate", "batch", "stored"] = Field(
        "recalibrate", description="recalibrate BN per path, use batch statistics, or stored running stats")
    recal_batches: int = Field(20, gt=0, description="training batches for BN recalibration")
    bn_momentum: float | None = Field(None, gt=0, le=1, description="null: cumulative average; 0.1: SPOS code's EMA")
    eval_batches: int | None = Field(None, gt=0, description="archval batches to score on (null: all)")
    split: Literal["archval", "val", "train"] = Field("archval", description="which split candidates are scored on")


class AccuracyEvaluator:
    """Top-1 accuracy (and loss) of each path on the arch-validation split.

    Subclasses that score a path differently from the same forward passes (NEAS's ensemble
    accuracy and diversity) override :meth:`measure` only; caching, BN recalibration and restore,
    the splits (whole, never sharded: candidates are split across ranks instead) stay here.
    """

    metric = "acc"
    higher_is_better = True

    def __init__(self, cfg: AccuracyConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self.cache: dict[Architecture, dict[str, float]] = {}
        self.evaluations = 0

    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        out = []
        net = ctx.supernet
        saved = bn_state(net)
        try:
            for arch in archs:
                if arch not in self.cache:
                    self.cache[arch] = self._score_one(arch, ctx)
                out.append(self.cache[arch])
        finally:
            load_bn_state(net, saved)
        return out

    def _score_one(self, arch: Architecture, ctx: Any) -> dict[str, float]:
        net = ctx.supernet
        net.set_active(arch)
        cfg = self.cfg
        recal, ev = cfg.recal_batches, cfg.eval_batches
        if ctx.smoke:
            recal, ev = min(recal, 2), min(ev or 2, 2)
        bn = "stored"
        if cfg.bn_mode == "recalibrate":
            recalibrate_bn(net, ctx.data.batches("train", epoch=0, limit=recal, device=ctx.device, shard=False), cfg.bn_momentum)
        elif cfg.bn_mode == "batch":
            bn = "batch"
        out = self.measure(net, ctx.data.batches(cfg.split, shuffle=False, batch_size=ctx.data.eval_batch_size,
                                                 drop_last=False, limit=ev, device=ctx.device, shard=False), bn)
        self.evaluations += 1
        return out

    def measure(self, net: Any, batches: Any, bn: str) -> dict[str, float]:
        """The metrics of the active path over ``batches`` (``bn``: "stored" or "batch" statistics)."""
        acc, loss = accuracy(net, batches, bn=bn)
        return {"acc": acc, "loss": loss}


@hookimpl
def register_evaluators(register: Any) -> None:
    register("accuracy", AccuracyEvaluator, config=AccuracyConfig,
             summary="top-1 on the arch-validation split after per-path BN recalibration")
