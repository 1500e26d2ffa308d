"""``tnas_warmup``: the mixed-op ("joint") supernet warm-up that TNAS's α-grouped operation tree needs.

Official code (``search-cell-tnas.py``, ``warmup_mode: joint``): every edge runs all its ops mixed
by softmax(α); weights *and* α are trained together by one SGD optimizer on the training split
(α without weight decay), 40 epochs, lr 0.025 cosine. Afterwards α orders the ops of every edge
and :func:`nascore_tnas.optree.alpha_tree` groups them. α is checkpointed with the trainer and
written to ``ctx.state["alpha"]`` for the following ``tnas`` search stage.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from nascore.arch import Architecture
from nascore.methods.mixed import ALPHA_STATE_KEY, ArchAlpha, subspace_arch
from nascore.trainer import SupernetTrainer, TrainerConfig


class TNASWarmupConfig(TrainerConfig):
    """Options of ``tnas_warmup`` (defaults: TNAS code's warm-up, except epochs)."""

    epochs: int = Field(5, gt=0, description="warm-up epochs (TNAS code: 40)")
    lr: float = Field(0.025, gt=0, description="SGD lr for weights and α (cosine)")
    weight_decay: float = Field(5e-4, ge=0, description="weight decay of the weights (α: none)")
    alpha_init_std: float = Field(1e-3, ge=0, description="α ~ N(0, std²) at the start (code: 1e-3)")
    train_alpha: bool = Field(True, description="train α jointly with the weights (code: true); false = plain sum of ops")


class TNASWarmup(SupernetTrainer):
    """Trains the whole mixed-op supernet (every allowed op of every edge, softmax(α)-weighted)."""

    Config = TNASWarmupConfig

    def __init__(self, cfg: TNASWarmupConfig, ctx: Any = None) -> None:
        super().__init__(cfg, ctx)
        self.cfg: TNASWarmupConfig = cfg
        self.alpha: ArchAlpha | None = None
        self.joint: Architecture | None = None

    def setup(self, ctx: Any) -> None:
        g = torch.Generator().manual_seed(ctx.stage_seed("alpha"))
        self.alpha = ArchAlpha(ctx.base_space, init_std=self.cfg.alpha_init_std, generator=g).to(ctx.device)
        self.joint = subspace_arch(ctx.space)

    def sample_arch(self, ctx: Any) -> Architecture:
        assert self.joint is not None
        return self.joint

    def compute_loss(self, ctx: Any, x: torch.Tensor, y: torch.Tensor, arch: Architecture) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.alpha is not None
        weights = self.alpha.mix_weights(arch) if self.cfg.train_alpha else None
        ctx.supernet.set_active(arch, weights=weights)
        return super().compute_loss(ctx, x, y, arch)

    def parameters(self, ctx: Any) -> Any:
        assert self.alpha is not None
        groups: list[dict[str, Any]] = [{"params": list(ctx.supernet.parameters())}]
        if self.cfg.train_alpha:
            groups.append({"params": [self.alpha.alpha], "weight_decay": 0.0})
        return groups

    def extra_state(self) -> dict[str, Any]:
        assert self.alpha is not None
        return {"alpha": self.alpha.alpha.detach().clone()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.alpha is not None and "alpha" in state:
            with torch.no_grad():
                self.alpha.alpha.copy_(state["alpha"].to(self.alpha.alpha.device))

    def fit(self, ctx: Any) -> None:
        super().fit(ctx)
        assert self.alpha is not None and self.joint is not None
        ctx.supernet.set_active(self.joint)  # drop the graph reference to α
        ctx.state[ALPHA_STATE_KEY] = self.alpha.to_state()
        ctx.log.event("alpha", stage=ctx.stage_key, trainer="tnas_warmup", values=self.alpha.to_state()["values"])
