"""The ``prioritized_path`` distiller: Cream's path distillation inside any supernet trainer.

Added to a train stage of another trainer (``single_path``, ``spos`` …), it keeps its own board
and meta matching network and, on every ``loss()`` call, returns the ρ-weighted label + KD loss
against the matched board path (``replaces_ce``), then offers the student path to its board
(scored on the pre-update logits, as the code does). Meta updates run inside ``loss()`` after the
trainer's forward, so the code's extra real student step (``compat: cream-code``) is left out
here; under ``compat: cream-code`` the gradient the training loss gives the meta-network (ρ is not
detached in the code) is applied at the next call. Its state is checkpointed with the trainer's
(``state_dict``/``load_state_dict``) and its board is published in ``ctx.state["cream_board"]``
for the ``board`` selector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from nascore.arch import Architecture
from nascore.errors import NascoreError

from nascore_cream.distill import PathDistillOptions, PrioritizedPaths

if TYPE_CHECKING:
    from nascore.roles import Context


class PrioritizedPathConfig(PathDistillOptions):
    """Options of the ``prioritized_path`` distiller."""


class PrioritizedPathDistiller:
    """KD from the matched prioritized path, weighted by the matching score."""

    replaces_ce = True

    def __init__(self, cfg: PrioritizedPathConfig, ctx: "Context") -> None:
        self.cfg = cfg
        self.engine = PrioritizedPaths(cfg, ctx, owner="distiller prioritized_path")
        self._checked = False

    @property
    def board(self):  # noqa: ANN201 - the engine's PrioritizedBoard
        return self.engine.board

    def loss(
        self, student_logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, arch: Architecture,
        ctx: "Context", trainer: Any,
    ) -> torch.Tensor:
        if trainer is None or getattr(trainer, "optimizer", None) is None:
            raise NascoreError(
                "distiller prioritized_path distils between paths of a supernet being trained; it has no board "
                "outside a train stage",
                hint="use it in a train stage (trainer single_path, spos …), not in retrain",
            )
        engine = self.engine
        if not self._checked:
            engine.check(ctx)
            self._checked = True
        if engine.code:
            engine.step_meta_from_loss(ctx)
        cfg = getattr(trainer, "cfg", None)
        ls = float(getattr(cfg, "label_smoothing", 0.0))
        epoch, step = int(trainer.epoch), int(trainer.step)
        net = ctx.supernet
        if engine.meta_due(epoch, step):
            group = trainer.optimizer.param_groups[0]
            lr = float(group["lr"])
            scale = lr / float(group.get("initial_lr", lr) or 1.0)
            engine.meta_update(net, x, y, arch, ctx, step=step, lr=lr, lr_scale=scale, label_smoothing=ls)
        return engine.loss(net, student_logits, x, y, arch, ctx, epoch=epoch, step=step, label_smoothing=ls)

    # -- checkpointed with the trainer (nascore.trainer.SupernetTrainer.state_dict) ------------
    def state_dict(self) -> dict[str, Any]:
        return self.engine.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state)
