"""Ensemble architectures: a split point plus K member paths over a chain space (NEAS).

**Encoding.** An ensemble of a chain space with ``L`` layers is an ordinary
:class:`~nascore.arch.Architecture` of ``1 + K·L`` decisions: ``split`` (options ``s0`` … ``sL``,
the number of shared layers) then each member's ``L`` layer decisions (``m0.layer0`` …). Layers
before the split are shared, so those genes of every member are tied to member 0's; members are
unordered, so the canonical form sorts the member branches. :meth:`EnsembleSpace.canonical` makes
both hold and :meth:`EnsembleSpace.is_valid` accepts only canonical tuples, so every ensemble has
exactly one architecture (one cache key, one string) and the core's sampling, mutation, crossover,
restriction, evaluation, ``results.json`` and export work unchanged. The string writes the shared
prefix once: ``trunk|branch_1|…|branch_K`` (``conv3-conv5|skip-conv3|conv5-conv5`` is split 2).

**Supernet.** :class:`EnsembleSupernet` holds one supernet of the base space (the choice layers are
shared by every member: K-path weight sharing) and K heads (everything after the last layer; member
k always uses head k, initialised independently so identical paths still differ). A forward runs the
trunk once, divides the gradient flowing back into it by K (:class:`GradDivide`, NEAS's
``GradDivHeads``), runs each branch (identical branch prefixes computed once) and returns the mean of
the K logits; the member logits stay in ``member_logits``.

**Child.** :meth:`EnsembleSupernet.child` is one standalone :class:`EnsembleNet`: trunk, K separate
branch copies, K heads, mean of logits. Its MACs/params count the trunk once and every branch:
:class:`EnsembleCostTable` gives them from the base's per-option table plus, per split point, the
fixed cost of one branch (measured once with fvcore), exactly equal to fvcore on the child.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from nascore.arch import Architecture, Option, option_members
from nascore.config import Ref, format_pydantic
from nascore.cost import CostTable, count_params
from nascore.errors import ArchitectureError, ConfigError, NascoreError
from nascore.space import ChoiceLayer, Decision, SearchSpace, Supernet, require_space
from nascore_neas.chain import ChainLayout, chain_layout

SPLIT = "split"


# -- gradient division -------------------------------------------------------------------------
class GradDivide(torch.autograd.Function):
    """Identity forward; the backward divides the gradient by ``k`` (NEAS's ``GradDivHeads``).

    The trunk feeds K branches, so it receives K gradient contributions; dividing keeps its
    effective learning rate that of a single model.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: int) -> torch.Tensor:  # type: ignore[override]
        ctx.k = k
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad / ctx.k, None


def divide_grad(x: torch.Tensor, k: int) -> torch.Tensor:
    """``GradDivide`` when a gradient can flow (skipped under tracing, so export stays pure torch)."""
    if k == 1 or torch.jit.is_tracing() or not (torch.is_grad_enabled() and x.requires_grad):
        return x
    return GradDivide.apply(x, k)


# -- modules ------------------------------------------------------------------------------------
class EnsembleHead(nn.Module):
    """One member's head: copies of the base's head modules and the function applying them."""

    def __init__(self, mods: Sequence[nn.Module], fn: Any) -> None:
        super().__init__()
        self.mods = nn.ModuleList(mods)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(list(self.mods), x)


