"""The ``nse`` trainer: gated multi-branch supernet training with α and a MACs penalty (NSE).

Every active op ``o`` of layer ``l`` has a gate that is on with probability ``σ(α[l, o])``; a
layer runs the *sum* of the ops whose gates are on (none on = ``skip``, the identity).

* **Weight steps** (every step, SGD on the train split): each gate is on with probability
  ``sample_rate`` (NSE's ``balance_s_rate`` = 0.5: uniform over the subsets of the active ops),
  one forward/backward through that multi-branch path.
* **α steps** (every ``arch_every`` steps, Adam with β1 = 0 on the ``val`` split, which weight steps
  never see): gates drawn from ``σ(α)``; each layer runs *all* its active ops mixed with
  straight-through weights ``g + σ(α) − sg(σ(α))`` (``g`` the sampled 0/1 gate), so the forward is
  the sampled path while every α gets the gradient of its op's output (ProxylessNAS-style binary
  gates). Loss = CE + ``mac_weight``·(|E[MACs] − target| / target)^``mac_beta``, where
  ``E[MACs] = fixed + Σ_l Σ_o σ(α[l, o])·MACs_l(o)`` from the cost table: exact for multi-branch
  layers, whose MACs add up over their ops, and differentiable in α. NSE writes the penalty as
  ``mac_alpha·(E − target)^mac_beta`` in raw MACs; dividing by the target makes one weight work at
  any scale (``mac_weight`` ≈ ``mac_alpha``·target² for β = 2).

At the end of the stage α goes to ``ctx.state["nse"]["alpha"]`` for the selector. When the previous
round's selector asked for it (``reinit``), the stage first re-initialises every supernet weight
and BN statistic (``Supernet.reset_parameters``) and starts from α = 0 — NSE's ``re_init()``: what
carries over between rounds is the sub-space and the Pareto architectures, not the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import Field

from nascore.arch import Architecture
from nascore.trainer import SupernetTrainer, TrainerConfig
from nascore_nse.pool import SKIP, NSEPoolSpace, require_pool, sample_gated
from nascore_nse.state import ensure_state

if TYPE_CHECKING:
    from nascore.roles import Context


class NseTrainerConfig(TrainerConfig):
    """Options of the ``nse`` trainer (the shared loop's options plus gates, α and the MACs penalty)."""

    sample_rate: float = Field(0.5, gt=0, lt=1, description="gate probability of weight steps (NSE balance_s_rate)")
    arch_every: int = Field(2, ge=0, description="an α step every this many weight steps (NSE Aiter; 0 = no α learning)")
    alpha_lr: float = Field(0.005, gt=0, description="Adam learning rate of α (NSE: 0.005)")
    alpha_beta2: float = Field(0.999, ge=0, lt=1, description="Adam β2 of α (β1 is 0, as NSE)")
    mac_target: float | None = Field(None, gt=0, description="MACs target (null: constraint.macs_max, else E[MACs] at σ=0.5)")
    mac_weight: float = Field(1.0, ge=0, description="weight of the MACs penalty (relative error to the target)")
    mac_beta: float = Field(2.0, gt=0, description="exponent of the MACs penalty (NSE: 2)")
    reinit: bool = Field(True, description="re-initialise weights and α when a new NSE round starts (NSE re_init)")


class NseTrainer(SupernetTrainer):
    """Gated multi-branch training with α (see module docstring)."""

    Config = NseTrainerConfig

    def __init__(self, cfg: NseTrainerConfig, ctx: "Context | None" = None) -> None:
        super().__init__(cfg, ctx)
        self.cfg: NseTrainerConfig = cfg
        self.alpha: torch.Tensor | None = None
        self.alpha_opt: torch.optim.Optimizer | None = None
        self.alpha_steps = 0
        self.reinitialised = False

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, ctx: "Context") -> None:
        pool = require_pool(ctx.base_space, "trainer 'nse'")
        ns = ensure_state(ctx)
        self.index = {o: i for i, o in enumerate(pool.pool)}
        if ns.get("reinit") and self.cfg.reinit:
            ctx.supernet.reset_parameters()
            ns["reinit"] = False
            ns["alpha"] = None
            self.reinitialised = True
            ctx.log.event("nse_reinit", stage=ctx.stage_key, round=ns["round"])
        # α lives in a module of its own so the core can average its gradient across ranks
        self.alpha_module = torch.nn.ParameterDict(
            {"alpha": torch.nn.Parameter(torch.zeros(len(pool.decisions), len(pool.pool), device=ctx.device))})
        self.alpha = self.alpha_module["alpha"]
        self.alpha_opt = torch.optim.Adam([self.alpha], lr=self.cfg.alpha_lr, betas=(0.0, self.cfg.alpha_beta2))
        self.alpha_steps = 0
        table = ctx.cost
        self.fixed_macs = float(table.fixed_macs)
        self.macs_table = [dict(t) for t in table.macs_table]
        self.target = self.mac_target(ctx)

    def mac_target(self, ctx: "Context") -> float:
        if self.cfg.mac_target is not None:
            return float(self.cfg.mac_target)
        if ctx.constraint.macs_max is not None:
            return float(ctx.constraint.macs_max)
        with torch.no_grad():
            return float(self.expected_macs(ctx.space, torch.zeros_like(self.alpha)))  # type: ignore[arg-type]

    def expected_macs(self, space: NSEPoolSpace, alpha: torch.Tensor) -> torch.Tensor:
        """``fixed + Σ_l Σ_o σ(α[l, o])·MACs_l(o)`` over the active ops (differentiable in α)."""
        total = torch.tensor(self.fixed_macs, device=alpha.device)
        probs = torch.sigmoid(alpha)
        for j in range(len(space.decisions)):
            for o in space.layer_ops(j):
                total = total + probs[j, self.index[o]] * float(self.macs_table[j][o])
        return total

    # -- steps ---------------------------------------------------------------------------------
    def sample_arch(self, ctx: "Context") -> Architecture:
        space: NSEPoolSpace = ctx.space  # type: ignore[assignment]
        rate = self.cfg.sample_rate
        return sample_gated(space, self.rng, [{o: rate for o in space.layer_ops(j)} for j in range(len(space.decisions))])

    def train_step(self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, total: int) -> dict[str, float]:
        out = super().train_step(ctx, x, y, total)
        if self.cfg.arch_every and self.step % self.cfg.arch_every == 0 and "skipped" not in out:
            out.update(self.alpha_step(ctx))
        return out

    def _gates(self, space: NSEPoolSpace, probs: torch.Tensor) -> list[set[str]]:
        """Per layer, the ops whose gates are on, drawn from ``σ(α)`` with ``self.rng``."""
        p = [{o: float(probs[j, self.index[o]]) for o in space.layer_ops(j)} for j in range(len(space.decisions))]
        return space.ops_of(sample_gated(space, self.rng, p))

    def alpha_step(self, ctx: "Context") -> dict[str, float]:
        """One straight-through α update on a ``val`` batch (weights untouched)."""
        assert self.alpha is not None and self.alpha_opt is not None
        n_val = ctx.data.num_batches("val")
        if n_val == 0:
            return {}
        epoch, b = divmod(self.alpha_steps, n_val)
        x, y = next(iter(ctx.data.batches("val", epoch=epoch, start=b, limit=b + 1, device=ctx.device)))
        space: NSEPoolSpace = ctx.space  # type: ignore[assignment]
        net = ctx.supernet
        probs = torch.sigmoid(self.alpha)
        gates = self._gates(space, probs.detach())
        options: list[Any] = []
        weights: list[torch.Tensor | None] = []
        for j, on in enumerate(gates):
            members = sorted(list(space.layer_ops(j)) + ([SKIP] if SKIP in space.allowed[j] else []))
            if len(members) == 1:
                options.append(members[0])
                weights.append(None)
                continue
            w = []
            for o in members:
                if o == SKIP:
                    w.append(torch.tensor(0.0 if on else 1.0, device=probs.device))
                else:
                    p = probs[j, self.index[o]]
                    w.append((1.0 if o in on else 0.0) + p - p.detach())
            options.append(frozenset(members))
            weights.append(torch.stack(w))
        net.set_active(Architecture(options), weights=weights)
        logits = net(x)
        ce = F.cross_entropy(logits, y)
        exp_macs = self.expected_macs(space, self.alpha)
        penalty = self.cfg.mac_weight * ((exp_macs - self.target).abs() / self.target) ** self.cfg.mac_beta
        loss = ce + penalty
        (grad,) = torch.autograd.grad(loss, [self.alpha])
        self.alpha_opt.zero_grad(set_to_none=True)
        self.alpha.grad = grad
        ctx.allreduce_grads(self.alpha_module)  # same α on every rank (gates are drawn from self.rng)
        self.alpha_opt.step()
        self.alpha_steps += 1
        net.set_active(space.first())  # clear the mixing weights
        return {"alpha_ce": float(ce.detach()), "exp_macs": float(exp_macs.detach()), "mac_penalty": float(penalty.detach())}

    # -- state -----------------------------------------------------------------------------------
    def alpha_json(self, space: NSEPoolSpace) -> list[dict[str, float]]:
        assert self.alpha is not None
        a = self.alpha.detach().cpu()
        return [{o: float(a[j, self.index[o]]) for o in space.pool} for j in range(len(space.decisions))]

    def fit(self, ctx: "Context") -> None:
        super().fit(ctx)
        ns = ensure_state(ctx)
        ns["alpha"] = self.alpha_json(ctx.base_space)  # type: ignore[arg-type]
        ctx.log.event("nse_alpha", stage=ctx.stage_key, round=ns["round"], alpha=ns["alpha"])

    def extra_state(self) -> dict[str, Any]:
        assert self.alpha is not None and self.alpha_opt is not None
        return {"alpha": self.alpha.detach().clone(), "alpha_opt": self.alpha_opt.state_dict(),
                "alpha_steps": self.alpha_steps}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "alpha" not in state or self.alpha is None or self.alpha_opt is None:
            return
        with torch.no_grad():
            self.alpha.copy_(state["alpha"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.alpha_steps = int(state["alpha_steps"])

