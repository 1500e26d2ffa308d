"""Mixed-op (sub-space) training and architecture parameters α, shared by α-based methods.

Several methods run a *sub-space* of the supernet rather than one path: every decision holds a set
of ops whose outputs are summed or mixed with weights (DARTS's "joint" network). TNAS warms up such
a network and then fine-tunes many child sub-supernets briefly; SETN trains α on the validation
split with the softmax(α)-mixed network; NSE has an α step too. This module gives them one
implementation of the pieces they share:

* :class:`ArchAlpha` — α, one logit per (decision, option) of the *base* space, with softmax mixing
  weights for set-valued options, log-probabilities of architectures, top-K enumeration, and a
  JSON form stored under ``ctx.state["alpha"]`` (:data:`ALPHA_STATE_KEY`) so a later search stage
  (SETN's top-K selector, TNAS's α-grouped operation tree) can read what a trainer learned.
* :func:`subspace_arch` — the architecture standing for a whole (restricted) space: each decision
  holds the set of its allowed ops.
* :func:`train_steps` — "train this path or sub-space for n steps": a fresh SGD optimizer over the
  active parameters (inherited weights), deterministic batches, optional α trained jointly.
* :func:`path_accuracy` — accuracy/loss of a path or sub-space on a split without disturbing the
  supernet's BatchNorm statistics.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nascore.arch import Architecture, option_members
from nascore.errors import NascoreError
from nascore.evaluate import bn_state, load_bn_state
from nascore.trainer import diverged, lr_factor, stage_field

ALPHA_STATE_KEY = "alpha"


def subspace_arch(space: Any) -> Architecture:
    """The architecture of a whole (restricted) space: each decision holds all its allowed ops."""
    return Architecture([frozenset(a) if len(a) > 1 else a[0] for a in space.allowed])


def subspace_members(space: Any, arch: Architecture) -> Iterator[Architecture]:
    """Every valid single-op architecture inside the sub-space ``arch`` (a set per decision)."""
    for ops in itertools.product(*(option_members(o) for o in arch.ops)):
        member = Architecture(ops)
        if space.is_valid(member):
            yield member


def subspace_size(arch: Architecture) -> int:
    """Number of single-op architectures in ``arch`` (valid or not)."""
    return math.prod(len(option_members(o)) for o in arch.ops)


class ArchAlpha(nn.Module):
    """Architecture parameters α: one logit per option of every decision of the base space.

    Stored as one padded ``(decisions, max options)`` parameter so a single optimizer (and a
    checkpoint) holds it; padding entries are never read. Options are those of the *base* space's
    decisions, so α survives restriction (shrinking, TNAS's sub-spaces).
    """

    def __init__(
        self,
        space: Any,
        init_std: float = 1e-3,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.decisions = [d.name for d in space.decisions]
        self.options: list[tuple[str, ...]] = [tuple(d.options) for d in space.decisions]
        self.space_name = str(getattr(space, "name", "space"))
        width = max(len(o) for o in self.options)
        init = torch.randn(len(self.options), width, generator=generator) * init_std
        self.alpha = nn.Parameter(init)
        self._index = [{o: k for k, o in enumerate(opts)} for opts in self.options]

    # -- reading --------------------------------------------------------------------------------
    def logits(self, i: int, members: Sequence[str] | None = None) -> torch.Tensor:
        """α of decision ``i`` for ``members`` (default: all its options), in that order."""
        names = self.options[i] if members is None else members
        idx = torch.as_tensor([self._index[i][m] for m in names], device=self.alpha.device)
        return self.alpha[i].index_select(0, idx)

    def values(self, i: int) -> dict[str, float]:
        """α of decision ``i`` as ``{option: value}`` (for grouping and logs)."""
        row = self.alpha.detach()[i].tolist()
        return {o: float(row[k]) for k, o in enumerate(self.options[i])}

    def probs(self, i: int, members: Sequence[str] | None = None) -> dict[str, float]:
        names = list(self.options[i] if members is None else members)
        p = torch.softmax(self.logits(i, names).detach(), 0).tolist()
        return dict(zip(names, p))

    def mix_weights(self, arch: Architecture) -> list[torch.Tensor | None]:
        """Softmax(α) over each set-valued option's members (``None`` for single ops).

        Aligned with :func:`nascore.arch.option_members` (sorted), which is the order
        :meth:`nascore.space.Supernet.set_active` mixes in; differentiable in α.
        """
        out: list[torch.Tensor | None] = []
        for i, opt in enumerate(arch.ops):
            if isinstance(opt, frozenset):
                out.append(torch.softmax(self.logits(i, option_members(opt)), 0))
            else:
                out.append(None)
        return out

    def log_probs(self) -> list[dict[str, float]]:
        """Per decision ``{option: log softmax(α)}`` over all its base options."""
        with torch.no_grad():
            return [
                dict(zip(opts, torch.log_softmax(self.alpha[i, : len(opts)].detach().cpu(), 0).tolist()))
                for i, opts in enumerate(self.options)
            ]

    def log_prob(self, arch: Architecture, table: list[dict[str, float]] | None = None) -> float:
        """Σ over decisions of log softmax(α) of the chosen op (all base options normalise)."""
        table = table if table is not None else self.log_probs()
        total = 0.0
        for i, opt in enumerate(arch.ops):
            if isinstance(opt, frozenset):
                raise NascoreError("log_prob needs a single-op architecture, got a set-valued one")
            total += table[i][opt]
        return total

    def top_k(self, space: Any, k: int, accept: Callable[[Architecture], bool] | None = None) -> list[tuple[Architecture, float]]:
        """The ``k`` architectures of ``space`` with the highest log-probability (best first).

        Enumerates the (small) space; ties are broken by the space's enumeration order.
        """
        table = self.log_probs()
        scored = [(a, self.log_prob(a, table)) for a in space.enumerate() if accept is None or accept(a)]
        order = sorted(range(len(scored)), key=lambda j: (-scored[j][1], j))
        return [scored[j] for j in order[: max(k, 0)]]

    def argmax_arch(self, space: Any) -> Architecture:
        """Per decision the allowed op with the largest α (DARTS's derived architecture)."""
        ops = []
        for i, allowed in enumerate(space.allowed):
            vals = self.values(i)
            ops.append(max(allowed, key=lambda o: vals[o]))
        return Architecture(ops)

    # -- state ----------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON-able form (what ``ctx.state[ALPHA_STATE_KEY]`` holds)."""
        vals = self.alpha.detach().cpu().tolist()
        return {
            "space": self.space_name,
            "decisions": list(self.decisions),
            "options": [list(o) for o in self.options],
            "values": [row[: len(o)] for row, o in zip(vals, self.options)],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`to_state`; refuses α learned on a space with other decisions/options."""
        if [list(o) for o in self.options] != [list(o) for o in state.get("options", [])]:
            raise NascoreError(
                f"α in the run state was learned on a space with other decisions/options "
                f"({state.get('space', '?')}: {len(state.get('options', []))} decisions) than {self.space_name!r}",
                hint="train α on the same space (with the same ops) as the search stage that reads it",
            )
        with torch.no_grad():
            for i, row in enumerate(state["values"]):
                self.alpha[i, : len(row)] = torch.as_tensor(row, dtype=self.alpha.dtype)

    @classmethod
    def from_state(cls, space: Any, state: dict[str, Any]) -> "ArchAlpha":
        a = cls(space, init_std=0.0)
        a.load_state(state)
        return a

    @classmethod
    def from_context(cls, ctx: Any, who: str) -> "ArchAlpha":
        """α stored in ``ctx.state`` by an α-learning trainer; a clear error if there is none."""
        state = ctx.state.get(ALPHA_STATE_KEY)
        if not state:
            raise NascoreError(
                f"{who} needs architecture parameters α, but no earlier stage of this run learned any",
                hint="put a train stage with an α-learning trainer (setn, tnas_warmup) before this search stage",
            )
        return cls.from_state(ctx.base_space, state)


def _batches_for(ctx: Any, split: str, steps: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` training batches of ``split``, cycling through epochs ``epoch``, ``epoch+1``, …"""
    nb = ctx.data.num_batches(split)
    if nb == 0 and steps > 0:
        raise NascoreError(f"split {split!r} has no full batch of {ctx.data.batch_size}", hint="lower data.batch_size")
    done = 0
    e = epoch
    while done < steps:
        for xb in ctx.data.batches(split, epoch=e, limit=min(nb, steps - done), device=ctx.device):
            yield xb
            done += 1
        e += 1


def train_steps(
    ctx: Any,
    arch: Architecture,
    steps: int,
    *,
    lr: float = 0.025,
    lr_min: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    grad_clip: float | None = 5.0,
    epoch: int = 0,
    split: str = "train",
    alpha: ArchAlpha | None = None,
    train_alpha: bool = False,
) -> dict[str, float]:
    """Train ``ctx.supernet`` on the path or sub-space ``arch`` for ``steps`` SGD steps.

    A fresh SGD optimizer (nesterov momentum, as TNAS's per-child training) updates only the
    parameters ``arch`` uses, starting from the supernet's current (inherited) weights. Set-valued
    options are summed, or mixed with softmax(α) when ``alpha`` is given; with ``train_alpha`` α
    is trained jointly (weight decay 0, as TNAS's code). Batches come from ``split`` in the
    deterministic order of ``epoch`` (then ``epoch+1`` …), so siblings compared against each
    other see the same data. Returns the mean loss and accuracy over the steps.
    """
    net = ctx.supernet
    params = [p for _, p in net.active_parameters(arch) if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": params, "weight_decay": weight_decay}]
    if alpha is not None and train_alpha:
        groups.append({"params": [alpha.alpha], "weight_decay": 0.0})
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    net.train()
    loss_sum, acc_sum, n = 0.0, 0.0, 0
    for step, (x, y) in enumerate(_batches_for(ctx, split, steps, epoch)):
        f = lr_factor(step, steps, schedule)
        for g in opt.param_groups:
            g["lr"] = lr_min + (lr - lr_min) * f
        weights = alpha.mix_weights(arch) if alpha is not None else None
        if weights is not None and not train_alpha:
            weights = [w.detach() if w is not None else None for w in weights]
        net.set_active(arch, weights=weights)
        opt.zero_grad(set_to_none=True)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):  # the selector's per-child training (TNAS): its lr is a selector option
            raise diverged(f"the loss became {float(loss)} while training {ctx.space.format(arch)}",
                           stage=ctx.stage_key, step=step, what="training a path", lr=lr,
                           lr_field=stage_field(ctx.stage_key, "selector.options.lr"))
        loss.backward()
        ctx.allreduce_grads(net)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], grad_clip)
        opt.step()
        loss_sum += float(loss.detach())
        acc_sum += float((logits.argmax(1) == y).float().mean())
        n += 1
    net.set_active(arch)  # drop references to α's graph
    loss_sum, acc_sum, ranks = _sum_over_ranks(ctx, loss_sum, acc_sum, 1.0)
    return {"loss": loss_sum / max(n * ranks, 1), "acc": acc_sum / max(n * ranks, 1), "steps": float(n)}


@torch.no_grad()
def path_accuracy(
    ctx: Any,
    arch: Architecture,
    *,
    split: str = "archval",
    batches: int | None = None,
    bn: str = "batch",
    alpha: ArchAlpha | None = None,
    shuffle: bool = False,
    epoch: int = 0,
    start: int = 0,
    batch_size: int | None = None,
) -> tuple[float, float]:
    """(accuracy, mean loss) of the path or sub-space ``arch`` on ``split``.

    Reads ``batches`` batches (all when ``None``) of ``batch_size`` (default: the evaluation batch
    size) from batch ``start`` of the split in its ``epoch`` order (``shuffle``) or in index order.
    ``bn="batch"`` normalises with each batch's statistics (NB201 search cells without running
    stats, as TNAS and SETN run them); ``"stored"`` uses running statistics. BatchNorm buffers are
    restored afterwards, so scoring never changes the supernet. In a distributed run each rank
    scores its shard and the counts are summed, so every rank gets (and decides on) the same number.
    """
    net = ctx.supernet
    weights = alpha.mix_weights(arch) if alpha is not None else None
    net.set_active(arch, weights=weights)
    saved = bn_state(net)
    was = net.training
    net.train(bn == "batch")
    correct, total, loss_sum = 0.0, 0.0, 0.0
    try:
        for x, y in ctx.data.batches(
                split, shuffle=shuffle, epoch=epoch, start=start, batch_size=batch_size or ctx.data.eval_batch_size,
                drop_last=False, limit=None if batches is None else start + batches, device=ctx.device):
            logits = net(x)
            correct += float((logits.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            total += float(y.numel())
    finally:
        net.train(was)
        load_bn_state(net, saved)
        net.set_active(arch)
    correct, total, loss_sum = _sum_over_ranks(ctx, correct, total, loss_sum)
    if total == 0:
        return math.nan, math.nan
    return correct / total, loss_sum / total


def _sum_over_ranks(ctx: Any, *values: float) -> tuple[float, ...]:
    """Sum per-rank partial results, so every rank scores (and decides) identically."""
    dist = getattr(ctx, "dist", None)
    if dist is None or not dist.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    torch.distributed.all_reduce(t)
    return tuple(float(v) for v in t.tolist())