class BranchSum(nn.Module):
    """A set-valued option in a standalone child: the sum of its ops' outputs."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([op(x) for op in self.ops]).sum(0)


class EnsembleNet(nn.Module):
    """A standalone ensemble: trunk once, K branches with their heads, mean of the K logits.

    The trunk's gradient is divided by K in training as in the supernet (NEAS retrains with the
    same ``GradDivHeads``); ``forward_members`` returns the K logits.
    """

    def __init__(self, trunk: nn.Module, branches: Sequence[nn.Module], heads: Sequence[nn.Module]) -> None:
        super().__init__()
        self.trunk = trunk
        self.branches = nn.ModuleList(branches)
        self.heads = nn.ModuleList(heads)
        self.members = len(self.branches)

    def forward_members(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = divide_grad(self.trunk(x), self.members)
        return [head(branch(h)) for branch, head in zip(self.branches, self.heads)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.forward_members(x)).mean(0)


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _option_key(opt: Option) -> str:
    return "+".join(option_members(opt))


# -- the space ----------------------------------------------------------------------------------
class EnsembleSpace(SearchSpace):
    """Ensembles of K members of a chain ``base`` space sharing their first ``split`` layers."""

    name = "neas_ensemble"

    def __init__(self, base: SearchSpace, members: int = 2, splits: Sequence[int] | None = None) -> None:
        if members < 1:
            raise ConfigError([f"members must be >= 1, got {members}"], source="neas_ensemble space options")
        self.base = base
        self.members = int(members)
        self.layers = len(base.decisions)
        L = self.layers
        split_opts = tuple(f"s{s}" for s in range(L + 1))
        if splits is None:
            split_allowed = split_opts
        else:
            bad = [s for s in splits if not 0 <= s <= L]
            if bad:
                raise ConfigError([f"splits: {bad} outside 0..{L} (the base has {L} layers)"],
                                  source="neas_ensemble space options")
            split_allowed = tuple(f"s{s}" for s in sorted(set(splits)))
        decisions = [Decision(SPLIT, split_opts)]
        allowed: list[tuple[str, ...]] = [split_allowed]
        for k in range(self.members):
            for j, d in enumerate(base.decisions):
                decisions.append(Decision(f"m{k}.{d.name}", d.options, multi=d.multi))
                allowed.append(tuple(base.allowed[j]))
        super().__init__(decisions, input_shape=base.input_shape, num_classes=base.num_classes, allowed=allowed)

    # -- structure ---------------------------------------------------------------------------
    def index(self, member: int, layer: int) -> int:
        """Decision index of ``layer`` of ``member``."""
        return 1 + member * self.layers + layer

    def split_of(self, arch: Architecture) -> int:
        opt = arch[0]
        if not isinstance(opt, str) or not opt.startswith("s") or not opt[1:].isdigit():
            raise ArchitectureError(f"the split decision must be one of s0..s{self.layers}, got {opt!r}")
        return int(opt[1:])

    def member_ops(self, arch: Architecture, member: int) -> tuple[Option, ...]:
        start = self.index(member, 0)
        return tuple(arch.ops[start : start + self.layers])

    def decode(self, arch: Architecture) -> tuple[int, tuple[Option, ...], list[tuple[Option, ...]]]:
        """``(split, trunk ops, [branch ops per member])`` of a canonical ensemble."""
        s = self.split_of(arch)
        trunk = self.member_ops(arch, 0)[:s]
        return s, trunk, [self.member_ops(arch, k)[s:] for k in range(self.members)]

    def member_arch(self, arch: Architecture, member: int) -> Architecture:
        """Member ``member`` as an architecture of the base space (trunk + its branch)."""
        return Architecture(self.member_ops(arch, member))

    def compose(self, split: int, trunk: Sequence[Option], branches: Sequence[Sequence[Option]]) -> Architecture:
        """The canonical ensemble with this trunk and these (unordered) branches."""
        if len(branches) != self.members:
            raise ArchitectureError(f"an ensemble of this space has {self.members} members, got {len(branches)}")
        ops: list[Any] = [f"s{split}"]
        for b in sorted((tuple(b) for b in branches), key=lambda b: tuple(_option_key(o) for o in b)):
            ops.extend(list(trunk) + list(b))
        return Architecture(ops)

    def canonical(self, arch: Architecture) -> Architecture:
        """Tie every member's shared layers to member 0's and sort the member branches."""
        s = self.split_of(arch)
        trunk = self.member_ops(arch, 0)[:s]
        return self.compose(s, trunk, [self.member_ops(arch, k)[s:] for k in range(self.members)])

    def is_valid(self, arch: Architecture) -> bool:
        try:
            if self.canonical(arch) != arch:
                return False
        except ArchitectureError:
            return False
        return all(self.base.is_valid(self.member_arch(arch, k)) for k in range(self.members))

    def layer_allowed(self, layer: int) -> tuple[str, ...]:
        """Options of ``layer`` allowed for every member (member decisions are restricted alike)."""
        sets = [self.allowed[self.index(k, layer)] for k in range(self.members)]
        common = set(sets[0]).intersection(*sets[1:])
        return tuple(o for o in sets[0] if o in common)

    def split_allowed(self) -> tuple[int, ...]:
        return tuple(int(o[1:]) for o in self.allowed[0])

    def restrict_layers(self, allowed: Mapping[int, Iterable[str]]) -> "EnsembleSpace":
        """Restrict base layer ``j`` to the given ops for every member at once (shrinking)."""
        mapping: dict[int | str, Iterable[str]] = {}
        for j, ops in allowed.items():
            ops = list(ops)
            for k in range(self.members):
                mapping[self.index(k, j)] = ops
        return self.restrict(mapping)  # type: ignore[return-value]

    def restrict_splits(self, splits: Iterable[int]) -> "EnsembleSpace":
        return self.restrict({0: [f"s{s}" for s in splits]})  # type: ignore[return-value]

    # -- sampling and variation ----------------------------------------------------------------
    def _draw(self, rng: random.Random, options: Sequence[str], p: Mapping[str, float] | None) -> str:
        if p is None:
            return options[rng.randrange(len(options))]
        weights = [float(p.get(o, 0.0)) for o in options]
        if sum(weights) <= 0:
            weights = [1.0] * len(options)
        return rng.choices(list(options), weights=weights)[0]

    def sample(
        self,
        rng: random.Random,
        probs: Sequence[Mapping[str, float] | None] | None = None,
        max_tries: int = 1000,
    ) -> Architecture:
        """Uniform split point, then K member paths drawn uniformly per layer (canonicalised)."""
        for _ in range(max_tries):
            s = int(self._draw(rng, self.allowed[0], probs[0] if probs else None)[1:])
            layer_opts = [self.layer_allowed(j) for j in range(self.layers)]
            pr = (lambda j: probs[self.index(0, j)]) if probs else (lambda j: None)  # noqa: E731
            trunk = [self._draw(rng, layer_opts[j], pr(j)) for j in range(s)]
            branches = [[self._draw(rng, layer_opts[j], pr(j)) for j in range(s, self.layers)]
                        for _ in range(self.members)]
            arch = self.compose(s, trunk, branches)
            if self.is_valid(arch):
                return arch
        raise ArchitectureError(f"no valid ensemble drawn from {self.name!r} in {max_tries} tries")

    def mutate(self, arch: Architecture, p: float, rng: random.Random) -> Architecture:
        """Redraw the split and each member gene with probability ``p``; canonicalise."""
        ops = list(arch.ops)
        if rng.random() < p:
            ops[0] = self.allowed[0][rng.randrange(len(self.allowed[0]))]
        for k in range(self.members):
            for j in range(self.layers):
                if rng.random() < p:
                    opts = self.layer_allowed(j)
                    ops[self.index(k, j)] = opts[rng.randrange(len(opts))]
        return self.canonical(Architecture(ops))

    def mutate_split(self, arch: Architecture, rng: random.Random) -> Architecture:
        """Move the split point to a neighbouring allowed one (members keep their paths)."""
        splits = self.split_allowed()
        s = self.split_of(arch)
        near = [t for t in splits if t != s]
        if not near:
            return arch
        closest = min(abs(t - s) for t in near)
        t = rng.choice([t for t in near if abs(t - s) == closest])
        return self.canonical(arch.replace(0, f"s{t}"))

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        """Member-level crossover: a split from either parent, K whole member paths from both."""
        s = self.split_of(a if rng.random() < 0.5 else b)
        pool = [self.member_ops(a, k) for k in range(self.members)] + [self.member_ops(b, k) for k in range(self.members)]
        chosen = rng.sample(pool, self.members)
        trunk = chosen[rng.randrange(self.members)][:s]
        return self.compose(s, trunk, [m[s:] for m in chosen])

    def enumerate(self) -> Iterator[Architecture]:
        """Every canonical ensemble, split by split (for small spaces)."""
        layer_opts = [self.layer_allowed(j) for j in range(self.layers)]
        for s in self.split_allowed():
            tails = sorted(itertools.product(*layer_opts[s:]), key=lambda b: tuple(_option_key(o) for o in b))
            for trunk in itertools.product(*layer_opts[:s]):
                for branches in itertools.combinations_with_replacement(tails, self.members):
                    arch = self.compose(s, trunk, branches)
                    if all(self.base.is_valid(self.member_arch(arch, k)) for k in range(self.members)):
                        yield arch

    def size(self) -> int:
        """Number of distinct ensembles: per split, trunks × multisets of K branches."""
        sizes = [len(self.layer_allowed(j)) for j in range(self.layers)]
        total = 0
        for s in self.split_allowed():
            n_branch = math.prod(sizes[s:])
            total += math.prod(sizes[:s]) * math.comb(n_branch + self.members - 1, self.members)
        return total

    def describe(self) -> str:
        return (f"{self.name}: {self.members} members over {self.base.name} ({self.layers} layers), "
                f"splits {list(self.split_allowed())}, {self.size():,} ensembles")

    # -- strings ---------------------------------------------------------------------------------
    def format(self, arch: Architecture) -> str:
        """``trunk|branch_1|…|branch_K``, each a ``-``-joined op list (the trunk written once)."""
        s, trunk, branches = self.decode(arch)
        parts = ["-".join(_option_key(o) for o in trunk)]
        parts += ["-".join(_option_key(o) for o in b) for b in branches]
        return "|".join(parts)

    def parse(self, text: str) -> Architecture:
        parts = text.strip().split("|")
        example = self.format(self.first())
        if len(parts) != self.members + 1:
            raise ArchitectureError(
                f"{text!r} has {len(parts) - 1} member branch(es), this ensemble space has {self.members}",
                hint=f"write trunk|branch_1|...|branch_{self.members}, e.g. {example!r}",
            )

        def ops(part: str) -> list[Any]:
            if not part:
                return []
            return [frozenset(p.split("+")) if "+" in p else p for p in part.split("-")]

        trunk = ops(parts[0])
        s = len(trunk)
        branches = [ops(p) for p in parts[1:]]
        for i, b in enumerate(branches):
            if len(b) != self.layers - s:
                raise ArchitectureError(
                    f"{text!r}: branch {i + 1} has {len(b)} ops, but a trunk of {s} leaves {self.layers - s} layers",
                    hint=f"e.g. {example!r}",
                )
        return self.check(self.compose(s, trunk, branches))

    # -- building --------------------------------------------------------------------------------
    def build_supernet(self) -> "EnsembleSupernet":
        return EnsembleSupernet(self)

    def cost_table(self, input_shape: Sequence[int] | None = None) -> "EnsembleCostTable":
        shape = tuple(int(v) for v in (input_shape or self.input_shape))
        key = ("ensemble", shape)
        if key not in self._cost_tables:
            self._cost_tables[key] = EnsembleCostTable.build(self, shape)
        return self._cost_tables[key]


def is_ensemble_space(space: Any) -> bool:
    return isinstance(space, EnsembleSpace)


def require_ensemble(space: Any, who: str) -> EnsembleSpace:
    return require_space(space, EnsembleSpace, who,
                         hint="set `space: {name: neas_ensemble, options: {base: tiny_chain, members: 2}}`")


# -- the supernet -------------------------------------------------------------------------------
class EnsembleSupernet(Supernet):
    """The base supernet (choice layers shared by all members) plus one head per member."""

    def __init__(self, space: EnsembleSpace) -> None:
        super().__init__(space)
        self.members = space.members
        self.base = space.base.build_supernet()
        self.layout: ChainLayout = chain_layout(self.base, space.layers, space.base.name)
        heads = []
        for k in range(self.members):
            head = EnsembleHead([copy.deepcopy(self.base.get_submodule(p)) for p in self.layout.head],
                                self.layout.head_fn)
            if k > 0:
                _reset(head)  # members start different, so identical paths do not stay identical
            heads.append(head)
        self.heads = nn.ModuleList(heads)
        for p in self.layout.head:  # the base's own head is replaced by the members' heads
            _set_submodule(self.base, p, nn.Identity())
        self.member_logits: list[torch.Tensor] = []  # detached logits of the last forward, per member

    # -- paths ---------------------------------------------------------------------------------
    def set_active(self, arch: Architecture, weights: Sequence[torch.Tensor | None] | None = None) -> None:
        if self.is_child:
            return
        self.space.split_of(arch)
        self.base.set_active(self.space.member_arch(arch, 0))
        self._active = arch

    def _run(self, path: str, dec: int | None, option: Option | None, x: torch.Tensor) -> torch.Tensor:
        module = self.base.get_submodule(path)
        if dec is None:
            return module(x)
        assert isinstance(module, ChoiceLayer) and option is not None
        if isinstance(option, str):
            return module.candidates[option](x)
        return torch.stack([module.candidates[o](x) for o in option_members(option)]).sum(0)

    def forward_members(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The K members' logits of the active ensemble (trunk run once, grad ÷ K)."""
        arch = self._active
        if arch is None:
            raise NascoreError("the ensemble supernet has no active architecture", hint="call set_active(arch) first")
        space: EnsembleSpace = self.space  # type: ignore[assignment]
        s, trunk, branches = space.decode(arch)
        pos = self.layout.split_position(s)
        h = x
        for path, dec in self.layout.items[:pos]:
            h = self._run(path, dec, trunk[dec] if dec is not None else None, h)
        h = divide_grad(h, self.members)
        cache: dict[tuple, torch.Tensor] = {}
        outs = []
        for k, branch in enumerate(branches):
            key: tuple = ()
            hk = h
            for path, dec in self.layout.items[pos:]:
                opt = branch[dec - s] if dec is not None else None
                key = key + ((path, opt),)
                if key not in cache:
                    cache[key] = self._run(path, dec, opt, hk)
                hk = cache[key]
            outs.append(self.heads[k](hk))
        self.member_logits = [o.detach() for o in outs]
        return outs

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.forward_members(x)).mean(0)

    # -- parameters ------------------------------------------------------------------------------
    def _chosen(self, arch: Architecture) -> list[set[str]]:
        space: EnsembleSpace = self.space  # type: ignore[assignment]
        s, trunk, branches = space.decode(arch)
        chosen: list[set[str]] = [set() for _ in range(space.layers)]
        for j, opt in enumerate(trunk):
            chosen[j].update(option_members(opt))
        for b in branches:
            for i, opt in enumerate(b):
                chosen[s + i].update(option_members(opt))
        return chosen

    def _inactive(self, arch: Architecture) -> list[nn.Parameter]:
        """Candidates no member uses (a layer's op is active if the trunk or any branch runs it)."""
        out: list[nn.Parameter] = []
        for chosen, layers in zip(self._chosen(arch), self.base.candidate_parameters()):
            for layer in layers:
                for name, params in layer.items():
                    if name not in chosen:
                        out.extend(params)
        return out

    # -- children --------------------------------------------------------------------------------
    def _pick(self, path: str, dec: int | None, option: Option | None) -> nn.Module:
        module = self.base.get_submodule(path)
        if dec is None:
            return copy.deepcopy(module)
        assert option is not None
        if isinstance(option, str):
            return copy.deepcopy(module.candidates[option])
        return BranchSum([copy.deepcopy(module.candidates[o]) for o in option_members(option)])

    def child(self, arch: Architecture, inherit: bool = True) -> nn.Module:
        """One standalone :class:`EnsembleNet` (trunk once, K branch copies, K heads)."""
        space: EnsembleSpace = self.space  # type: ignore[assignment]
        space.check(arch)
        s, trunk, branches = space.decode(arch)
        pos = self.layout.split_position(s)
        trunk_mods = [self._pick(p, d, trunk[d] if d is not None else None) for p, d in self.layout.items[:pos]]
        branch_mods = [
            nn.Sequential(*[self._pick(p, d, b[d - s] if d is not None else None) for p, d in self.layout.items[pos:]])
            for b in branches
        ]
        heads = [copy.deepcopy(h) for h in self.heads]
        net = EnsembleNet(nn.Sequential(*trunk_mods), branch_mods, heads)
        net.train(self.training)
        if not inherit:
            _reset(net)
        return net


