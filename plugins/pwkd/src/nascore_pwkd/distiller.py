"""The ``pwkd`` distiller (Partial to Whole KD) and ``feature_kd``, a parameter-free feature KD.

PWKD splits the student's training into N stages. Stage ``i`` distils from teacher sub-network
``i`` of a slimmable teacher — narrow first, the whole teacher last — and each stage has its own
learning-rate cycle (restarted to the initial rate at the stage boundary and decayed within it).
PWKD changes nothing else: the per-stage loss is any *base* distiller (logit KD by default) whose
``teacher`` PWKD swaps at each boundary. It works wherever distillers do: a ``retrain`` stage
(retraining a searched child) or a trainer, because both runners call the distiller's optional
``lr_factor(step, total)`` before every step (which is also how PWKD knows the step).

``feature_kd`` is similarity-preserving KD (Tung & Mori, ICCV 2019) on the penultimate features:
``weight · ‖G_s − G_t‖²_F / b²`` with ``G`` the row-normalised batch Gram matrix of the features.
It needs no learned projection, so a narrow student can match any teacher width; PWKD can wrap it
(``base: {name: feature_kd}``) as its feature-KD option.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nascore.config import Ref, format_pydantic
from nascore.errors import ConfigError, NascoreError, PluginError
from nascore.methods.teacher import Teacher, classifier_of, load_teacher


class PWKDConfig(BaseModel):
    """Options of the ``pwkd`` distiller."""

    model_config = ConfigDict(extra="forbid")
    teacher: str = Field("supernet", description="a slimmable teacher: supernet (this run's) or supernet:<run_dir>")
    widths: list[str] | None = Field(
        None, description="teacher paths from partial to whole (architecture strings of the teacher's space); "
        "null: every option of its single decision, in order")
    base: Ref = Field(default_factory=lambda: Ref(name="kd", options={"temperature": 4.0}),
                      description="the distiller run in every stage (its teacher is set by pwkd)")
    stage_fractions: list[float] | None = Field(None, description="relative stage lengths (null: equal)")
    lr_restart: bool = Field(True, description="restart the learning rate at every stage boundary")
    stage_schedule: Literal["cosine", "linear", "step", "constant"] = Field(
        "cosine", description="learning-rate decay within a stage (step: x0.1 at 50% and 75%)")

    @model_validator(mode="after")
    def _fractions(self) -> "PWKDConfig":
        if self.stage_fractions is not None:
            if any(f <= 0 for f in self.stage_fractions):
                raise ValueError("stage_fractions must be positive")
            if self.widths is not None and len(self.stage_fractions) != len(self.widths):
                raise ValueError("stage_fractions needs one entry per teacher width")
        if "teacher" in self.base.options and self.base.options["teacher"] is not None:
            raise ValueError("set the teacher on pwkd, not on its base distiller (pwkd swaps it per stage)")
        return self


def stage_bounds(total: int, fractions: list[float]) -> list[int]:
    """First step of each stage, plus ``total``: stage ``i`` is steps ``[b[i], b[i+1])``."""
    cum, out = 0.0, [0]
    s = sum(fractions)
    for f in fractions[:-1]:
        cum += f
        out.append(int(round(total * cum / s)))
    out.append(total)
    return out


def stage_factor(t: float, schedule: str) -> float:
    """Learning-rate multiplier at fraction ``t`` ∈ [0, 1) of a stage."""
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - t
    if schedule == "step":
        return 1.0 if t < 0.5 else (0.1 if t < 0.75 else 0.01)
    return 0.5 * (1.0 + math.cos(math.pi * t))


class PWKDDistiller:
    """Partial-to-whole schedule over a slimmable teacher, wrapping a base distiller."""

    def __init__(self, cfg: PWKDConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self.teacher = load_teacher(cfg.teacher, ctx)
        if self.teacher.kind != "supernet":
            raise NascoreError(f"pwkd needs a slimmable supernet teacher, got {self.teacher.source}",
                               hint="teacher: supernet (this run's) or supernet:<run_dir> of a slimmable run")
        self.widths = self._widths()
        if cfg.stage_fractions is not None and len(cfg.stage_fractions) != len(self.widths):
            raise ConfigError([f"stage_fractions has {len(cfg.stage_fractions)} entries for {len(self.widths)} widths"],
                              source="pwkd options")
        self.stage_teachers: list[Teacher] = [self.teacher.at(a) for a in self.widths]
        self.base = self._build_base(ctx)
        self.replaces_ce = bool(getattr(self.base, "replaces_ce", False))
        self.step = 0
        self.total = 0
        self.current: int | None = None
        self.switches: list[tuple[int, int]] = []  # (step, stage) at every change of teacher
        self._ctx = ctx

    def _widths(self) -> list[Any]:
        space = self.teacher.space
        if self.cfg.widths is not None:
            return [space.parse(w) for w in self.cfg.widths]
        if len(space.decisions) != 1:
            raise NascoreError(f"the teacher's space {space.name!r} has {len(space.decisions)} decisions",
                               hint="list the teacher paths from partial to whole in pwkd's `widths`")
        from nascore.arch import Architecture

        return [Architecture([o]) for o in space.allowed[0]]

    def _build_base(self, ctx: Any) -> Any:
        reg = getattr(ctx, "registry", None)
        if reg is None:
            from nascore.registry import get_registry

            reg = get_registry()
        if self.cfg.base.name == "pwkd":
            raise ConfigError(["base.name: pwkd cannot wrap itself"], source="pwkd options")
        comp = reg.get("distiller", self.cfg.base.name)
        try:
            opts = comp.config.model_validate(self.cfg.base.options)
        except ValidationError as e:
            raise ConfigError(format_pydantic(e, prefix="base.options"), source="pwkd options") from None
        base = comp.build(opts, ctx)
        if not hasattr(base, "teacher"):
            raise PluginError(f"distiller {self.cfg.base.name!r} cannot be wrapped by pwkd: it has no `teacher` to swap",
                              hint="use kd (logit KD) or feature_kd")
        return base

    # -- schedule -------------------------------------------------------------------------------
    def bounds(self, total: int) -> list[int]:
        return stage_bounds(total, self.cfg.stage_fractions or [1.0] * len(self.widths))

    def stage_of(self, step: int, total: int) -> int:
        b = self.bounds(total)
        for i in range(len(self.widths)):
            if step < b[i + 1]:
                return i
        return len(self.widths) - 1

    def lr_factor(self, step: int, total: int) -> float | None:
        """Called by the runner before each step: records the step; restarts the lr per stage."""
        self.step, self.total = int(step), int(total)
        if not self.cfg.lr_restart:
            return None
        b = self.bounds(total)
        i = self.stage_of(step, total)
        length = max(b[i + 1] - b[i], 1)
        return stage_factor((step - b[i]) / length, self.cfg.stage_schedule)

    def active_teacher(self, trainer: Any = None) -> Teacher:
        """The teacher sub-network of the current stage (and log a switch)."""
        step, total = self.step, self.total
        if total <= 0 and trainer is not None and self._ctx is not None:  # a runner without lr_factor calls
            step = trainer.step
            total = trainer.steps_per_epoch(self._ctx) * trainer.epochs(self._ctx)
        i = self.stage_of(step, max(total, 1))
        if i != self.current:
            self.current = i
            self.switches.append((step, i))
            if self._ctx is not None and getattr(self._ctx, "log", None) is not None:
                space = self.teacher.space
                self._ctx.log.event("pwkd_stage", stage=i, step=step, teacher=space.format(self.widths[i]))
        return self.stage_teachers[i]

    # -- distiller protocol -----------------------------------------------------------------------
    def bind_student(self, module: torch.nn.Module) -> None:
        if hasattr(self.base, "bind_student"):
            self.base.bind_student(module)

    def loss(self, student_logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, arch: Any, ctx: Any,
             trainer: Any) -> torch.Tensor:
        self.base.teacher = self.active_teacher(trainer)
        return self.base.loss(student_logits, x, y, arch, ctx, trainer)


# -- feature KD ----------------------------------------------------------------------------------------
class FeatureKDConfig(BaseModel):
    """Options of the ``feature_kd`` distiller (similarity-preserving KD on penultimate features)."""

    model_config = ConfigDict(extra="forbid")
    teacher: str | None = Field(None, description="teacher spec (see kd); null when wrapped by pwkd")
    weights: str | None = Field(None, description="local weights file of a torchvision teacher")
    teacher_arch: str | None = Field(None, description="path of a supernet teacher (default: largest)")
    weight: float = Field(3000.0, ge=0, description="γ of the SP loss (the paper's CIFAR value)")


def sp_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving loss: ‖norm(Fs Fsᵀ) − norm(Ft Ftᵀ)‖²_F / b² (widths may differ)."""
    b = fs.shape[0]
    gs = F.normalize(fs.flatten(1) @ fs.flatten(1).t(), dim=1)
    gt = F.normalize(ft.flatten(1) @ ft.flatten(1).t(), dim=1)
    return (gs - gt.detach()).pow(2).sum() / (b * b)


