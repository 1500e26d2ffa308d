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
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from nascore.arch import Architecture
from nascore.builtin.accuracy import AccuracyConfig, AccuracyEvaluator
from nascore_neas.ensemble import require_ensemble


class EnsembleAccuracyConfig(AccuracyConfig):
    """Options of the ``ensemble_accuracy`` evaluator (the core ``accuracy`` options; fewer
    recalibration batches by default, as an ensemble path runs K members per batch)."""

    recal_batches: int = Field(10, gt=0, description="training batches for BN recalibration")


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


class EnsembleAccuracy(AccuracyEvaluator):
    """Ensemble top-1 (``acc``) of each ensemble path, with member accuracy and diversity.

    Everything but the measurement (cache, BN recalibration and restore, whole splits) is the core
    ``accuracy`` evaluator's.
    """

    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        require_ensemble(ctx.space, "evaluator 'ensemble_accuracy'")
        return super().score(archs, ctx)

    @torch.no_grad()
    def measure(self, net: Any, batches: Any, bn: str) -> dict[str, float]:
        was = net.training
        net.train(bn == "batch")
        n = 0
        tot: dict[str, Any] = {"correct": 0.0, "loss": 0.0, "disagreement": 0.0, "kl": 0.0, "member_correct": None}
        try:
            for x, y in batches:
                stats = member_stats(net.forward_members(x), y)
                n += int(y.numel())
                for k in ("correct", "loss", "disagreement", "kl"):
                    tot[k] += stats[k]
                mc = stats["member_correct"]
                tot["member_correct"] = mc if tot["member_correct"] is None else [a + b for a, b in zip(tot["member_correct"], mc)]
        finally:
            net.train(was)
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
