"""The ``ensemble_accuracy`` evaluator: ensemble top-1 plus the members' diversity.

Scores an ensemble path of the supernet like the core ``accuracy`` evaluator (BN statistics
recalibrated for the path on a few training batches, then top-1 of the mean logits on the
arch-validation split), and from the same forward passes also returns what diversity shrinking
needs: the members' mean and best top-1, their top-1 *disagreement* (mean over member pairs of the
share of inputs where their predictions differ) and ``kl`` (mean over member pairs of the symmetric
KL divergence between their softmax outputs, halved). Results are cached per architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture
from nascore.evaluate import bn_state, load_bn_state, recalibrate_bn
from nascore_neas.ensemble import require_ensemble


class EnsembleAccuracyConfig(BaseModel):
    """Options of the ``ensemble_accuracy`` evaluator."""

    model_config = ConfigDict(extra="forbid")
    bn_mode: Literal["recalibrate", "batch", "stored"] = Field(
        "recalibrate", description="recalibrate BN per ensemble, use batch statistics, or stored running stats")
    recal_batches: int = Field(10, gt=0, description="training batches for BN recalibration")
    bn_momentum: float | None = Field(None, gt=0, le=1, description="null: cumulative average; 0.1: EMA")
    eval_batches: int | None = Field(None, gt=0, description="archval batches to score on (null: all)")
    split: Literal["archval", "val", "train"] = Field("archval", description="which split ensembles are scored on")


@torch.no_grad()
def member_stats(member_logits: Sequence[torch.Tensor], y: torch.Tensor) -> dict[str, float]:
    """Sums over the batch: ensemble/member correct counts, pairwise disagreement and KL."""
    ens = torch.stack(list(member_logits)).mean(0)
    correct = [(m.argmax(1) == y).float().sum() for m in member_logits]
    logp = [F.log_softmax(m, 1) for m in member_logits]
    dis = kl = 0.0
    pairs = 0
    for i in range(len(logp)):
        for j in range(i + 1, len(logp)):
            dis += float((member_logits[i].argmax(1) != member_logits[j].argmax(1)).float().sum())
            pi, pj = logp[i].exp(), logp[j].exp()
            kl += float(0.5 * ((pi * (logp[i] - logp[j])).sum(1) + (pj * (logp[j] - logp[i])).sum(1)).sum())
            pairs += 1
    out = {
        "correct": float((ens.argmax(1) == y).float().sum()),
        "loss": float(F.cross_entropy(ens, y, reduction="sum")),
        "member_correct": [float(c) for c in correct],
        "disagreement": dis / max(pairs, 1),
        "kl": kl / max(pairs, 1),
    }
    return out


class EnsembleAccuracy:
    """Ensemble top-1 (``acc``) of each ensemble path, with member accuracy and diversity."""

    metric = "acc"
    higher_is_better = True

    def __init__(self, cfg: EnsembleAccuracyConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self.cache: dict[Architecture, dict[str, float]] = {}
        self.evaluations = 0

    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        require_ensemble(ctx.space, "evaluator 'ensemble_accuracy'")
        net = ctx.supernet
        saved = bn_state(net)
        was = net.training
        try:
            out = []
            for arch in archs:
                if arch not in self.cache:
                    self.cache[arch] = self._score_one(arch, ctx)
                out.append(self.cache[arch])
        finally:
            load_bn_state(net, saved)
            net.train(was)
        return out

    def _score_one(self, arch: Architecture, ctx: Any) -> dict[str, float]:
        net = ctx.supernet
        net.set_active(arch)
        cfg = self.cfg
        recal, ev = cfg.recal_batches, cfg.eval_batches
        if ctx.smoke:
            recal, ev = min(recal, 2), min(ev or 2, 2)
        if cfg.bn_mode == "recalibrate":
            recalibrate_bn(net, ctx.data.batches("train", epoch=0, limit=recal, device=ctx.device), cfg.bn_momentum)
        net.train(cfg.bn_mode == "batch")
        n = 0
        tot: dict[str, Any] = {"correct": 0.0, "loss": 0.0, "disagreement": 0.0, "kl": 0.0, "member_correct": None}
        with torch.no_grad():
            for x, y in ctx.data.batches(cfg.split, shuffle=False, batch_size=ctx.data.eval_batch_size,
                                         drop_last=False, limit=ev, device=ctx.device):
                stats = member_stats(net.forward_members(x), y)
                n += int(y.numel())
                for k in ("correct", "loss", "disagreement", "kl"):
                    tot[k] += stats[k]
                mc = stats["member_correct"]
                tot["member_correct"] = mc if tot["member_correct"] is None else [a + b for a, b in zip(tot["member_correct"], mc)]
        self.evaluations += 1
        if n == 0:
            nan = float("nan")
            return {"acc": nan, "loss": nan, "member_acc": nan, "best_member_acc": nan, "disagreement": nan, "kl": nan}
        members = [c / n for c in tot["member_correct"]]
        return {
            "acc": tot["correct"] / n,
            "loss": tot["loss"] / n,
            "member_acc": sum(members) / len(members),
            "best_member_acc": max(members),
            "disagreement": tot["disagreement"] / n,
            "kl": tot["kl"] / n,
        }
