"""The ``slimmable`` trainer: every width of a slimmable supernet trained jointly, every step.

PWKD's teacher is "reconstructed" into sub-networks of the same depth and increasing width that
are trained together. Each step forwards the batch through every width (or, with
``paths_per_step``, the widest, the narrowest and random others — the sandwich rule of US-Nets)
and sums their cross-entropy losses, so the shared weights serve all widths; each width updates
only its own BatchNorm layers. Works on any space with few architectures (``slimmable_chain``'s
widths); the paths are ordered by MACs, narrow to wide.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from nascore.arch import Architecture
from nascore.errors import NascoreError
from nascore.trainer import SupernetTrainer, TrainerConfig


class SlimmableConfig(TrainerConfig):
    """Options of the ``slimmable`` trainer."""

    null_inactive_grads: bool = Field(False, description="must stay false: every width is active in each step")
    paths_per_step: int | None = Field(
        None, ge=2, description="null: every width each step; n: widest + narrowest + n-2 random (sandwich rule)")
    max_paths: int = Field(16, gt=0, description="refuse spaces with more architectures than this")

    @model_validator(mode="after")
    def _all_widths_active(self) -> "SlimmableConfig":
        if self.null_inactive_grads:
            raise ValueError("null_inactive_grads must be false: the step trains several widths, "
                             "clearing the others' gradients would freeze their BatchNorm layers")
        return self


def paths_by_cost(ctx: Any, max_paths: int) -> list[Architecture]:
    """The space's architectures ordered by (MACs, params): narrow to wide."""
    n = ctx.space.size()
    if n > max_paths:
        raise NascoreError(
            f"the slimmable trainer trains every path each step; space {ctx.space.name!r} has {n:,}",
            hint="use a width space such as slimmable_chain (or raise max_paths)")
    return sorted(ctx.space.enumerate(), key=lambda a: (*ctx.cost.cost(a), ctx.space.format(a)))


class SlimmableTrainer(SupernetTrainer):
    """Joint multi-width training (see module docstring)."""

    Config = SlimmableConfig

    def __init__(self, cfg: SlimmableConfig, ctx: Any = None) -> None:
        super().__init__(cfg, ctx)
        self.cfg: SlimmableConfig = cfg
        self.paths: list[Architecture] = []
        self.last: dict[str, float] = {}

    def setup(self, ctx: Any) -> None:
        self.paths = paths_by_cost(ctx, self.cfg.max_paths)

    def step_paths(self) -> list[Architecture]:
        n = self.cfg.paths_per_step
        if n is None or n >= len(self.paths):
            return list(self.paths)
        middle = self.paths[1:-1]
        picked = self.rng.sample(middle, n - 2) if n > 2 else []
        return [self.paths[0], *sorted(picked, key=self.paths.index), self.paths[-1]]

    def sample_arch(self, ctx: Any) -> Architecture:
        return self.paths[-1]

    def compute_loss(self, ctx: Any, x: torch.Tensor, y: torch.Tensor, arch: Architecture) -> tuple[torch.Tensor, torch.Tensor]:
        net = ctx.supernet
        total = None
        logits = None
        self.last = {}
        for path in self.step_paths():
            net.set_active(path)
            out = net(x)
            loss = F.cross_entropy(out, y, label_smoothing=self.cfg.label_smoothing)
            if self.distiller is not None:
                kd = self.distiller.loss(out, x, y, path, ctx, self)
                loss = kd if getattr(self.distiller, "replaces_ce", False) else loss + kd
            self.last[f"loss_{ctx.space.format(path)}"] = float(loss.detach())
            total = loss if total is None else total + loss
            logits = out
        net.set_active(arch)
        assert total is not None and logits is not None
        return total, logits

    def after_step(self, ctx: Any, x: torch.Tensor, y: torch.Tensor, arch: Architecture, logits: torch.Tensor,
                   loss: torch.Tensor) -> dict[str, float]:
        return dict(self.last)