# -- costs --------------------------------------------------------------------------------------
def _opt_cost(table: Mapping[str, int], opt: Option) -> int:
    if isinstance(opt, str):
        return table[opt]
    return sum(table[o] for o in opt)


@attrs.frozen
class EnsembleCostTable:
    """MACs/params of ensembles: the trunk counted once, every member branch counted.

    ``cost = base fixed part + Σ trunk ops + Σ_k Σ branch ops + (K−1)·B(split)`` where ``B(s)`` is
    the fixed cost of one branch from split ``s`` (fixed modules after the split and the head),
    measured once per split with fvcore. Same interface as :class:`nascore.cost.CostTable`
    (``cost``, ``macs``, ``params``, ``bounds``, ``to_json``).
    """

    input_shape: tuple[int, ...]
    members: int
    layers: int
    base: CostTable
    branch_macs: tuple[int, ...]
    branch_params: tuple[int, ...]

    def _sum(self, arch: Architecture, which: str) -> int:
        table = self.base.macs_table if which == "macs" else self.base.params_table
        fixed = self.base.fixed_macs if which == "macs" else self.base.fixed_params
        branch = self.branch_macs if which == "macs" else self.branch_params
        K, L = self.members, self.layers
        s = int(arch[0][1:])  # type: ignore[index]
        total = fixed + (K - 1) * branch[s]
        ops = arch.ops
        for j in range(s):
            total += _opt_cost(table[j], ops[1 + j])
        for k in range(K):
            base = 1 + k * L
            for j in range(s, L):
                total += _opt_cost(table[j], ops[base + j])
        return total

    def macs(self, arch: Architecture) -> int:
        return self._sum(arch, "macs")

    def params(self, arch: Architecture) -> int:
        return self._sum(arch, "params")

    def cost(self, arch: Architecture) -> tuple[int, int]:
        """``(macs, params)`` of the ensemble child, exact with fvcore."""
        return self._sum(arch, "macs"), self._sum(arch, "params")

    def bounds(self, allowed: Sequence[Sequence[str]] | None = None) -> tuple[int, int, int, int]:
        """(min MACs, max MACs, min params, max params) over the ensembles ``allowed`` admits."""
        K, L = self.members, self.layers
        if allowed is None:
            allowed = [[f"s{s}" for s in range(L + 1)]] + [list(t) for _ in range(K) for t in self.base.macs_table]
        splits = [int(o[1:]) for o in allowed[0]]
        out = []
        for table, fixed, branch in ((self.base.macs_table, self.base.fixed_macs, self.branch_macs),
                                     (self.base.params_table, self.base.fixed_params, self.branch_params)):
            per_layer = [[table[j][o] for o in allowed[1 + j]] for j in range(L)]
            lo = [min(v) for v in per_layer]
            hi = [max(v) for v in per_layer]
            mins = [fixed + (K - 1) * branch[s] + sum(lo[:s]) + K * sum(lo[s:]) for s in splits]
            maxs = [fixed + (K - 1) * branch[s] + sum(hi[:s]) + K * sum(hi[s:]) for s in splits]
            out += [min(mins), max(maxs)]
        return out[0], out[1], out[2], out[3]

    def to_json(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "members": self.members,
            "base": self.base.to_json(),
            "branch_fixed": {"macs": list(self.branch_macs), "params": list(self.branch_params)},
            "definition": "fixed + trunk ops + all member branch ops + (K-1) * branch_fixed[split]",
        }

    @classmethod
    def build(cls, space: EnsembleSpace, input_shape: Sequence[int]) -> "EnsembleCostTable":
        """The base table plus ``B(s)``, from one fvcore trace of a split-0 reference ensemble.

        With split 0 a member's branch holds every item after the stem part; fvcore's per-module
        count of that branch's fixed modules and of its head gives ``B(s)`` for every ``s`` (the
        fixed items from the split on, plus the head). The table is checked against fvcore on
        whole ensembles in the tests.
        """
        shape = tuple(int(v) for v in input_shape)
        base = space.base.cost_table(shape)
        K, L = space.members, space.layers
        if K == 1:
            zeros = tuple(0 for _ in range(L + 1))
            return cls(shape, K, L, base, zeros, zeros)
        ref = space.base.first()
        net = space.build_supernet().eval()
        child = net.child(space.compose(0, (), [ref.ops] * K))
        per = _fvcore_by_module(child, shape)
        layout = net.layout
        start = layout.split_position(0)
        branch = child.branches[0]
        head_m, head_p = int(per.get("heads.0", 0)), count_params(child.heads[0])
        fixed_m = [0] * len(layout.items)
        fixed_p = [0] * len(layout.items)
        for pos in range(start, len(layout.items)):
            if layout.items[pos][1] is None:
                fixed_m[pos] = int(per.get(f"branches.0.{pos - start}", 0))
                fixed_p[pos] = count_params(branch[pos - start])
        bm = tuple(head_m + sum(fixed_m[layout.split_position(s):]) for s in range(L + 1))
        bp = tuple(head_p + sum(fixed_p[layout.split_position(s):]) for s in range(L + 1))
        return cls(shape, K, L, base, bm, bp)


