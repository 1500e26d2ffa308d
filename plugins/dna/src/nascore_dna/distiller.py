"""The ``block_feature`` distiller: DNA's block-wise feature loss as an extra loss for any trainer.

Added to a trainer's label loss (e.g. ``single_path`` or ``spos``), it pulls every block of the
student towards the teacher's output of that block: ``weight · Σ_b MSE(student_b(in_b), t_b)``
where ``in_b`` is the teacher's feature at the block input (``guide_input``, DNA) or the student's
own previous block output. The student is the network being trained (the supernet path in a train
stage, the child in a ``retrain`` stage, handed over through ``bind_student``); the teacher is the
one named in the options or, by default, the one the ``dna`` trainer used in this run.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from nascore_dna.blocks import Blocks, student_blocks
from nascore_dna.teacher import TeacherOptions, resolve
from nascore_dna.trainer import blockwise_losses


class BlockFeatureConfig(TeacherOptions):
    """Options of the ``block_feature`` distiller."""

    weight: float = Field(1.0, ge=0, description="multiplier of the summed block losses")
    guide_input: bool = Field(True, description="feed each student block the teacher's input feature (DNA)")
    loss: Literal["mse", "l1norm"] = Field("mse", description="per-block feature loss")


class BlockFeatureDistiller:
    """Block-wise feature distillation; added to the label loss (see module docstring)."""

    replaces_ce = False

    def __init__(self, cfg: BlockFeatureConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self.student: torch.nn.Module | None = None
        self._blocks: Blocks | None = None

    def bind_student(self, module: torch.nn.Module) -> None:
        self.student = module
        self._blocks = None

    def loss(self, student_logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, arch: Any, ctx: Any,
             trainer: Any) -> torch.Tensor:
        if self._blocks is None:
            self._blocks = student_blocks(self.student if self.student is not None else ctx.supernet)
        teacher = resolve(ctx, self.cfg, self._blocks)
        losses = blockwise_losses(self._blocks, teacher, x, self.cfg.loss, self.cfg.guide_input)
        return self.cfg.weight * torch.stack(losses).sum()
