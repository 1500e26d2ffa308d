"""The supernet training loop every trainer plugin builds on.

:class:`SupernetTrainer` owns what is the same for all weight-sharing methods: the optimizer and
schedule, deterministic resumable epochs (data order from ``(seed, epoch)``, checkpoints every
``checkpoint_every`` steps with model, optimizer, sampler RNG and the subclass's own state),
clearing gradients of inactive candidates (so momentum and weight decay never move them), gradient
all-reduce across ranks, the GPU-run features of :mod:`nascore.training` (mixed precision,
channels_last, weight EMA, gradient accumulation; each off unless its option is set), NaN
detection, progress and metrics. A method overrides a few small
methods — :meth:`sample_arch`, :meth:`compute_loss`, :meth:`after_step`, :meth:`extra_state` —
like a Lightning module overrides ``training_step``.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture
from nascore.errors import TrainingDiverged
from nascore.training import TrainingFeatures, load_optimizer_state

if TYPE_CHECKING:
    from nascore.roles import Context


class TrainerConfig(BaseModel):
    """Options shared by every supernet trainer (plugins subclass this model)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    epochs: int = Field(5, gt=0, description="passes over the train split")
    steps_per_epoch: int | None = Field(None, gt=0, description="cap on batches per epoch")
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(4e-5, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(5.0, gt=0, description="max gradient norm (null: off)")
    null_inactive_grads: bool = Field(True, description="clear grads of unused ops before the step")
    on_nan: Literal["stop", "skip"] = Field("stop", description="NaN/inf loss: stop the run, or skip the batch")
    # GPU-run features (nascore.training), each off by default
    amp: Literal["off", "bf16", "fp16"] = Field(
        "off", description="mixed precision: bf16 autocast (CPU or CUDA), fp16 autocast + GradScaler (CUDA only)")
    channels_last: bool = Field(False, description="supernet and batches in channels_last (NHWC) memory format")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of weights and BN buffers (Cream: 0.9998); null: off")
    ema_for_search: bool = Field(True, description="with ema_decay: the stage ends with the EMA weights in the supernet")
    grad_accum_steps: int = Field(1, ge=1, description="run each batch as k micro-batches, one optimizer step (1/k memory)")


def lr_factor(step: int, total: int, schedule: str, warmup: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if total <= 0 or schedule == "constant":
        return 1.0
    t = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    if schedule == "linear":
        return 1.0 - t
    return 0.5 * (1.0 + math.cos(math.pi * t))


def distiller_lr_factor(distiller: Any, step: int, total: int) -> float | None:
    """The distiller's own learning-rate factor for ``step`` of ``total``, if it schedules one.

    A distiller may define ``lr_factor(step, total) -> float | None`` (PWKD restarts the learning
    rate at each stage); ``None`` (or no such method) leaves the runner's own schedule in place.
    The runner calls it once per step, before that step's loss.
    """
    hook = getattr(distiller, "lr_factor", None) if distiller is not None else None
    return hook(step, total) if hook is not None else None


def stage_field(stage_key: str, field: str, *, brackets: bool = False) -> str:
    """The config path of ``field`` of the stage with ``stage_key`` (``"3.1.0"``: loop 3, round 1,
    inner stage 0 → ``stages.3.stages.0.<field>``), as ``--set`` takes it; ``brackets``:
    ``stages[3].stages[0].<field>``, the options keys of :func:`nascore.config.iter_refs`."""
    parts = stage_key.split(".")
    index = (lambda i: f"[{i}]") if brackets else (lambda i: f".{i}")
    path = f"stages{index(parts[0])}"
    rest = parts[1:]
    while len(rest) >= 2:
        _round, idx, *rest = rest
        path += f".stages{index(idx)}"
    return f"{path}.{field}"


def diverged(
    value: float, *, stage: str, step: int, what: str, lr_field: str, lr: float | None = None,
    epoch: int | None = None, checkpoints: Any = None, extra_fix: str = "", detail: str = "",
) -> TrainingDiverged:
    """The error every training loop raises on a non-finite loss or weights: names the stage, the
    step and the likely fix (a lower learning rate), and says the last good checkpoint is kept."""
    at = f"step {step}" + (f" (epoch {epoch})" if epoch is not None else "")
    now = f" (now {lr:g})" if lr is not None else ""
    kept = f"; the last good checkpoint in {checkpoints} is kept" if checkpoints else ""
    return TrainingDiverged(
        f"stage {stage} ({what}): {value} at {at}{detail}",
        hint=f"the learning rate is the usual cause: run again with a lower one, e.g. --set {lr_field}=…{now}"
             f"{extra_fix}{kept}",
    )


def weights_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter and buffer of ``module`` is finite (checked before a checkpoint is written,
    so that a diverged step never replaces the last good checkpoint)."""
    with torch.no_grad():
        return all(bool(torch.isfinite(t).all()) for t in (*module.parameters(), *module.buffers())
                   if t.is_floating_point())


def make_optimizer(params: Any, cfg: TrainerConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def rng_state_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(state: list) -> random.Random:
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


class SupernetTrainer:
    """Single-path supernet training with everything but the method left generic.

    Subclasses override :meth:`sample_arch` (which path this step), :meth:`compute_loss` (which
    loss), :meth:`after_step` (bookkeeping such as Cream's board) and :meth:`extra_state` /
    :meth:`load_extra_state` (what of theirs must survive a kill). A distiller with state of its
    own (Cream's board) provides ``state_dict()``/``load_state_dict()``; it is checkpointed with
    the trainer.
    """

    Config = TrainerConfig

    def __init__(self, cfg: TrainerConfig, ctx: "Context | None" = None) -> None:
        self.cfg = cfg
        self.rng = random.Random(0)
        self.step = 0
        self.epoch = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.distiller: Any = None
        self.features: TrainingFeatures | None = None

    # -- method hooks --------------------------------------------------------------------------
    def setup(self, ctx: "Context") -> None:
        """Called once before training (after the supernet exists, before any resume)."""

    def sample_arch(self, ctx: "Context") -> Architecture:
        """The path of this step (default: uniform over the current space)."""
        return ctx.space.sample(self.rng)

    def compute_loss(
        self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, arch: Architecture
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward the path and return ``(loss, logits)``; adds the distiller's loss if any."""
        logits = ctx.supernet(x)
        if self.distiller is not None:
            kd = self.distiller.loss(logits, x, y, arch, ctx, self)
            if getattr(self.distiller, "replaces_ce", False):
                return kd, logits
            return F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing) + kd, logits
        return F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing), logits

    def after_step(
        self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, arch: Architecture,
        logits: torch.Tensor, loss: torch.Tensor,
    ) -> dict[str, float]:
        """Bookkeeping after the optimizer step; returns extra metrics to log."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Method state to checkpoint (tensors and plain containers only)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""

    def clear_inactive_grads(self, ctx: "Context", arch: Architecture) -> None:
        """Set the gradient of every parameter of an unused candidate to None before the step, so
        the optimizer skips it (no momentum, no weight decay). Cheap: the supernet caches its
        per-op parameter lists."""
        for p in ctx.supernet.inactive_parameters(arch):
            p.grad = None

    def parameters(self, ctx: "Context") -> Any:
        """What the optimizer updates (default: every supernet parameter)."""
        return ctx.supernet.parameters()

    # -- the loop ------------------------------------------------------------------------------
    def steps_per_epoch(self, ctx: "Context") -> int:
        n = ctx.data.num_batches("train")
        if self.cfg.steps_per_epoch:
            n = min(n, self.cfg.steps_per_epoch)
        if ctx.smoke:
            n = min(n, 2)
        return max(n, 1)

    def epochs(self, ctx: "Context") -> int:
        return 1 if ctx.smoke else self.cfg.epochs

    def state_dict(self, ctx: "Context") -> dict[str, Any]:
        return {
            "supernet": ctx.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "rng": rng_state_json(self.rng),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "extra": self.extra_state(),
            "distiller": self.distiller.state_dict() if hasattr(self.distiller, "state_dict") else {},
            "features": self.features.state_dict() if self.features is not None else {},
        }

    def load_state(self, ctx: "Context", state: dict[str, Any]) -> None:
        ctx.supernet.load_state_dict(state["supernet"])
        if self.optimizer is not None and state.get("optimizer"):
            load_optimizer_state(self.optimizer, state["optimizer"], f"stage {ctx.stage_key} checkpoint")
        self.rng = rng_from_json(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.load_extra_state(state.get("extra", {}))
        if state.get("distiller") and hasattr(self.distiller, "load_state_dict"):
            self.distiller.load_state_dict(state["distiller"])
        if state.get("features"):
            self.training_features(ctx).load_state_dict(state["features"])

    def fit(self, ctx: "Context") -> None:
        """Train for the configured epochs, resuming from this stage's checkpoint if any."""
        net = ctx.supernet
        self.rng = random.Random(ctx.stage_seed("sampler"))
        torch.manual_seed(ctx.stage_seed("torch"))
        self.distiller = ctx.distiller
        bind = getattr(self.distiller, "bind_student", None)
        if bind is not None:  # distillers that read the student's internals (feature KD)
            bind(net)
        self.setup(ctx)
        self.features = None
        self.training_features(ctx)
        self.optimizer = make_optimizer(self.parameters(ctx), self.cfg)
        spe, epochs = self.steps_per_epoch(ctx), self.epochs(ctx)
        total = spe * epochs
        saved = ctx.checkpoints.load_latest()
        if saved is not None:
            self.load_state(ctx, saved)
            ctx.log.event("resume", stage=ctx.stage_key, step=self.step)
        net.train()
        bar = ctx.progress(total=total, initial=self.step, desc=f"train {ctx.stage_key}")
        running: dict[str, float] = {}
        try:
            while self.step < total:
                epoch, start = divmod(self.step, spe)
                self.epoch = epoch
                for x, y in ctx.data.batches("train", epoch=epoch, start=start, limit=spe, device=ctx.device):
                    metrics = self.train_step(ctx, x, y, total)
                    for k, v in metrics.items():
                        running[k] = 0.9 * running.get(k, v) + 0.1 * v
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in running.items() if k in ("loss", "acc")})
                    if self.step % ctx.cfg.log_every == 0 or self.step == total:
                        ctx.log.metric("train", step=self.step, epoch=epoch, stage=ctx.stage_key, **metrics)
                    if self.step % ctx.cfg.checkpoint_every == 0 and self.step < total:
                        self.check_weights(ctx)
                        ctx.checkpoints.save(self.state_dict(ctx))
                    if self.step >= total:
                        break
        finally:
            bar.close()
        if self.features is not None and self.features.finish(net):
            ctx.log.event("ema", stage=ctx.stage_key, step=self.step, decay=self.cfg.ema_decay)
        self.check_weights(ctx)
        ctx.checkpoints.save(self.state_dict(ctx))

    def diverged(self, ctx: "Context", value: str, arch: Architecture | None = None) -> TrainingDiverged:
        """:func:`diverged` for this trainer's stage, step and learning rate."""
        what = f"train, {type(self).__name__}"
        path = f" on path {ctx.space.format(arch)}" if arch is not None else ""
        return diverged(
            value, detail=path, stage=ctx.stage_key, step=self.step, epoch=self.epoch, what=what,
            lr_field=stage_field(ctx.stage_key, "trainer.options.lr"), lr=self.cfg.lr,
            checkpoints=ctx.checkpoints.directory, extra_fix=" (or on_nan: skip in the trainer options)")

    def check_weights(self, ctx: "Context") -> None:
        """Refuse to checkpoint non-finite weights: the last good checkpoint stays the newest."""
        if not weights_finite(ctx.supernet):
            ctx.log.event("nan", step=self.step, what="weights")
            raise self.diverged(ctx, "the supernet's weights became non-finite")

    def training_features(self, ctx: "Context") -> TrainingFeatures:
        """This trainer's AMP/channels_last/EMA/accumulation (:mod:`nascore.training`), built on first use."""
        if self.features is None:
            self.features = TrainingFeatures(self.cfg, ctx.supernet, getattr(ctx, "device", "cpu"))
        return self.features

    def set_lr(self, total: int) -> None:
        """This step's learning rate: the distiller's schedule when it has one (PWKD), else the config's."""
        factor = distiller_lr_factor(self.distiller, self.step, total)
        if factor is None:
            factor = lr_factor(self.step, total, self.cfg.schedule, self.cfg.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor

    def train_step(self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, total: int) -> dict[str, float]:
        """One optimizer step on one sampled path; returns metrics to log."""
        net, opt = ctx.supernet, self.optimizer
        assert opt is not None
        arch = self.sample_arch(ctx)
        ctx.check_same_arch(arch)
        net.set_active(arch)
        self.set_lr(total)
        opt.zero_grad(set_to_none=True)
        feats = self.training_features(ctx)
        if feats.active:
            loss, logits = feats.loss(lambda xi, yi: self.compute_loss(ctx, xi, yi, arch), x, y)
        else:
            loss, logits = self.compute_loss(ctx, x, y, arch)
        if not torch.isfinite(loss):
            ctx.log.event("nan", step=self.step, arch=ctx.space.format(arch), loss=float(loss.detach()))
            if self.cfg.on_nan == "skip":
                self.step += 1
                return {"skipped": 1.0}
            raise self.diverged(ctx, f"the training loss became {float(loss.detach())}", arch)
        feats.backward(loss)
        if self.cfg.null_inactive_grads:
            self.clear_inactive_grads(ctx, arch)
        ctx.allreduce_grads(net)
        feats.unscale(opt)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], self.cfg.grad_clip)
        feats.step(opt, net)
        self.step += 1
        with torch.no_grad():
            acc = (logits.argmax(1) == y).float().mean().item() if logits.dim() == 2 else float("nan")
        out = {"loss": float(loss.detach()), "acc": acc, "lr": opt.param_groups[0]["lr"]}
        out.update(self.after_step(ctx, x, y, arch, logits, loss))
        return out
