"""``setn`` trainer: SETN's alternating single-path weight step and mixed-network α step.

Official code (D-X-Y/AutoDL-Projects ``exps/NAS-Bench-201-algos/SETN.py``, ``search_func``), per
iteration:

1. **weights** — an architecture drawn *uniformly* (``dync_genotype(use_random=True)``) runs as a
   single path on a training batch; cross-entropy; SGD (nesterov, lr 0.025 cosine, wd 5e-4) on
   the shared weights;
2. **α** — the "joint" network (every edge = softmax(α)-weighted sum of all its ops) runs on a
   batch of the second split; cross-entropy; Adam (lr 3e-4, betas (0.5, 0.999), wd 1e-3) on α only.

Here step 1 is :class:`nascore.trainer.SupernetTrainer`'s step (so gradients of unsampled ops are
cleared before the SGD step: the weight step changes only the sampled path; the official code's
momentum/weight decay also moved unsampled ops — nascore's ``null_inactive_grads`` default), and
step 2 runs in :meth:`SETNTrainer.after_step` on the ``val`` split, taking gradients with respect
to α only. α and its Adam state are checkpointed with the trainer (resume continues exactly) and
written to ``ctx.state["alpha"]`` when the stage ends, for the ``setn`` selector.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from nascore.arch import Architecture
from nascore.methods.mixed import ALPHA_STATE_KEY, ArchAlpha, subspace_arch
from nascore.trainer import SupernetTrainer, TrainerConfig


class SETNConfig(TrainerConfig):
    """Options of the ``setn`` trainer (defaults: SETN's NB-201 code, except epochs)."""

    epochs: int = Field(5, gt=0, description="passes over the train split (code: 250)")
    lr: float = Field(0.025, gt=0, description="SGD lr of the weights (cosine)")
    weight_decay: float = Field(5e-4, ge=0, description="weight decay of the weights")
    arch_lr: float = Field(3e-4, gt=0, description="Adam lr of α (code: 3e-4)")
    arch_weight_decay: float = Field(1e-3, ge=0, description="Adam weight decay of α (code: 1e-3)")
    arch_betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas of α (code: 0.5, 0.999)")
    alpha_init_std: float = Field(1e-3, ge=0, description="α ~ N(0, std²) at the start (code: 1e-3)")
    alpha_split: Literal["val", "archval"] = Field("val", description="split of the α step (never the train split)")
    alpha_every: int = Field(1, ge=1, description="α step after every n-th weight step (code: 1)")


class SETNTrainer(SupernetTrainer):
    """Uniform single-path weight steps alternating with softmax(α)-mixed α steps (see module doc)."""

    Config = SETNConfig

    def __init__(self, cfg: SETNConfig, ctx: Any = None) -> None:
        super().__init__(cfg, ctx)
        self.cfg: SETNConfig = cfg
        self.alpha: ArchAlpha | None = None
        self.alpha_opt: torch.optim.Optimizer | None = None
        self.joint: Architecture | None = None

    def setup(self, ctx: Any) -> None:
        cfg = self.cfg
        g = torch.Generator().manual_seed(ctx.stage_seed("alpha"))
        self.alpha = ArchAlpha(ctx.base_space, init_std=cfg.alpha_init_std, generator=g).to(ctx.device)
        self.alpha_opt = torch.optim.Adam(self.alpha.parameters(), lr=cfg.arch_lr, betas=tuple(cfg.arch_betas),
                                          weight_decay=cfg.arch_weight_decay)
        self.joint = subspace_arch(ctx.space)

    # -- the α step -----------------------------------------------------------------------------
    def alpha_step(self, ctx: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One Adam step on α from the joint network's loss on ``(x, y)``; weights untouched."""
        assert self.alpha is not None and self.alpha_opt is not None and self.joint is not None
        net = ctx.supernet
        net.set_active(self.joint, weights=self.alpha.mix_weights(self.joint))
        try:
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            (grad,) = torch.autograd.grad(loss, [self.alpha.alpha])
        finally:
            net.set_active(self.joint)  # drop the graph's reference to α
        self.alpha_opt.zero_grad(set_to_none=True)
        self.alpha.alpha.grad = grad
        ctx.allreduce_grads(self.alpha)
        self.alpha_opt.step()
        self.alpha_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            acc = float((logits.argmax(1) == y).float().mean())
        return {"alpha_loss": float(loss.detach()), "alpha_acc": acc}

    def _alpha_batch(self, ctx: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The α batch of the current step: the val split in its seeded order, cycling by epoch."""
        split = self.cfg.alpha_split
        n = ctx.data.num_batches(split)
        if n == 0:
            return None
        k = (self.step - 1) // self.cfg.alpha_every
        epoch, b = divmod(k, n)
        return next(iter(ctx.data.batches(split, epoch=epoch, start=b, limit=b + 1, device=ctx.device)), None)

    def after_step(
        self, ctx: Any, x: torch.Tensor, y: torch.Tensor, arch: Architecture, logits: torch.Tensor, loss: torch.Tensor,
    ) -> dict[str, float]:
        if self.step % self.cfg.alpha_every:
            return {}
        batch = self._alpha_batch(ctx)
        if batch is None:
            from nascore.errors import NascoreError

            raise NascoreError(
                f"the {self.cfg.alpha_split!r} split has no full batch for SETN's α step",
                hint="raise data.val_fraction or lower data.batch_size",
            )
        return self.alpha_step(ctx, *batch)

    # -- state ----------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        assert self.alpha is not None and self.alpha_opt is not None
        return {"alpha": self.alpha.alpha.detach().clone(), "alpha_opt": self.alpha_opt.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.alpha is None or "alpha" not in state:
            return
        with torch.no_grad():
            self.alpha.alpha.copy_(state["alpha"].to(self.alpha.alpha.device))
        if self.alpha_opt is not None and state.get("alpha_opt"):
            self.alpha_opt.load_state_dict(state["alpha_opt"])

    def fit(self, ctx: Any) -> None:
        super().fit(ctx)
        assert self.alpha is not None
        ctx.state[ALPHA_STATE_KEY] = self.alpha.to_state()
        best = self.alpha.argmax_arch(ctx.space)
        ctx.log.event("alpha", stage=ctx.stage_key, trainer="setn", argmax=ctx.space.format(best),
                      values=self.alpha.to_state()["values"])
