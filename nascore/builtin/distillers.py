"""Built-in distillers (registered through the same hooks as any plugin).

``kd`` — Hinton et al.'s logit distillation from an external teacher: the KL divergence between the
teacher's and the student's softened class distributions at temperature ``T``, scaled by ``T²`` so
its gradients keep their size when ``T`` changes. The teacher is any model
:func:`nascore.methods.teacher.load_teacher` can load (another run's retrained child, an export folder,
this run's supernet, a torchvision model with a local weights file). Other distillers wrap it:
PWKD swaps its ``teacher`` at each stage.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from nascore.errors import NascoreError
from nascore.hookspecs import hookimpl


class KDConfig(BaseModel):
    """Options of the ``kd`` distiller."""

    model_config = ConfigDict(extra="forbid")
    teacher: str | None = Field(
        None, description="supernet | supernet:<run_dir> | run:<run_dir>[#k] | export:<folder> | torchvision:<name> "
        "(null only when a wrapper such as pwkd supplies the teacher)")
    weights: str | None = Field(None, description="local weights file of a torchvision teacher (never downloaded)")
    teacher_arch: str | None = Field(None, description="path of a supernet teacher (default: the largest by MACs)")
    temperature: float = Field(4.0, gt=0, description="softmax temperature T (the loss is scaled by T²)")
    alpha: float | None = Field(
        None, ge=0, le=1, description="null: loss = CE + weight·KD; a number: the distiller replaces CE with "
        "(1-alpha)·CE + alpha·KD")
    weight: float = Field(1.0, ge=0, description="multiplier of the KD term")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch (Hinton et al., 2015)."""
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * (t * t)


class KDDistiller:
    """Logit KD from a frozen teacher (``self.teacher``, a :class:`nascore.methods.teacher.Teacher`)."""

    def __init__(self, cfg: KDConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self.replaces_ce = cfg.alpha is not None
        self.teacher: Any = None
        if cfg.teacher is not None:
            from nascore.methods.teacher import load_teacher

            self.teacher = load_teacher(cfg.teacher, ctx, weights=cfg.weights, arch=cfg.teacher_arch)

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            raise NascoreError("distiller kd has no teacher", hint="set its `teacher` option (e.g. run:runs/teacher#0)")
        return self.teacher.logits(x)

    def combine(self, student_logits: torch.Tensor, y: torch.Tensor, kd: torch.Tensor) -> torch.Tensor:
        """The KD term as the runner should use it (added to CE, or mixed with CE when ``alpha``)."""
        kd = self.cfg.weight * kd
        if self.cfg.alpha is None:
            return kd
        return (1.0 - self.cfg.alpha) * F.cross_entropy(student_logits, y) + self.cfg.alpha * kd

    def loss(self, student_logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, arch: Any, ctx: Any,
             trainer: Any) -> torch.Tensor:
        t = self.teacher_logits(x)
        if t.shape != student_logits.shape:
            raise NascoreError(
                f"distiller kd: teacher logits {tuple(t.shape)} do not match the student's {tuple(student_logits.shape)}",
                hint=f"the teacher ({self.teacher.source}) must be trained on the same classes as the student")
        return self.combine(student_logits, y, kd_loss(student_logits, t, self.cfg.temperature))


@hookimpl
def register_distillers(register: Any) -> None:
    register("kd", KDDistiller, config=KDConfig,
             summary="logit KD (Hinton) from an external teacher: T²·KL at temperature T")
