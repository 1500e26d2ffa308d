"""The ``nse`` trainer: gated multi-branch supernet training with α and a MACs penalty (NSE).

Every active op ``o`` of layer ``l`` has a gate that is on with probability ``σ(α[l, o])``; a
layer runs the *sum* of the ops whose gates are on (none on = ``skip``, the identity).

* **Weight steps** (every step, SGD on the train split): each gate is on with probability
  ``sample_rate`` (NSE's ``balance_s_rate`` = 0.5: uniform over the subsets of the active ops),
  one forward/backward through that multi-branch path.
* **α steps** (every ``arch_every`` steps, Adam with β1 = 0 on the ``val`` split, which weight steps
  never see), two estimators (``alpha_estimator``):

  - ``pair`` (default; the official code, ``AMBNet.sampler(arch_update=True)`` + ``forward``): per
    layer the *combination probability* of a subset ``S`` of its active ops is
    ``P(S) = Π_{o∈S} p_o · Π_{o∉S} (1 − p_o)`` with ``p = 0.999·σ(α) + 5e-4``; two distinct valid
    subsets are drawn from it without replacement (the "selected" ``S1`` and "unselected" ``S2``;
    with more than 5 active ops, by redrawing Bernoulli gates, as the code), renormalised to
    ``q_i = P(S_i) / (P(S1) + P(S2))``, and the layer outputs
    ``out(S1)·(q1 + 1 − sg(q1)) + out(S2)·(q2 − sg(q2))``: the forward is the selected subset, α gets
    the gradient of the binary choice between the two. Its MACs term is ``q1·MACs(S1) + q2·MACs(S2)``
    per layer (the code's);
  - ``gate``: gates drawn from ``σ(α)``; each layer runs *all* its active ops mixed with
    straight-through weights ``g + σ(α) − sg(σ(α))`` (``g`` the sampled 0/1 gate), so every α gets
    the gradient of its own op's output (ProxylessNAS-style per-op gates), with the exact
    ``E[MACs] = fixed + Σ_l Σ_o σ(α[l, o])·MACs_l(o)`` from the cost table.

  Loss = CE + ``mac_weight``·(|M − target| / target)^``mac_beta`` with ``M`` the estimator's MACs
  term. NSE writes the penalty as ``mac_alpha·(M − target)^mac_beta`` in raw MACs; dividing by the
  target makes one weight work at any scale (``mac_weight`` ≈ ``mac_alpha``·target² for β = 2).

At the end of the stage α goes to ``ctx.state["nse"]["alpha"]`` for the selector. When the previous
round's selector asked for it (``reinit``), the stage first re-initialises every supernet weight
and BN statistic (``Supernet.reset_parameters``) and starts from α = 0 — NSE's ``re_init()``: what
carries over between rounds is the sub-space and the Pareto architectures, not the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from nascore.arch import Architecture, option_members
from nascore.trainer import SupernetTrainer, TrainerConfig
from nascore_nse.pool import SKIP, NSEPoolSpace, require_pool, sample_gated

#: The code's clamp of the gate probabilities in the pair estimator (``σ(α)·0.999 + 5e-4``).
PAIR_EPS = 5e-4
#: Up to this many active ops a layer's subsets are enumerated and two drawn by their combination
#: probability; above it two distinct valid Bernoulli draws (the code's trade-off).
PAIR_ENUMERATE_MAX = 5
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
    alpha_estimator: Literal["pair", "gate"] = Field(
        "pair", description="α step: pair = the official code (a selected and an unselected subset drawn from the joint "
        "combination probability, STE over the two); gate = a straight-through gate per op")


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

    # -- the pair estimator (official code) -------------------------------------------------------
    def pair_probs(self, alpha: torch.Tensor) -> torch.Tensor:
        """The code's gate probabilities for the pair estimator: ``0.999·σ(α) + 5e-4``."""
        return torch.sigmoid(alpha) * (1 - 2 * PAIR_EPS) + PAIR_EPS

    def comb_prob(self, probs: torch.Tensor, j: int, ops: tuple[str, ...], subset: frozenset[str]) -> torch.Tensor:
        """``P(S) = Π_{o∈S} p_o Π_{o∉S} (1 − p_o)`` over the active ``ops`` of layer ``j`` (code ``_comb_prob``)."""
        terms = [probs[j, self.index[o]] if o in subset else 1 - probs[j, self.index[o]] for o in ops]
        return torch.stack(terms).prod()

    @staticmethod
    def _valid_subsets(space: NSEPoolSpace, j: int) -> list[frozenset[str]]:
        """The space's options of layer ``j`` as op sets (skip: the empty set), in its order."""
        return [frozenset(option_members(o)) - {SKIP} for o in space.layer_options(j)]

    def _pairs(self, space: NSEPoolSpace, probs: torch.Tensor) -> list[tuple[frozenset[str], frozenset[str]] | frozenset[str]]:
        """Per layer a (selected, unselected) pair of distinct valid subsets drawn from the combination
        probability, or the only valid subset of a layer that has one."""
        probs = probs.cpu()  # detached: the many small products and float() reads stay off the device
        out: list[Any] = []
        for j in range(len(space.decisions)):
            ops = space.layer_ops(j)
            valid = self._valid_subsets(space, j)
            if len(valid) <= 1:
                out.append(valid[0] if valid else frozenset())
                continue
            if len(ops) <= PAIR_ENUMERATE_MAX:
                w = [float(self.comb_prob(probs, j, ops, v)) for v in valid]
                first = self.rng.choices(range(len(valid)), weights=w)[0]
                rest = [i for i in range(len(valid)) if i != first]
                second = self.rng.choices(rest, weights=[w[i] for i in rest])[0]
                out.append((valid[first], valid[second]))
                continue
            p = {o: float(probs[j, self.index[o]]) for o in ops}
            ok = set(valid)
            draws: list[frozenset[str]] = []
            while len(draws) < 2:
                s = frozenset(o for o in ops if self.rng.random() < p[o])
                if s in ok and s not in draws:
                    draws.append(s)
            out.append((draws[0], draws[1]))
        return out

    def _pair_mix(self, space: NSEPoolSpace) -> tuple[list[Any], list[torch.Tensor | None], torch.Tensor]:
        """Options, mixing weights and MACs term of one pair-estimator α step (see module docstring)."""
        assert self.alpha is not None
        probs = self.pair_probs(self.alpha)
        pairs = self._pairs(space, probs.detach())
        options: list[Any] = []
        weights: list[torch.Tensor | None] = []
        macs = torch.tensor(self.fixed_macs, device=self.alpha.device)
        for j, pair in enumerate(pairs):
            ops = space.layer_ops(j)
            if isinstance(pair, frozenset):  # one valid subset: runs as is, constant cost
                options.append(space.option(sorted(pair)))
                weights.append(None)
                macs = macs + sum(float(self.macs_table[j][o]) for o in pair)
                continue
            s1, s2 = pair
            p1, p2 = self.comb_prob(probs, j, ops, s1), self.comb_prob(probs, j, ops, s2)
            q1, q2 = p1 / (p1 + p2), p2 / (p1 + p2)
            c1, c2 = q1 + 1 - q1.detach(), q2 - q2.detach()
            members = sorted(set(s1) | set(s2) | ({SKIP} if not s1 or not s2 else set()))
            w = []
            for o in members:
                in1 = (o in s1) if o != SKIP else not s1
                in2 = (o in s2) if o != SKIP else not s2
                w.append(c1 * float(in1) + c2 * float(in2))
            options.append(frozenset(members))
            weights.append(torch.stack(w))
            m1 = sum(float(self.macs_table[j][o]) for o in s1)
            m2 = sum(float(self.macs_table[j][o]) for o in s2)
            macs = macs + q1 * m1 + q2 * m2
        return options, weights, macs

    def _gate_mix(self, space: NSEPoolSpace) -> tuple[list[Any], list[torch.Tensor | None], torch.Tensor]:
        """Options, mixing weights and E[MACs] of one per-op straight-through gate α step."""
        assert self.alpha is not None
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
        return options, weights, self.expected_macs(space, self.alpha)

    def alpha_step(self, ctx: "Context") -> dict[str, float]:
        """One α update on a ``val`` batch (weights untouched), by ``alpha_estimator``."""
        assert self.alpha is not None and self.alpha_opt is not None
        n_val = ctx.data.num_batches("val")
        if n_val == 0:
            return {}
        epoch, b = divmod(self.alpha_steps, n_val)
        x, y = next(iter(ctx.data.batches("val", epoch=epoch, start=b, limit=b + 1, device=ctx.device)))
        space: NSEPoolSpace = ctx.space  # type: ignore[assignment]
        net = ctx.supernet
        mix = self._pair_mix if self.cfg.alpha_estimator == "pair" else self._gate_mix
        options, weights, exp_macs = mix(space)
        net.set_active(Architecture(options), weights=weights)
        logits = net(x)
        ce = F.cross_entropy(logits, y)
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

