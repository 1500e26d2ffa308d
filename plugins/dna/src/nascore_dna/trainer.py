"""The ``dna`` trainer: block-wise supervision of the student supernet by the teacher's features.

Every step draws one path (uniform per decision, from the trainer's seeded generator) and trains
*every* block on it at once: block ``b`` receives the teacher's feature map at its input
(``guide_input``, as in the official code) and is pulled towards the teacher's output of block ``b``
by an MSE loss. Because each block sees only teacher features, the blocks are independent — the
sum of their losses has the same gradients as training them one after the other, but the teacher
runs once per batch instead of once per block. The pooling/classifier head is not trained (DNA
retrains the chosen architecture). With no teacher named, one is first trained in the run
(:func:`nascore_dna.teacher.train_teacher`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from nascore.arch import Architecture
from nascore.trainer import SupernetTrainer, TrainerConfig

from nascore_dna.blocks import Blocks, check_blocks, student_blocks
from nascore_dna.teacher import STATE_KEY, TeacherBlocks, TeacherOptions, auto_teacher, record, resolve, train_teacher


class DNAConfig(TrainerConfig):
    """Options of the ``dna`` trainer (defaults follow the official code: Adam, lr 0.002, wd 1e-4)."""

    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(0.002, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm (null: off, as the official code)")
    teacher: str | None = Field(
        None, description="run:<run_dir>[#k] | export:<folder> | torchvision:<name> | supernet:<run_dir>; "
        "null: train a teacher in this run first")
    teacher_weights: str | None = Field(None, description="local weights file of a torchvision teacher (never downloaded)")
    teacher_cuts: list[int] | None = Field(
        None, description="torchvision teachers: unit index after which each block ends (default: cut by shape)")
    teacher_space: dict[str, Any] | Literal["auto", "own"] = Field(
        "auto", description="in-run teacher: the space it is a child of, {name, options} with the student's block shapes "
        "(a teacher that is not a member of the searched space); own: the run's own space (its largest path); "
        "auto: a known non-member teacher for the space (tiny_matched: tiny_chain's conv5x4), else own")
    teacher_arch: str | None = Field(None, description="in-run teacher: its architecture (default: the largest path of its space)")
    teacher_epochs: int = Field(4, gt=0, description="in-run teacher: training epochs (Adam, cosine)")
    teacher_lr: float = Field(3e-3, gt=0, description="in-run teacher: Adam learning rate")
    guide_input: bool = Field(True, description="feed each block the teacher's feature (false: the student's own, detached)")
    loss: Literal["mse", "l1norm"] = Field("mse", description="training loss per block (the code trains with MSE)")
    block_lr: list[float] | None = Field(None, description="learning rate per block (code: 0.002, 0.005, …); null: lr for all")

    @model_validator(mode="after")
    def _teacher_alone(self) -> "DNAConfig":
        if self.block_lr is not None and any(v <= 0 for v in self.block_lr):
            raise ValueError("block_lr values must be positive")
        if self.teacher is not None and (self.teacher_arch is not None or isinstance(self.teacher_space, dict)):
            raise ValueError("teacher_arch / teacher_space describe a teacher trained in the run; "
                             "remove them when `teacher` names one")
        if isinstance(self.teacher_space, dict) and not isinstance(self.teacher_space.get("name"), str):
            raise ValueError("teacher_space needs a space name: {name: tiny_chain, options: {...}}")
        return self


def block_loss(out: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """MSE (training) or the code's normalised L1, mean|s − t| / std(t) (ranking)."""
    if kind == "mse":
        return F.mse_loss(out, target)
    return (out - target).abs().mean() / (target.std() + 1e-9)


def blockwise_losses(blocks: Blocks, teacher: TeacherBlocks, x: torch.Tensor, kind: str = "mse",
                     guide_input: bool = True) -> list[torch.Tensor]:
    """One loss per block: block ``b`` on the teacher's input feature vs the teacher's output."""
    feats = teacher.features(x)
    losses = []
    h = x
    for b in range(len(blocks)):
        out = blocks.run(b, feats[b] if guide_input else h)
        losses.append(block_loss(out, feats[b + 1], kind))
        h = out.detach()
    return losses


