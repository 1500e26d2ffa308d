"""The ``spos`` trainer: Single Path One-Shot supernet training with three path samplers.

In the core (not in nascore-spos) because other methods' recipes train with it (ABS, Cream, RLNAS):
a plugin must install alone on top of the core, so nothing a second plugin needs may live in a plugin.

One path per optimizer step, forward and backward through it only (the base
:class:`nascore.trainer.SupernetTrainer` loop). What differs is which path:

* ``uniform`` (paper): every decision drawn uniformly, i.e. uniform over the architectures.
* ``flops_binned`` (official code, ``src/Supernet/train.py::get_uniform_sample_cand``): pick one of
  ``bins`` equal-width MACs bins uniformly, then rejection-sample uniform architectures until one
  falls in it (MACs from the cost table, bins inclusive at both ends as in the code); after
  ``max_tries`` (500) misses, take an unconstrained uniform architecture. The code's bins are fixed
  (290–360 MFLOPs in 10M steps around its 330M target); ours span ``bin_range``, by default the
  2 %–98 % quantiles of the space's MACs under uniform sampling.
* ``fair`` (FairNAS strict fairness, Chu et al. 2019): every option of every decision is trained
  exactly equally often. A *cycle* draws, per decision, a random permutation of its options (with
  ``L = lcm`` of the option counts, ``L/n`` permutations concatenated for a decision of ``n``
  options) and yields the ``L`` paths made of the columns; after every full cycle each (decision,
  option) pair has been the active one exactly ``L/n`` times. By default one path is one optimizer
  step (so the counts are exact at cycle boundaries, and off by at most one inside a cycle).
  FairNAS itself accumulates the gradients of all ``m`` paths of a cycle on the *same batch* and
  then takes one step (every op updated exactly once per step); ``fair_accumulate: true`` does that
  (one step per batch costs ``L`` forward/backward passes; gradients are summed, not averaged, as
  in the FairNAS code, so the shared stem/head get ``L`` contributions).

Inactive parameters never drift: the base loop clears the gradients of every unused candidate
before the optimizer step (``null_inactive_grads``), so SGD skips them entirely — no weight decay,
no momentum. In accumulate mode only the parameters unused by *all* paths of the step are cleared.

Defaults follow the official code where it is explicit: linear LR decay, plain (non-Nesterov)
momentum 0.9, weight decay 4e-5 on conv/linear weights only (``decay_only_weights``), label
smoothing 0.1.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, model_validator

from nascore.arch import Architecture, option_members
from nascore.errors import ConfigError
from nascore.trainer import SupernetTrainer, TrainerConfig

if TYPE_CHECKING:
    from nascore.roles import Context

#: Enumerate the space exactly (instead of sampling) to place the MACs bins when it is this small.
EXACT_BINS_LIMIT = 20_000
#: Uniform draws used to estimate the MACs quantiles of a large space.
BIN_PROBE_SAMPLES = 4000
#: A fair cycle longer than this (lcm of the option counts) is refused.
MAX_FAIR_CYCLE = 10_000


class SposConfig(TrainerConfig):
    """Options of the ``spos`` trainer (the shared loop's options plus the sampler)."""

    sampler: Literal["uniform", "flops_binned", "fair"] = Field(
        "uniform", description="uniform (paper), flops_binned (official code: uniform over MACs bins), "
        "fair (FairNAS strict fairness: every option of every layer trained equally often)")
    bins: int = Field(7, gt=0, description="flops_binned: number of equal-width MACs bins (code: 7 bins of 10M)")
    bin_range: tuple[float, float] | None = Field(
        None, description="flops_binned: [low, high] MACs spanned by the bins; null: bin_quantiles of the space")
    bin_quantiles: tuple[float, float] = Field(
        (0.02, 0.98), description="flops_binned: quantiles of the space's MACs that bound the bins when bin_range is null")
    max_tries: int = Field(500, gt=0, description="flops_binned: draws per step before an unconstrained arch (code: 500)")
    bin_cost: Literal["macs", "latency_ms"] = Field(
        "macs", description="flops_binned: the cost the bins span (latency_ms: the run's predicted latency, "
        "needs constraint.latency_table); bins from the space's quantiles are clipped to the constraint's bounds on it")
    fair_accumulate: bool = Field(
        False, description="fair: accumulate the gradients of a whole cycle on one batch, then one step (FairNAS code)")
    decay_only_weights: bool = Field(
        True, description="weight decay on conv/linear weights only, not on BN/bias (SPOS code's get_parameters)")
    # official-code defaults that differ from the shared loop's
    schedule: Literal["cosine", "linear", "constant"] = Field("linear", description="LR schedule (SPOS code: linear to 0)")
    nesterov: bool = Field(False, description="Nesterov momentum (SPOS code: plain momentum)")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing (SPOS code: 0.1)")

    @model_validator(mode="after")
    def _check(self) -> "SposConfig":
        if self.bin_range is not None and not 0 <= self.bin_range[0] < self.bin_range[1]:
            raise ValueError(f"bin_range must be [low, high] with 0 <= low < high, got {list(self.bin_range)}")
        lo, hi = self.bin_quantiles
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"bin_quantiles must satisfy 0 <= low < high <= 1, got {[lo, hi]}")
        if self.fair_accumulate and self.sampler != "fair":
            raise ValueError("fair_accumulate needs sampler: fair")
        on = [name for name, value in (("amp", self.amp != "off"), ("channels_last", self.channels_last),
                                        ("ema_decay", self.ema_decay is not None),
                                        ("grad_accum_steps", self.grad_accum_steps > 1)) if value]
        if self.fair_accumulate and on:  # its own step loop (one step per fair cycle) would ignore them
            raise ValueError(f"fair_accumulate does not support {', '.join(on)}: set fair_accumulate: false "
                             "(one step per path) or switch them off")
        return self


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile of an already sorted list."""
    if not sorted_values:
        raise ValueError("quantile of an empty list")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def fair_cycle(allowed: list[tuple[str, ...]] | tuple[tuple[str, ...], ...], rng: random.Random) -> list[Architecture]:
    """One strict-fairness cycle: ``L = lcm(option counts)`` paths in which each option of a
    decision with ``n`` options appears exactly ``L / n`` times (random permutations)."""
    length = math.lcm(*(len(a) for a in allowed))
    if length > MAX_FAIR_CYCLE:
        raise ConfigError([
            f"sampler fair: the option counts {sorted({len(a) for a in allowed})} give a cycle of {length} paths "
            f"(> {MAX_FAIR_CYCLE}); strict fairness needs every layer to cycle through its options together"
        ], source="trainer spos")
    columns = []
    for options in allowed:
        seq: list[str] = []
        for _ in range(length // len(options)):
            perm = list(options)
            rng.shuffle(perm)
            seq += perm
        columns.append(seq)
    return [Architecture([col[j] for col in columns]) for j in range(length)]


class SposTrainer(SupernetTrainer):
    """SPOS single-path training with ``uniform``, ``flops_binned`` or ``fair`` sampling."""

    Config = SposConfig

    def __init__(self, cfg: SposConfig, ctx: "Context | None" = None) -> None:
        super().__init__(cfg, ctx)
        self.cfg: SposConfig = cfg
        self.edges: list[float] = []
        self.queue: list[Architecture] = []
        self.bin_hits: list[int] = []
        self.fallbacks = 0
        self.samples = 0
        self.cycles = 0

    # -- setup -------------------------------------------------------------------------------
    def setup(self, ctx: "Context") -> None:
        if self.cfg.sampler == "flops_binned":
            self.edges = self.bin_edges(ctx)
            self.bin_hits = [0] * (len(self.edges) - 1)
            ctx.log.event("spos_bins", stage=ctx.stage_key, edges=self.edges)

    def bin_edges(self, ctx: "Context") -> list[float]:
        """``bins + 1`` equal-width MACs edges over ``bin_range`` (or the space's quantiles)."""
        cfg = self.cfg
        if cfg.bin_range is not None:
            lo, hi = float(cfg.bin_range[0]), float(cfg.bin_range[1])
        else:
            space, table = ctx.space, ctx.cost
            if space.size() <= EXACT_BINS_LIMIT:
                macs = sorted(self.bin_value(table, a) for a in space.enumerate())
            else:
                probe = random.Random(ctx.stage_seed("spos-bins"))
                macs = sorted(self.bin_value(table, space.sample(probe)) for _ in range(BIN_PROBE_SAMPLES))
            lo, hi = quantile(macs, cfg.bin_quantiles[0]), quantile(macs, cfg.bin_quantiles[1])
            c = ctx.constraint
            bound_lo, bound_hi = ((c.latency_ms_min, c.latency_ms_max) if cfg.bin_cost == "latency_ms"
                                  else (c.macs_min, c.macs_max))
            if bound_hi is not None and lo < bound_hi < hi:
                hi = float(bound_hi)
            if bound_lo is not None and lo < bound_lo < hi:
                lo = float(bound_lo)
            if hi <= lo:
                hi = lo + (1.0 if cfg.bin_cost == "macs" else 1e-3)
        return [lo + (hi - lo) * i / cfg.bins for i in range(cfg.bins + 1)]

    def bin_value(self, table: Any, arch: Architecture) -> float:
        """The binned cost of ``arch``: its MACs, or its predicted latency (ms)."""
        if self.cfg.bin_cost == "macs":
            return float(table.macs(arch))
        lat = table.latency_ms(arch) if hasattr(table, "latency_ms") else None
        if lat is None:
            raise ConfigError(["bin_cost: latency_ms needs constraint.latency_table (a table from "
                               "`nascore lut build SPACE`)"], source="spos trainer")
        return float(lat)

    # -- clearing the gradients of unused ops -------------------------------------------------
    def op_params(self, ctx: "Context") -> list[list[dict[str, tuple[torch.nn.Parameter, ...]]]]:
        """Per decision, per bound choice layer: ``{op: its parameters}`` (cached by the supernet)."""
        return ctx.supernet.candidate_parameters()

    def unused_params(self, ctx: "Context", archs: list[Architecture]) -> list[torch.nn.Parameter]:
        """Parameters of the candidates that none of ``archs`` uses (same set as the supernet's
        ``inactive_parameters`` for one architecture)."""
        used = {id(p) for a in archs for n, p in ctx.supernet.active_parameters(a)} if len(archs) > 1 else None
        out = []
        for i, layers in enumerate(self.op_params(ctx)):
            chosen = {o for a in archs for o in option_members(a.ops[i])}
            for layer in layers:
                for op, params in layer.items():
                    if op not in chosen:
                        out.extend(p for p in params if used is None or id(p) not in used)
        return out

    def parameters(self, ctx: "Context") -> Any:
        if not self.cfg.decay_only_weights:
            return ctx.supernet.parameters()
        decay, no_decay = [], []
        for name, p in ctx.supernet.named_parameters():
            (decay if name.endswith("weight") and p.dim() > 1 else no_decay).append(p)
        groups = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    # -- sampling ----------------------------------------------------------------------------
    def sample_arch(self, ctx: "Context") -> Architecture:
        self.samples += 1
        sampler = self.cfg.sampler
        if sampler == "uniform":
            return ctx.space.sample(self.rng)
        if sampler == "fair":
            if not self.queue:
                self.queue = fair_cycle(ctx.space.allowed, self.rng)
                self.cycles += 1
            return self.queue.pop(0)
        return self._sample_binned(ctx)

    def _sample_binned(self, ctx: "Context") -> Architecture:
        if not self.edges:
            self.setup(ctx)
        space, table = ctx.space, ctx.cost
        b = self.rng.randrange(len(self.edges) - 1)
        lo, hi = self.edges[b], self.edges[b + 1]
        for _ in range(self.cfg.max_tries):
            arch = space.sample(self.rng)
            if lo <= self.bin_value(table, arch) <= hi:
                self.bin_hits[b] += 1
                return arch
        self.fallbacks += 1
        return space.sample(self.rng)

    # -- state -------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            "queue": [a.to_json() for a in self.queue],
            "edges": list(self.edges),
            "bin_hits": list(self.bin_hits),
            "fallbacks": self.fallbacks,
            "samples": self.samples,
            "cycles": self.cycles,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.queue = [Architecture.from_json(a) for a in state.get("queue", [])]
        if state.get("edges"):
            self.edges = [float(e) for e in state["edges"]]
        self.bin_hits = [int(v) for v in state.get("bin_hits", self.bin_hits)]
        self.fallbacks = int(state.get("fallbacks", 0))
        self.samples = int(state.get("samples", 0))
        self.cycles = int(state.get("cycles", 0))

    def after_step(self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, arch: Architecture,
                   logits: torch.Tensor, loss: torch.Tensor) -> dict[str, float]:
        if self.cfg.sampler == "flops_binned":
            return {"fallbacks": float(self.fallbacks)}
        return {}

    # -- FairNAS gradient accumulation -------------------------------------------------------
    def train_step(self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, total: int) -> dict[str, float]:
        if not self.cfg.fair_accumulate:
            return super().train_step(ctx, x, y, total)
        return self._accumulate_step(ctx, x, y, total)

    def _accumulate_step(self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, total: int) -> dict[str, float]:
        """One optimizer step on a whole fair cycle: backward each path on the same batch, sum."""
        net, opt = ctx.supernet, self.optimizer
        assert opt is not None
        archs = [self.sample_arch(ctx)]
        while self.queue:
            archs.append(self.sample_arch(ctx))
        self.set_lr(total)
        opt.zero_grad(set_to_none=True)
        losses, accs = [], []
        loss = logits = None
        for arch in archs:
            ctx.check_same_arch(arch)
            net.set_active(arch)
            loss, logits = self.compute_loss(ctx, x, y, arch)
            if not torch.isfinite(loss):
                ctx.log.event("nan", step=self.step, arch=ctx.space.format(arch), loss=float(loss))
                if self.cfg.on_nan == "skip":
                    opt.zero_grad(set_to_none=True)
                    self.step += 1
                    return {"skipped": 1.0}
                raise self.diverged(ctx, f"the training loss became {float(loss)}", arch)
            loss.backward()
            losses.append(float(loss.detach()))
            with torch.no_grad():
                accs.append((logits.argmax(1) == y).float().mean().item())
        if self.cfg.null_inactive_grads:
            for p in self.unused_params(ctx, archs):
                p.grad = None
        ctx.allreduce_grads(net)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], self.cfg.grad_clip)
        opt.step()
        self.step += 1
        out = {"loss": sum(losses) / len(losses), "acc": sum(accs) / len(accs), "lr": opt.param_groups[0]["lr"],
               "paths": float(len(archs))}
        assert loss is not None and logits is not None
        out.update(self.after_step(ctx, x, y, archs[-1], logits, loss))
        return out