class FeatureKDDistiller:
    """SP feature KD; the student's penultimate feature is captured by a hook set in ``bind_student``."""

    replaces_ce = False

    def __init__(self, cfg: FeatureKDConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self.teacher: Teacher | None = None
        if cfg.teacher is not None:
            self.teacher = load_teacher(cfg.teacher, ctx, weights=cfg.weights, arch=cfg.teacher_arch)
        self._feat: torch.Tensor | None = None
        self._handle: Any = None

    def bind_student(self, module: torch.nn.Module) -> None:
        head = classifier_of(module)
        if head is None:
            raise NascoreError(f"feature_kd: the student {type(module).__name__} has no final nn.Linear")
        if self._handle is not None:
            self._handle.remove()
        self._handle = head.register_forward_pre_hook(self._capture)

    def _capture(self, module: torch.nn.Module, args: tuple) -> None:
        self._feat = args[0]

    def loss(self, student_logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, arch: Any, ctx: Any,
             trainer: Any) -> torch.Tensor:
        if self.teacher is None:
            raise NascoreError("distiller feature_kd has no teacher", hint="set its `teacher` option")
        if self._feat is None:
            raise NascoreError("feature_kd saw no student feature", hint="the runner must call bind_student(student)")
        _, ft = self.teacher.logits_and_features(x)
        return self.cfg.weight * sp_loss(self._feat, ft)