def _fvcore_by_module(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """fvcore MACs per submodule of ``model`` (eval mode, one input of ``input_shape``)."""
    from nascore.cost import fvcore_macs_by_module

    return fvcore_macs_by_module(model, input_shape)


# -- the registered space -----------------------------------------------------------------------
class EnsembleSpaceConfig(BaseModel):
    """Options of the ``neas_ensemble`` space: K members over a chain space, sharing a trunk."""

    model_config = ConfigDict(extra="forbid")
    base: Ref = Field(default_factory=lambda: Ref(name="tiny_chain"),
                      description="the chain space of each member: {name, options} (tiny_chain, mobilenet)")
    members: int = Field(2, ge=1, le=8, description="K, models in the ensemble (NEAS: 2)")
    splits: list[int] | None = Field(None, description="allowed split points = shared layers (null: 0..L)")

    @field_validator("base")
    @classmethod
    def _not_self(cls, v: Ref) -> Ref:
        if v.name == "neas_ensemble":
            raise ValueError("an ensemble space cannot be its own base")
        return v


def make_ensemble_space(cfg: EnsembleSpaceConfig, ctx: Any = None) -> EnsembleSpace:
    """Build the base space through the registry (its options validated), then wrap it."""
    registry = getattr(ctx, "registry", None)
    if registry is None:
        from nascore.registry import get_registry

        registry = get_registry()
    comp = registry.get("space", cfg.base.name)
    try:
        opts = comp.config.model_validate(cfg.base.options)
    except ValidationError as e:
        raise ConfigError(format_pydantic(e, prefix="space.options.base.options"), source="neas_ensemble space") from None
    base = comp.build(opts, ctx)
    if any(d.multi for d in base.decisions):
        raise ConfigError([f"space.options.base: {cfg.base.name!r} has set-valued decisions; NEAS ensembles need a chain space"],
                          source="neas_ensemble space")
    return EnsembleSpace(base, members=cfg.members, splits=cfg.splits)
