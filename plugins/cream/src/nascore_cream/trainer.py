"""The ``cream`` trainer: single-path supernet training with prioritized-path distillation.

Per step (on top of the shared :class:`nascore.trainer.SupernetTrainer` loop): draw a path inside
the run's MACs range with the chosen op prior; every ``update_iter`` steps update the meta matching
network (before the student's forward, as the code does); train the path with
``(ρ·KD + (2−ρ)·CE)/2`` against the teacher the meta-network picks from the board; offer the path
to the board. The board, the meta-network (and its optimizer) and the sampler RNG are part of the
checkpoint; the board is also written into ``ctx.state["cream_board"]`` for the ``board``
selector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field

from nascore.arch import Architecture
from nascore.errors import NascoreError
from nascore.space import constrained_sample
from nascore.trainer import SupernetTrainer, TrainerConfig

from nascore_cream.distill import PathDistillOptions, PrioritizedPaths

if TYPE_CHECKING:
    from nascore.roles import Context

#: The code's ``PRE_PROB`` (``experiments/configs/train/train.yaml``) for its six MBConv ops.
PRE_PROB: dict[str, float] = {"k3e4": 0.05, "k3e6": 0.2, "k5e4": 0.05, "k5e6": 0.5, "k7e4": 0.05, "k7e6": 0.15}


class CreamConfig(TrainerConfig, PathDistillOptions):
    """Options of the ``cream`` trainer: the shared loop, the path sampler and the distillation."""

    prior: Literal["even", "pre_prob", "teacher"] = Field(
        "even", description="op prior of the path sampler: even (uniform, paper), pre_prob (the code's fixed op "
        "probabilities), teacher (op frequencies on the board)")
    op_prior: dict[str, float] | None = Field(
        None, description="pre_prob: weight per op name (default: the code's k3e4..k7e6 table)")
    prior_smoothing: float = Field(0.0, ge=0, description="teacher: added to every op count (code: 0)")
    max_tries: int = Field(10_000, gt=0, description="draws per step to find a path inside the MACs range")
    decay_only_weights: bool = Field(True, description="no weight decay on BN and biases (code's add_weight_decay)")
    # official-code defaults that differ from the shared loop's
    schedule: Literal["cosine", "linear", "constant"] = Field("linear", description="LR schedule (code: linear to 0)")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay (code: 1e-4)")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the CE term (code: 0.1)")


def prior_probs(
    allowed: tuple[tuple[str, ...], ...], kind: str, *, table: Mapping[str, float] | None = None,
    counts: Mapping[str, float] | None = None, smoothing: float = 0.0,
) -> list[dict[str, float] | None] | None:
    """Per-decision op weights for :meth:`nascore.space.SearchSpace.sample` (None = uniform).

    ``pre_prob``: ops named in ``table`` get its weight, other ops (``skip``…) the table's mean
    weight; a decision with no named op stays uniform. ``teacher``: op counts over the whole board
    (as the code, one count per op name, not per layer) plus ``smoothing``; uniform if empty.
    """
    if kind == "even":
        return None
    if kind == "pre_prob":
        table = dict(table or PRE_PROB)
        mean = sum(table.values()) / max(len(table), 1)
        out: list[dict[str, float] | None] = []
        for ops in allowed:
            named = [o for o in ops if o in table]
            out.append({o: float(table.get(o, mean)) for o in ops} if named else None)
        return out
    counts = counts or {}
    if sum(counts.values()) <= 0:
        return None
    return [{o: float(counts.get(o, 0)) + smoothing for o in ops} for ops in allowed]


class CreamTrainer(SupernetTrainer):
    """Cream of the Crop supernet training (board + meta matching network)."""

    Config = CreamConfig

    def __init__(self, cfg: CreamConfig, ctx: "Context | None" = None) -> None:
        super().__init__(cfg, ctx)
        self.cfg: CreamConfig = cfg
        self.engine: PrioritizedPaths | None = None
        self._info: dict[str, float] = {}
        self._static_probs: list[dict[str, float] | None] | None = None

    # -- setup -------------------------------------------------------------------------------
    def setup(self, ctx: "Context") -> None:
        from nascore_cream.distiller import PrioritizedPathDistiller

        if isinstance(self.distiller, PrioritizedPathDistiller):
            raise NascoreError(
                "trainer cream already distils from its prioritized board; the distiller prioritized_path would do it twice",
                hint="remove the stage's distiller, or use it with another trainer (single_path, spos)",
            )
        if self.distiller is not None and getattr(self.distiller, "replaces_ce", False):
            raise NascoreError(
                f"trainer cream builds its own label+KD loss; distiller {type(self.distiller).__name__} replaces it",
                hint="use a distiller that adds a term (replaces_ce false) or another trainer",
            )
        if not ctx.constraint.unbounded:
            ctx.constraint.check_feasible(ctx.cost, ctx.space.allowed)
        self.engine = PrioritizedPaths(self.cfg, ctx, owner="trainer cream")
        self.engine.check(ctx)
        if self.cfg.prior == "pre_prob":
            self._static_probs = prior_probs(ctx.space.allowed, "pre_prob", table=self.cfg.op_prior)

    def parameters(self, ctx: "Context") -> Any:
        if not self.cfg.decay_only_weights:
            return ctx.supernet.parameters()
        decay, no_decay = [], []
        for _, p in ctx.supernet.named_parameters():
            (decay if p.dim() > 1 else no_decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    # -- sampling ----------------------------------------------------------------------------
    def probs(self, ctx: "Context") -> list[dict[str, float] | None] | None:
        if self.cfg.prior == "teacher":
            assert self.engine is not None
            return prior_probs(ctx.space.allowed, "teacher", counts=self.engine.board.op_counts(),
                               smoothing=self.cfg.prior_smoothing)
        return self._static_probs

    def sample_arch(self, ctx: "Context") -> Architecture:
        """A path inside the MACs range (rejection sampling with the op prior, from ``self.rng``)."""
        return constrained_sample(ctx.space, self.rng, ctx.feasible, max_tries=self.cfg.max_tries,
                                  probs=self.probs(ctx))

    # -- the step ----------------------------------------------------------------------------
    def _lr(self) -> tuple[float, float]:
        assert self.optimizer is not None
        g = self.optimizer.param_groups[0]
        return float(g["lr"]), float(g["lr"]) / float(g.get("initial_lr", g["lr"]) or 1.0)

    def compute_loss(
        self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, arch: Architecture
    ) -> tuple[torch.Tensor, torch.Tensor]:
        engine = self.engine
        assert engine is not None
        net = ctx.supernet
        self._info = {}
        if engine.meta_due(self.epoch, self.step):
            lr, scale = self._lr()
            self._info.update(engine.meta_update(
                net, x, y, arch, ctx, step=self.step, lr=lr, lr_scale=scale,
                label_smoothing=self.cfg.label_smoothing, optimizer=self.optimizer if engine.code else None))
        net.set_active(arch)
        logits = net(x)
        loss = engine.loss(net, logits, x, y, arch, ctx, epoch=self.epoch, step=self.step,
                           label_smoothing=self.cfg.label_smoothing)
        self._info.update(engine.last)
        if self.distiller is not None:
            loss = loss + self.distiller.loss(logits, x, y, arch, ctx, self)
        return loss, logits

    def after_step(
        self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, arch: Architecture,
        logits: torch.Tensor, loss: torch.Tensor,
    ) -> dict[str, float]:
        engine = self.engine
        assert engine is not None
        if engine.code:
            engine.step_meta_from_loss(ctx)
        out = dict(self._info)
        out["board"] = float(len(engine.board))
        if engine.board.best is not None:
            out["board_best"] = engine.board.best.score
        return out

    def fit(self, ctx: "Context") -> None:
        super().fit(ctx)
        assert self.engine is not None
        self.engine.publish(ctx)
        ctx.log.event("cream_board", stage=ctx.stage_key, entries=self.engine.board.to_json(),
                      meta_updates=self.engine.meta_updates)

    # -- state -------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        assert self.engine is not None
        return {"engine": self.engine.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        assert self.engine is not None
        if "engine" in state:
            self.engine.load_state_dict(state["engine"])