class DNATrainer(SupernetTrainer):
    """Block-wise supervised supernet training (DNA); see module docstring."""

    Config = DNAConfig

    def __init__(self, cfg: DNAConfig, ctx: Any = None) -> None:
        super().__init__(cfg, ctx)
        self.cfg: DNAConfig = cfg
        self.blocks: Blocks | None = None
        self.teacher: TeacherBlocks | None = None
        self.last_losses: list[float] = []

    def setup(self, ctx: Any) -> None:
        net = ctx.supernet
        self.blocks = student_blocks(net)
        check_blocks(net, self.blocks, ctx.data.input_shape)
        if self.cfg.block_lr is not None and len(self.cfg.block_lr) != len(self.blocks):
            from nascore.errors import ConfigError

            raise ConfigError([f"block_lr has {len(self.cfg.block_lr)} values, the space has {len(self.blocks)} blocks"],
                              source="dna trainer options")
        opts = TeacherOptions(teacher=self.cfg.teacher, teacher_weights=self.cfg.teacher_weights,
                              teacher_cuts=self.cfg.teacher_cuts)
        facts: dict[str, Any] = {}
        spec = self.cfg.teacher
        if spec is None:
            prev = ctx.state.get(STATE_KEY, {})
            if prev.get("trained_in_run") and prev.get("teacher"):
                spec = prev["teacher"]
                facts = {k: prev[k] for k in ("teacher_arch", "teacher_acc") if k in prev}
            else:
                t_space, t_arch = self.teacher_choice(ctx)
                spec, facts = train_teacher(ctx, t_arch, self.cfg.teacher_epochs, self.cfg.teacher_lr, t_space)
            facts["trained_in_run"] = True
        record(ctx, opts, spec, blocks=[[ctx.base_space.decisions[d].name for d in ds] for ds in self.blocks.decisions],
               **facts)
        ctx.write_state()
        self.teacher = resolve(ctx, TeacherOptions(), self.blocks)
        ctx.log.event("dna_blocks", teacher=self.teacher.source, shapes=[list(s) for s in self.teacher.shapes],
                      blocks=ctx.state[STATE_KEY]["blocks"])

    def teacher_choice(self, ctx: Any) -> tuple[dict[str, Any] | None, str | None]:
        """``(teacher space config or None = own, teacher architecture or None = largest)``.

        ``auto`` with an explicit ``teacher_arch`` means an architecture of the run's own space (the
        option's meaning before ``teacher_space`` existed)."""
        ts = self.cfg.teacher_space
        if isinstance(ts, dict):
            return ts, self.cfg.teacher_arch
        if ts == "own" or self.cfg.teacher_arch is not None:
            return None, self.cfg.teacher_arch
        return auto_teacher(ctx)

    def parameters(self, ctx: Any) -> Any:
        assert self.blocks is not None
        lrs = self.cfg.block_lr or [self.cfg.lr] * len(self.blocks)
        return [{"params": self.blocks.parameters(b), "lr": lr} for b, lr in enumerate(lrs)]

    def compute_loss(self, ctx: Any, x: torch.Tensor, y: torch.Tensor, arch: Architecture) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.blocks is not None and self.teacher is not None
        losses = blockwise_losses(self.blocks, self.teacher, x, self.cfg.loss, self.cfg.guide_input)
        self.last_losses = [float(v.detach()) for v in losses]
        total = torch.stack(losses).sum()
        return total, total.detach().reshape(1)

    def train_step(self, ctx: Any, x: torch.Tensor, y: torch.Tensor, total: int) -> dict[str, float]:
        out = super().train_step(ctx, x, y, total)
        out.pop("acc", None)  # no logits: DNA trains features only
        return out

    def after_step(self, ctx: Any, x: torch.Tensor, y: torch.Tensor, arch: Architecture, logits: torch.Tensor,
                   loss: torch.Tensor) -> dict[str, float]:
        return {f"block{b}": v for b, v in enumerate(self.last_losses)}
