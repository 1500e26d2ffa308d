"""The ``neas`` trainer: K-path supernet training of an ensemble space.

Each step samples one ensemble of the current (possibly shrunk) space — a split point and K member
paths, uniformly — runs it on the batch (shared trunk once, gradient into the trunk ÷ K, K branches
and heads) and minimises the cross-entropy of the *mean* of the K logits, as NEAS's released model
and the paper's K-path training do. Parameters no member uses get no update (the base loop clears
their gradients). ``member_loss`` optionally adds the mean per-member cross-entropy (off by default:
NEAS trains the ensemble output only). The mean pairwise disagreement of the members' top-1
predictions on the batch is logged as ``disagree``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import Field

from nascore.arch import Architecture
from nascore.trainer import SupernetTrainer, TrainerConfig
from nascore_neas.ensemble import require_ensemble

if TYPE_CHECKING:
    from nascore.roles import Context


class NeasTrainerConfig(TrainerConfig):
    """Options of the ``neas`` trainer (the shared loop's options plus the member loss)."""

    member_loss: float = Field(0.0, ge=0, description="weight of the mean per-member CE added to the ensemble CE (NEAS: 0)")


def disagreement(member_logits: list[torch.Tensor]) -> float:
    """Mean over member pairs of the share of inputs on which their top-1 predictions differ."""
    preds = [m.argmax(1) for m in member_logits]
    pairs = [(a, b) for i, a in enumerate(preds) for b in preds[i + 1 :]]
    if not pairs:
        return 0.0
    return float(sum((a != b).float().mean() for a, b in pairs) / len(pairs))


class NeasTrainer(SupernetTrainer):
    """K-path ensemble training (see module docstring)."""

    Config = NeasTrainerConfig

    def __init__(self, cfg: NeasTrainerConfig, ctx: "Context | None" = None) -> None:
        super().__init__(cfg, ctx)
        self.cfg: NeasTrainerConfig = cfg

    def setup(self, ctx: "Context") -> None:
        require_ensemble(ctx.space, "trainer 'neas'")

    def compute_loss(
        self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, arch: Architecture
    ) -> tuple[torch.Tensor, torch.Tensor]:
        members = ctx.supernet.forward_members(x)  # type: ignore[attr-defined]
        logits = torch.stack(members).mean(0)
        ls = self.cfg.label_smoothing
        loss = F.cross_entropy(logits, y, label_smoothing=ls)
        if self.distiller is not None:
            kd = self.distiller.loss(logits, x, y, arch, ctx, self)
            loss = kd if getattr(self.distiller, "replaces_ce", False) else loss + kd
        if self.cfg.member_loss > 0:
            member_ce = torch.stack([F.cross_entropy(m, y, label_smoothing=ls) for m in members]).mean()
            loss = loss + self.cfg.member_loss * member_ce
        return loss, logits

    def after_step(
        self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, arch: Architecture,
        logits: torch.Tensor, loss: torch.Tensor,
    ) -> dict[str, Any]:
        return {"disagree": disagreement(ctx.supernet.member_logits), "split": float(ctx.space.split_of(arch))}  # type: ignore[attr-defined]
