"""Prioritized-path distillation: the board, the meta matching network and the combined loss.

:class:`PrioritizedPaths` is the engine both the ``cream`` trainer and the ``prioritized_path``
distiller run: per training step it

1. (every ``update_iter`` steps, after warm-up) updates the meta matching network ``M`` by the
   meta-gradient of the student's one-step look-ahead validation loss;
2. picks a teacher path from the board with ``M`` and gets the matching score ``ρ``;
3. returns the loss ``(ρ·KD + (2−ρ)·CE) / 2``, KD being the cross-entropy of the student's logits
   against the teacher path's softmax (teacher forward under ``no_grad``);
4. offers the student path to the board, scored by its top-1 on the training batch (the code) or on
   a held-out validation batch (``score: val``, the paper's intent).

``compat`` chooses between the paper's semantics (default) and the official code's quirks; the
package README lists each difference. Every forward this engine adds (teacher, matching,
look-ahead, validation scoring) leaves BatchNorm running statistics untouched, so only the
trainer's own student forward moves them, as in plain single-path training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from nascore.arch import Architecture
from nascore.errors import NascoreError

from nascore_cream.board import BoardEntry, PrioritizedBoard

if TYPE_CHECKING:
    from nascore.roles import Context

STATE_KEY = "cream_board"


class PathDistillOptions(BaseModel):
    """Options of prioritized-path distillation (shared by the ``cream`` trainer and the
    ``prioritized_path`` distiller)."""

    model_config = ConfigDict(extra="forbid")
    board_size: int = Field(10, gt=0, description="paths kept on the prioritized board (code: POOL_SIZE 10)")
    acc_gap: float = Field(
        0.05, ge=0, description="a path beats the worst board entry outright by more than this top-1 margin "
        "(code: 5 percentage points)")
    score: Literal["train", "val"] = Field(
        "train", description="board score of a path: top-1 on the current training batch (code) or on a held-out "
        "val batch (paper's intent)")
    unique: bool | None = Field(
        None, description="a path appears on the board at most once, re-measurements refresh it "
        "(null: true, false under compat cream-code, which keeps duplicates)")
    slice: int = Field(4, gt=0, description="images stored per board entry and fed to the matching network (code: SLICE 4; "
                       "smoke: at most half the batch)")
    pick: Literal["meta", "top1"] = Field(
        "meta", description="teacher choice: meta matching network (paper), or the best board path with rho 0.5")
    compat: Literal["paper", "cream-code"] = Field(
        "paper", description="paper semantics, or the official code's behaviour (rho from the last board entry, "
        "look-ahead with the meta lr on batch slices, see README)")
    meta_lr: float = Field(1e-4, gt=0, description="learning rate of the meta matching network (code: META_LR 1e-4)")
    meta_optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="optimizer of the meta matching network: sgd (code: a param group of its SGD) or adam "
        "(scale-free steps; the meta-gradient is tiny at small scale)")
    meta_momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of the meta matching network")
    update_iter: int = Field(200, gt=0, description="steps between meta-network updates (code: UPDATE_ITER; smoke: 1)")
    warmup_epochs: int = Field(
        1, ge=0, description="epochs of plain CE before the board, distillation and meta updates start "
        "(code: META_STA_EPOCH 20 of 120; smoke: 0)")
    temperature: float = Field(1.0, gt=0, description="KD temperature (code: 1); the KD term is scaled by T^2")


class MetaMatchingNetwork(nn.Module):
    """Cream's meta matching network: one ``Linear(num_classes × slice, 1)`` over the flattened
    difference of the student's and a board path's softmax on that entry's stored images."""

    def __init__(self, num_classes: int, slice_: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.slice = int(slice_)
        self.layer = nn.Linear(self.num_classes * self.slice, 1)

    def forward(self, diff: torch.Tensor) -> torch.Tensor:
        """``diff``: (K, slice, num_classes) → K matching logits."""
        return self.layer(diff.reshape(diff.shape[0], -1)).squeeze(1)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over the batch of ``-Σ p_t · log softmax(logits / T)``, times ``T²`` (Hinton's scaling)."""
    logp = F.log_softmax(logits / temperature, dim=1)
    return -(target_probs * logp).sum(1).mean() * (temperature**2)


def combine(ce: torch.Tensor, kd: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Cream's combined loss ``(ρ·KD + (2−ρ)·CE) / 2`` (code ``train.py``)."""
    return (rho * kd + (2 - rho) * ce) / 2


def batchnorms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats and m.running_mean is not None]


@contextlib.contextmanager
def frozen_bn(net: nn.Module) -> Iterator[None]:
    """Train-mode forwards (batch statistics) that leave BN running statistics exactly as they were."""
    layers = batchnorms(net)
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in layers]
    was = net.training
    for m in layers:
        m.momentum = 0.0
    net.train()
    try:
        yield
    finally:
        for m, (mom, n) in zip(layers, saved):
            m.momentum = mom
            m.num_batches_tracked.copy_(n)
        net.train(was)


def _hardsigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x + 3.0) / 6.0


@contextlib.contextmanager
def twice_differentiable(net: nn.Module) -> Iterator[None]:
    """Swap ops without a double backward in torch (``Hardsigmoid``, e.g. in SE gates) for their
    composite form ``relu6(x + 3) / 6`` while the look-ahead differentiates through a gradient."""
    swapped = [m for m in net.modules() if isinstance(m, nn.Hardsigmoid)]
    for m in swapped:
        m.forward = _hardsigmoid  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in swapped:
            del m.forward


def mean_across_ranks(ctx: "Context", value: float) -> float:
    """The mean of ``value`` over the ranks of a distributed run (itself otherwise)."""
    if not ctx.dist.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    torch.distributed.all_reduce(t)
    return float(t) / ctx.dist.world_size


def top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


class PrioritizedPaths:
    """The board + meta-network engine (see the module docstring).

    ``owner`` names who runs it ("trainer cream" / "distiller prioritized_path"); it is written
    with the board into ``ctx.state["cream_board"]`` for the ``board`` selector.
    """

    def __init__(self, opts: PathDistillOptions, ctx: "Context", owner: str) -> None:
        self.opts = opts
        self.owner = owner
        self.code = opts.compat == "cream-code"
        unique = (not self.code) if opts.unique is None else opts.unique
        c = ctx.constraint
        self.board = PrioritizedBoard(opts.board_size, opts.acc_gap, c.macs_min, c.macs_max, unique=unique)
        self.device = ctx.device
        self.smoke = bool(ctx.smoke)
        self.slice = self.effective_slice(opts.slice, ctx)
        self.meta = MetaMatchingNetwork(ctx.space.num_classes, self.slice).to(ctx.device)
        self.meta_opt: torch.optim.Optimizer
        if opts.meta_optimizer == "adam":
            self.meta_opt = torch.optim.Adam(self.meta.parameters(), lr=opts.meta_lr)
        else:
            self.meta_opt = torch.optim.SGD(self.meta.parameters(), lr=opts.meta_lr, momentum=opts.meta_momentum,
                                            nesterov=opts.meta_momentum > 0)
        self.meta_updates = 0
        self.last: dict[str, float] = {}
        self._meta_step = -1
        self._unpublished = False  # a board restored from a checkpoint is re-published at the next step

    # -- schedule --------------------------------------------------------------------------------
    @staticmethod
    def effective_slice(slice_: int, ctx: "Context") -> int:
        """``slice`` (images per board entry; the look-ahead needs two slices of a batch), cut under
        ``--smoke`` to what the smoke batch holds, as the warm-up and ``update_iter`` are."""
        if not ctx.smoke:
            return int(slice_)
        return max(1, min(int(slice_), ctx.data.batch_size // 2))

    @property
    def warmup_epochs(self) -> int:
        return 0 if self.smoke else self.opts.warmup_epochs

    @property
    def update_iter(self) -> int:
        return 1 if self.smoke else self.opts.update_iter

    def active(self, epoch: int) -> bool:
        """Board, distillation and meta updates run from epoch ``warmup_epochs`` on."""
        return epoch >= self.warmup_epochs

    def meta_due(self, epoch: int, step: int) -> bool:
        return self.active(epoch) and step > 0 and step % self.update_iter == 0 and len(self.board) > 0 \
            and self.opts.pick == "meta" and step != self._meta_step

    def check(self, ctx: "Context") -> None:
        """Refuse a setup that cannot work (no val split for the paper's look-ahead or val scoring)."""
        needs_val = self.opts.score == "val" or (self.opts.pick == "meta" and not self.code)
        if needs_val and ctx.data.num_batches("val", drop_last=False) == 0:
            raise NascoreError(
                f"{self.owner}: the val split is empty, but score: val / the paper's meta-update need it",
                hint="set data.val_fraction > 0, or set score: train and compat: cream-code",
            )
        if ctx.data.batch_size < 2 * self.slice:
            raise NascoreError(
                f"{self.owner}: data.batch_size {ctx.data.batch_size} is smaller than 2 x slice ({self.slice})",
                hint="lower slice or raise data.batch_size",
            )

    # -- forwards --------------------------------------------------------------------------------
    @staticmethod
    def forward(net: nn.Module, x: torch.Tensor, arch: Architecture, params: dict[str, torch.Tensor] | None = None,
                grad: bool = False) -> torch.Tensor:
        """Run path ``arch`` on ``x`` (optionally with substituted parameters), BN stats untouched."""
        with frozen_bn(net), torch.set_grad_enabled(grad):
            net.set_active(arch)
            if params is None:
                return net(x)
            return torch.func.functional_call(net, params, (x,))

    def val_batch(self, ctx: "Context", step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The val batch of ``step`` (cycling through the val split, deterministic on resume)."""
        nb = ctx.data.num_batches("val", drop_last=False)
        epoch, start = divmod(step, nb)
        return next(iter(ctx.data.batches("val", epoch=epoch, start=start, limit=start + 1, drop_last=False,
                                          device=ctx.device)))

    # -- teacher selection -----------------------------------------------------------------------
    def candidates(self, arch: Architecture) -> list[int]:
        """Board indices a student may learn from: never itself under paper semantics (KD from
        oneself has zero gradient and only scales CE down) unless it is all there is."""
        idx = list(range(len(self.board)))
        if self.code:
            return idx
        others = [i for i in idx if self.board.entries[i].arch != arch]
        return others or idx

    def select_teacher(
        self, net: nn.Module, arch: Architecture, *, params: dict[str, torch.Tensor] | None = None,
        student_grad: bool = False,
    ) -> tuple[int, torch.Tensor, torch.Tensor]:
        """``(board index, ρ, matching logits)`` for student ``arch``.

        Paper: the entry with the highest matching score, ``ρ = σ(M(d))`` of that entry. Code: the
        same argmax, but ``ρ = σ(−M(d))`` of the *last* entry evaluated (``PrioritizedBoard.py``).
        ``ρ`` carries the graph to ``M`` (and, with ``student_grad``, to the student weights).
        """
        cands = self.candidates(arch)
        if self.opts.pick == "top1":
            return cands[0], torch.tensor(0.5, device=self.device), torch.zeros(0)
        entries = [self.board.entries[i] for i in cands]
        probs = torch.stack([e.probs for e in entries])  # type: ignore[misc]
        if self.code:  # one forward per entry, BN statistics over its `slice` images (the code)
            outs = torch.stack([self.forward(net, e.images, arch, params=params, grad=student_grad)  # type: ignore[arg-type]
                                for e in entries])
        else:  # all entries in one forward (BN statistics over K x slice images; K times fewer calls)
            images = torch.cat([e.images for e in entries])  # type: ignore[misc]
            outs = self.forward(net, images, arch, params=params, grad=student_grad).reshape(probs.shape)
        m = self.meta(F.softmax(outs, dim=2) - probs)
        j = int(torch.argmax(m.detach()))
        rho = torch.sigmoid(-m[-1]) if self.code else torch.sigmoid(m[j])
        return cands[j], rho, m

    # -- the loss --------------------------------------------------------------------------------
    def loss(
        self, net: nn.Module, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, arch: Architecture,
        ctx: "Context", *, epoch: int, step: int, label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """The student's training loss for this step; offers the path to the board afterwards."""
        ce = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        self.last = {}
        if self._unpublished:
            self.publish(ctx)
        if not self.active(epoch):
            return ce
        teacher_logits = None
        loss = ce
        if len(self.board) > 0:
            j, rho, _ = self.select_teacher(net, arch, student_grad=self.code)
            if not self.code:
                rho = rho.detach()
            teacher = self.board.entries[j]
            teacher_logits = self.forward(net, x, teacher.arch)
            kd = soft_cross_entropy(logits, F.softmax(teacher_logits / self.opts.temperature, dim=1),
                                    self.opts.temperature)
            loss = combine(ce, kd, rho)
            self.last = {"rho": float(rho.detach()), "kd": float(kd.detach()), "teacher_score": teacher.score}
        net.set_active(arch)
        self.offer(net, logits, teacher_logits, x, y, arch, ctx, step)
        return loss

    def offer(
        self, net: nn.Module, logits: torch.Tensor, teacher_logits: torch.Tensor | None, x: torch.Tensor,
        y: torch.Tensor, arch: Architecture, ctx: "Context", step: int,
    ) -> str | None:
        """Score the student path and offer it to the board (admission rule in :mod:`board`)."""
        if not ctx.feasible(arch):
            return None
        macs = ctx.cost.macs(arch)
        if self.opts.score == "train":
            score = top1(logits.detach(), y)  # the code: pre-update logits on the training batch
        else:
            xv, yv = self.val_batch(ctx, step)
            score = top1(self.forward(net, xv, arch), yv)
            net.set_active(arch)
        score = mean_across_ranks(ctx, score)  # every rank keeps the same board (the code reduces prec1 too)
        if self.board.would_admit(score, macs) is None and not (self.board.unique and self.board.index_of(arch) is not None):
            return None
        s = self.slice
        # paper: a board path's own softmax on its images (it is the teacher later); code: the
        # teacher's softmax of this step (the path's own for the first entry)
        source = teacher_logits if (self.code and teacher_logits is not None) else logits
        entry = BoardEntry(arch, ctx.space.format(arch), score, int(macs), step,
                           x[:s].detach().clone(), F.softmax(source[:s].detach(), dim=1).clone())
        reason = self.board.offer(entry)
        if reason is not None:
            self.publish(ctx)
        return reason

    # -- the meta-network update -----------------------------------------------------------------
    def scale_meta_lr(self, lr_scale: float) -> float:
        """Follow the student's LR schedule (the code schedules the meta group with the rest)."""
        lr = self.opts.meta_lr * lr_scale
        for g in self.meta_opt.param_groups:
            g["lr"] = lr
        return lr

    def meta_update(
        self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, arch: Architecture, ctx: "Context", *,
        step: int, lr: float, lr_scale: float = 1.0, label_smoothing: float = 0.0,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> dict[str, float]:
        """One meta-network step by the meta-gradient of the look-ahead validation loss.

        Paper (default): ``w' = w − lr·∇_w L_train(w, ρ(θ))`` on the current batch with the
        student's lr (``create_graph``), ``L_val(w')`` on a held-out val batch through
        ``torch.func.functional_call``, ``θ ← θ − η·∂L_val/∂θ``; the student itself is not stepped
        here (it takes its one real step in the trainer). Code (``MetaMatchingNetwork.py``): the
        look-ahead uses only ``ρ·KD`` on images ``[0:slice]`` and the *meta* lr, the student takes an
        extra real step with that gradient (clipped to norm 1; only when ``optimizer`` is given,
        i.e. inside the ``cream`` trainer, before its forward), the val loss is on images
        ``[slice:2·slice]`` at the really-updated weights, and only the first parameter's
        look-ahead reaches ``θ`` (the code's ``grad_outputs`` truncation).
        """
        meta_lr = self.scale_meta_lr(lr_scale)
        named = [(n, p) for n, p in net.active_parameters(arch) if p.requires_grad]
        with twice_differentiable(net):
            if self.code:
                out = self._meta_update_code(net, x, y, arch, ctx, named, meta_lr, optimizer)
            else:
                out = self._meta_update_paper(net, x, y, arch, ctx, named, step, lr, label_smoothing)
        net.set_active(arch)
        self.meta_updates += 1
        self._meta_step = step
        return out

    def _step_meta(self, ctx: "Context", grads: tuple[torch.Tensor | None, ...]) -> None:
        self.meta_opt.zero_grad(set_to_none=True)
        for p, g in zip(self.meta.parameters(), grads):
            p.grad = None if g is None else g.detach().clone()
        ctx.allreduce_grads(self.meta)
        self.meta_opt.step()
        self.meta_opt.zero_grad(set_to_none=True)

    def _meta_update_paper(
        self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, arch: Architecture, ctx: "Context",
        named: list[tuple[str, nn.Parameter]], step: int, lr: float, label_smoothing: float,
    ) -> dict[str, float]:
        j, rho, _ = self.select_teacher(net, arch)  # ρ depends on θ only
        teacher = self.board.entries[j].arch
        t_logits = self.forward(net, x, teacher)
        s_logits = self.forward(net, x, arch, grad=True)
        kd = soft_cross_entropy(s_logits, F.softmax(t_logits / self.opts.temperature, dim=1), self.opts.temperature)
        l_train = combine(F.cross_entropy(s_logits, y, label_smoothing=label_smoothing), kd, rho)
        weights = [p for _, p in named]
        grads = torch.autograd.grad(l_train, weights, create_graph=True, allow_unused=True)
        lookahead = {n: p if g is None else p - lr * g for (n, p), g in zip(named, grads)}
        xv, yv = self.val_batch(ctx, step)
        l_val = F.cross_entropy(self.forward(net, xv, arch, params=lookahead, grad=True), yv)
        meta_grads = torch.autograd.grad(l_val, list(self.meta.parameters()), allow_unused=True)
        self._step_meta(ctx, meta_grads)
        return {"meta_val_loss": float(l_val.detach()), "meta_rho": float(rho.detach())}

    def _meta_update_code(
        self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, arch: Architecture, ctx: "Context",
        named: list[tuple[str, nn.Parameter]], meta_lr: float, optimizer: torch.optim.Optimizer | None,
    ) -> dict[str, float]:
        s = self.slice
        xt, xv, yv = x[:s], x[s:2 * s], y[s:2 * s]
        # the graph is built on copies so the real step below may change the weights in place
        copies = {n: p.detach().clone().requires_grad_(True) for n, p in named}
        j, rho, _ = self.select_teacher(net, arch, params=copies, student_grad=True)
        t_logits = self.forward(net, xt, self.board.entries[j].arch)
        kd = rho * soft_cross_entropy(self.forward(net, xt, arch, params=copies, grad=True),
                                      F.softmax(t_logits, dim=1))
        grads = torch.autograd.grad(kd, list(copies.values()), create_graph=True, allow_unused=True)
        first = next((i for i, g in enumerate(grads) if g is not None), None)
        if first is None:
            return {"meta_rho": float(rho.detach())}
        name0 = named[first][0]
        simulated0 = copies[name0] - meta_lr * grads[first]
        if optimizer is not None:  # the code's update_student_weights_only
            weights = [p for _, p in named]
            saved = [p.grad for p in weights]
            for p, g in zip(weights, grads):
                p.grad = None if g is None else g.detach().clone()
            ctx.allreduce_grads(net)
            torch.nn.utils.clip_grad_norm_([p for p in weights if p.grad is not None], 1.0)
            optimizer.step()
            for p, g in zip(weights, saved):
                p.grad = g
        w0 = dict(named)[name0]
        l_val = F.cross_entropy(self.forward(net, xv, arch, grad=True), yv)
        (g_val0,) = torch.autograd.grad(l_val, [w0], allow_unused=True)
        if g_val0 is None:
            return {"meta_val_loss": float(l_val.detach()), "meta_rho": float(rho.detach())}
        meta_grads = torch.autograd.grad(simulated0, list(self.meta.parameters()), grad_outputs=g_val0,
                                         allow_unused=True)
        self._step_meta(ctx, meta_grads)
        return {"meta_val_loss": float(l_val.detach()), "meta_rho": float(rho.detach())}

    def step_meta_from_loss(self, ctx: "Context") -> None:
        """Code semantics: ρ is not detached, so the training loss also trains ``M`` every step
        (the meta layer is a param group of the code's main optimizer). Apply those gradients."""
        if any(p.grad is not None for p in self.meta.parameters()):
            ctx.allreduce_grads(self.meta)
            self.meta_opt.step()
            self.meta_opt.zero_grad(set_to_none=True)

    # -- persistence -----------------------------------------------------------------------------
    def publish(self, ctx: "Context") -> None:
        """Write the board (JSON: arch strings, scores, MACs) into ``ctx.state`` for selectors."""
        self._unpublished = False
        ctx.state[STATE_KEY] = {
            "stage": ctx.stage_key,
            "owner": self.owner,
            "score": self.opts.score,
            "size": self.board.size,
            "entries": self.board.to_json(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"board": self.board.state_dict(), "meta": self.meta.state_dict(),
                "meta_opt": self.meta_opt.state_dict(), "meta_updates": self.meta_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.board.load_state_dict(state["board"])
        for e in self.board:  # checkpoints hold CPU tensors
            e.images = None if e.images is None else e.images.to(self.device)
            e.probs = None if e.probs is None else e.probs.to(self.device)
        self.meta.load_state_dict(state["meta"])
        self.meta_opt.load_state_dict(state["meta_opt"])
        self.meta_updates = int(state.get("meta_updates", 0))
        self._unpublished = True
