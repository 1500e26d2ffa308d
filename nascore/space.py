"""Search spaces and weight-sharing supernets.

A :class:`SearchSpace` is an ordered list of :class:`Decision` s (a layer of a chain, an edge of a
cell), each with its options (op names). It samples, mutates, crosses, enumerates and validates
architectures, and can be *restricted* (options removed per decision, for shrinking methods) without
changing the supernet it builds: a restricted space and its parent build identical supernets, so
weights carry over between them.

A :class:`Supernet` holds every candidate op of every decision in :class:`ChoiceLayer` s and runs
any architecture's path with shared weights. Its contract (what trainers, evaluators and selectors
may rely on):

* ``set_active(arch)`` then ``forward(x)`` (or ``forward(x, arch)``) runs exactly that path. An
  option may be a set of ops: their outputs are summed, or mixed with ``weights`` (DARTS-style).
* ``active_parameters(arch)`` lists ``(name, parameter)`` of that path in ``named_parameters()``
  order (fixed parts and chosen candidates; nothing of unchosen candidates). This *documented order*
  is what the angle metric (ABS, RLNAS) builds its weight vector from.
* ``snapshot()`` / ``load_snapshot()`` copy all weights (W0 for angles, clones for tree search).
* ``child(arch, inherit=True)`` builds a standalone module for ``arch`` whose output equals the
  supernet path's on the same input (in eval mode); ``inherit=False`` re-initialises it.

A *chain* supernet (each decision is one layer, run in order) may also define ``chain_layout()``
returning a :class:`ChainLayout`: the modules ``forward_path`` runs, in order. Evaluators use it to
compute the layers shared by candidates with a common prefix once (``accuracy``'s
``share_prefixes``), NEAS to cut an ensemble's trunk. It is optional: without it (cells) everything
runs paths whole.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import torch
from torch import nn

from nascore.arch import Architecture, Option, option_members
from nascore.errors import ArchitectureError, ConstraintError, NascoreError


@attrs.frozen
class Decision:
    """One decision of a space: its name and the options (op names) it may take.

    ``multi=True`` marks decisions whose value may be a set of ops (multi-branch layers); the
    plain samplers still draw single ops from them.
    """

    name: str
    options: tuple[str, ...] = attrs.field(converter=tuple)
    multi: bool = False


def _width_options(values: Iterable[Any]) -> tuple[str, ...]:
    out = tuple(str(int(v)) for v in values)
    if not out or any(int(v) < 1 for v in out) or len(set(out)) != len(out):
        raise ArchitectureError(f"a width decision needs distinct positive channel counts, got {list(out)}")
    return out


@attrs.frozen
class WidthDecision(Decision):
    """A decision whose options are channel counts (``"48"``), run by slicing max-width weights.

    The supernet builds the layers it sets from :mod:`nascore.width` modules at the largest
    option, naming this decision as their ``in_source``/``out_source``; ``set_active`` sets
    their widths, ``child`` exports plain layers of the chosen widths. Never multi-valued.

    ``channels`` (optional) makes the options *labels* of those channel counts, one each
    (``WidthDecision("width", ("w25", "w50"), channels=(4, 8))``: PWKD's width multipliers keep
    their names in architecture strings); without it the options are the counts themselves.
    """

    channels: tuple[int, ...] = attrs.field(default=None, kw_only=True)  # None: the options are the counts

    def __attrs_post_init__(self) -> None:
        if self.channels is None:
            object.__setattr__(self, "options", _width_options(self.options))
            object.__setattr__(self, "channels", tuple(int(o) for o in self.options))
        else:
            labels = tuple(str(o) for o in self.options)
            counts = _width_options(self.channels)  # distinct positive counts
            if len(labels) != len(counts) or len(set(labels)) != len(labels) or any(not o for o in labels):
                raise ArchitectureError(f"width decision {self.name!r}: {len(labels)} labels {list(labels)} for "
                                        f"{len(counts)} channel counts {list(counts)}",
                                        hint="give one distinct, non-empty option label per channel count")
            object.__setattr__(self, "options", labels)
            object.__setattr__(self, "channels", tuple(int(c) for c in counts))
        if self.multi:
            raise ArchitectureError(f"width decision {self.name!r} cannot be multi-valued")

    @property
    def max_channels(self) -> int:
        return max(self.channels)

    def channels_of(self, option: str) -> int:
        """The channel count of ``option`` (an error naming the options if it is not one)."""
        try:
            return self.channels[self.options.index(option)]
        except ValueError:
            raise ArchitectureError(f"width decision {self.name!r} has no option {option!r}",
                                    hint=f"options are: {', '.join(self.options)}") from None


def width_options(base: int, scales: Sequence[float], minimum: int = 1, divisor: int = 1) -> tuple[str, ...]:
    """Channel counts ``round(base * scale)`` (to a multiple of ``divisor``, at least ``minimum``),
    deduplicated in order: the options of a :class:`WidthDecision` from channel scales (SPOS)."""
    out: list[str] = []
    for sc in scales:
        c = max(minimum, int(round(base * float(sc) / divisor)) * divisor)
        if str(c) not in out:
            out.append(str(c))
    return tuple(out)


class SearchSpace:
    """Base class of every search space (see module docstring).

    Subclasses pass their decisions to ``__init__`` and implement :meth:`build_supernet`; cells
    override :meth:`is_valid`, :meth:`format` and :meth:`parse`. ``input_shape`` (C, H, W) and
    ``num_classes`` describe what the supernet eats and predicts.
    """

    name: str = "space"

    def __init__(
        self,
        decisions: Sequence[Decision],
        *,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        allowed: Sequence[Sequence[str]] | None = None,
    ) -> None:
        self.decisions: tuple[Decision, ...] = tuple(decisions)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = int(num_classes)
        if allowed is None:
            allowed = [d.options for d in self.decisions]
        self.allowed: tuple[tuple[str, ...], ...] = tuple(tuple(a) for a in allowed)
        self._cost_tables: dict[tuple, Any] = {}

    # -- description -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.decisions)

    def describe(self) -> str:
        return f"{self.name}: {len(self.decisions)} decisions, {self.size():,} architectures"

    def size(self) -> int:
        """Number of architectures (valid ones, exactly, when the space is small enough)."""
        key = self.allowed
        cached = self.__dict__.get("_size_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        total = math.prod(len(a) for a in self.allowed)
        if total <= 200_000 and type(self).is_valid is not SearchSpace.is_valid:
            total = sum(1 for _ in self.enumerate())
        self._size_cache = (key, total)
        return total

    def decision_index(self, key: int | str) -> int:
        if isinstance(key, int):
            if not 0 <= key < len(self.decisions):
                raise ArchitectureError(f"decision index {key} out of range 0..{len(self.decisions) - 1}")
            return key
        for i, d in enumerate(self.decisions):
            if d.name == key:
                return i
        raise ArchitectureError(
            f"no decision named {key!r} in space {self.name!r}",
            hint=f"decisions are: {', '.join(d.name for d in self.decisions)}",
        )

    # -- sampling and variation --------------------------------------------------------------
    def sample(
        self,
        rng: random.Random,
        probs: Sequence[Mapping[str, float] | None] | None = None,
        max_tries: int = 1000,
    ) -> Architecture:
        """A random valid architecture of the (restricted) space.

        Uniform per decision unless ``probs`` gives per-option weights for a decision (Cream's op
        prior, SETN's α); invalid draws (cells with no input-output path) are redrawn, which keeps
        the draw uniform over the valid architectures.
        """
        for _ in range(max_tries):
            ops = []
            for i, allowed in enumerate(self.allowed):
                p = probs[i] if probs is not None else None
                if p is None:
                    ops.append(allowed[rng.randrange(len(allowed))])
                else:
                    weights = [float(p.get(o, 0.0)) for o in allowed]
                    if sum(weights) <= 0:
                        weights = [1.0] * len(allowed)
                    ops.append(rng.choices(allowed, weights=weights)[0])
            arch = Architecture(ops)
            if self.is_valid(arch):
                return arch
        raise ArchitectureError(f"no valid architecture drawn from {self.name!r} in {max_tries} tries")

    def mutate(self, arch: Architecture, p: float, rng: random.Random) -> Architecture:
        """Redraw each decision with probability ``p`` (the SPOS mutation)."""
        for _ in range(100):  # redraw until valid (cells whose output is cut off are not)
            ops = list(arch.ops)
            for i, allowed in enumerate(self.allowed):
                if rng.random() < p:
                    ops[i] = allowed[rng.randrange(len(allowed))]
            child = Architecture(ops)
            if self.is_valid(child):
                return child
        return arch

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        """Take each decision from either parent with probability 1/2."""
        for _ in range(100):
            child = Architecture([x if rng.random() < 0.5 else y for x, y in zip(a.ops, b.ops)])
            if self.is_valid(child):
                return child
        return a

    def enumerate(self) -> Iterator[Architecture]:
        """Every valid architecture of the (restricted) space, in a fixed order."""
        for ops in itertools.product(*self.allowed):
            arch = Architecture(ops)
            if self.is_valid(arch):
                yield arch

    # -- validity ----------------------------------------------------------------------------
    def is_valid(self, arch: Architecture) -> bool:
        """Structural validity (a cell whose output is cut off is not); chains are always valid."""
        return True

    def contains(self, arch: Architecture) -> bool:
        """Is ``arch`` an architecture of this (restricted) space?"""
        if len(arch) != len(self.allowed):
            return False
        for opt, allowed in zip(arch.ops, self.allowed):
            if not set(option_members(opt)) <= set(allowed):
                return False
        return self.is_valid(arch)

    def check(self, arch: Architecture) -> Architecture:
        """Return ``arch`` or raise an :class:`ArchitectureError` saying which decision is wrong."""
        if len(arch) != len(self.decisions):
            raise ArchitectureError(
                f"architecture has {len(arch)} decisions, space {self.name!r} has {len(self.decisions)}"
            )
        for i, (opt, d, allowed) in enumerate(zip(arch.ops, self.decisions, self.allowed)):
            bad = [o for o in option_members(opt) if o not in allowed]
            if bad:
                raise ArchitectureError(
                    f"decision {i} ({d.name}): option {bad[0]!r} is not allowed",
                    hint=f"allowed options: {', '.join(allowed)}",
                )
            if isinstance(opt, frozenset) and not d.multi and not getattr(self, "allow_sets", False):
                raise ArchitectureError(f"decision {i} ({d.name}) takes one op, got a set {sorted(opt)}")
        if not self.is_valid(arch):
            raise ArchitectureError(f"{self.format(arch)!r} is not a valid architecture of {self.name!r}")
        return arch

    # -- restriction (shrinking, TNAS, NSE) --------------------------------------------------
    def restrict(self, allowed: Mapping[int | str, Iterable[str]]) -> "SearchSpace":
        """A copy whose decisions allow only the given options (others unchanged).

        The copy builds the same supernet as ``self``; only sampling, enumeration and validity
        change. Removing every option of a decision is refused.
        """
        new = list(self.allowed)
        for key, options in allowed.items():
            i = self.decision_index(key)
            opts = tuple(o for o in self.decisions[i].options if o in set(options))
            unknown = set(options) - set(self.decisions[i].options)
            if unknown:
                raise ArchitectureError(
                    f"decision {i} ({self.decisions[i].name}): unknown option(s) {sorted(unknown)}",
                    hint=f"options are: {', '.join(self.decisions[i].options)}",
                )
            if not opts:
                raise ArchitectureError(f"restricting decision {i} ({self.decisions[i].name}) would leave it empty")
            new[i] = opts
        clone = copy.copy(self)
        clone.allowed = tuple(new)
        return clone

    def allowed_json(self) -> list[list[str]]:
        return [list(a) for a in self.allowed]

    # -- strings ---------------------------------------------------------------------------
    def format(self, arch: Architecture) -> str:
        """Canonical string: options joined by ``-``; a set of ops is ``a+b`` (sorted)."""
        return "-".join("+".join(option_members(o)) for o in arch.ops)

    def parse(self, text: str) -> Architecture:
        """Inverse of :meth:`format`; raises :class:`ArchitectureError` naming the bad part."""
        parts = text.strip().split("-")
        if len(parts) != len(self.decisions):
            raise ArchitectureError(
                f"{text!r} has {len(parts)} parts, space {self.name!r} has {len(self.decisions)} decisions",
                hint=f"write one option per decision joined by '-', e.g. {self.format(self.first())!r}",
            )
        ops: list[Any] = [frozenset(p.split("+")) if "+" in p else p for p in parts]
        return self.check(Architecture(ops))

    def first(self) -> Architecture:
        """The first valid architecture in enumeration order (a stable default)."""
        return next(self.enumerate())

    # -- building ----------------------------------------------------------------------------
    def build_supernet(self) -> "Supernet":
        raise NotImplementedError

    def cost_table(self, input_shape: Sequence[int] | None = None) -> "Any":
        """The per-option MACs/params table for this space at ``input_shape`` (built once)."""
        from nascore.cost import CostTable

        shape = tuple(input_shape or self.input_shape)
        key = (shape,)
        if key not in self._cost_tables:
            self._cost_tables[key] = CostTable.build(self, shape)
        return self._cost_tables[key]


def constrained_sample(
    space: SearchSpace,
    rng: random.Random,
    accept: "Any",
    max_tries: int = 10_000,
    probs: Sequence[Mapping[str, float] | None] | None = None,
) -> Architecture:
    """Rejection-sample ``space`` until ``accept(arch)`` holds: uniform over feasible archs."""
    for _ in range(max_tries):
        arch = space.sample(rng, probs)
        if accept(arch):
            return arch
    raise ConstraintError(
        f"no architecture of {space.name!r} met the constraint in {max_tries} random draws",
        hint="loosen the constraint (see `nascore cost SPACE ARCH` for typical MACs/params)",
    )


class Zero(nn.Module):
    """The ``none`` op of cells: zeros of the output shape (cuts the edge)."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class ChoiceLayer(nn.Module):
    """Holds every candidate op of one decision and runs the active one(s).

    ``active`` is an op name, or a tuple of op names whose outputs are summed (or mixed with
    ``mix_weights``, a 1-D tensor aligned with the tuple).
    """

    def __init__(self, candidates: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.candidates = nn.ModuleDict(dict(candidates))
        self.active: str | tuple[str, ...] = next(iter(self.candidates))
        self.mix_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = self.active
        if isinstance(active, str):
            return self.candidates[active](x)
        outs = [self.candidates[o](x) for o in active]
        if self.mix_weights is None:
            return torch.stack(outs).sum(0) if len(outs) > 1 else outs[0]
        return sum(w * o for w, o in zip(self.mix_weights, outs))


HeadFn = Callable[[Sequence[nn.Module], torch.Tensor], torch.Tensor]


@attrs.frozen
class ChainLayout:
    """The forward order of a chain supernet (what ``Supernet.chain_layout()`` returns).

    ``items`` are ``(module path, decision index)`` in forward order; the index is ``None`` for a
    fixed module, else the path names the :class:`ChoiceLayer` of that decision. ``head`` are the
    module paths applied after the last item by ``head_fn(modules, x)`` (pooling and flattening live
    in ``head_fn``). Every decision appears exactly once, in increasing order, and running
    ``items`` then ``head_fn`` must be exactly ``forward_path`` (the same ops in the same order: the
    ``accuracy`` evaluator checks this on its first batch and falls back to whole paths if not).
    Modules must not modify their input in place (shared activations feed several candidates;
    the evaluator detects it and falls back).
    """

    items: tuple[tuple[str, int | None], ...]
    head: tuple[str, ...]
    head_fn: HeadFn

    def split_position(self, split: int) -> int:
        """Index of the first item of the branches when ``split`` layers are shared (NEAS).

        The trunk is every item before the choice layer of decision ``split`` (so fixed modules
        between two shared layers, or right after the last shared one, stay in the trunk); with
        every layer shared the trunk is all items and the branches are the heads alone.
        """
        for pos, (_, dec) in enumerate(self.items):
            if dec == split:
                return pos
        return len(self.items)

    def check(self, n_decisions: int, where: str) -> "ChainLayout":
        """``self``, or an error if it does not name every decision once, in order."""
        decs = [d for _, d in self.items if d is not None]
        if decs != list(range(n_decisions)):
            raise NascoreError(
                f"the chain layout of {where} lists decisions {decs}, expected 0..{n_decisions - 1} in order",
                hint="chain_layout() must name every choice layer once, in forward order",
            )
        return self


def chain_layout_of(net: nn.Module) -> "ChainLayout | None":
    """``net.chain_layout()`` checked against its space, or ``None`` for a non-chain supernet or a child."""
    own = getattr(net, "chain_layout", None)
    if not callable(own) or getattr(net, "is_child", False):
        return None
    layout = own()
    if layout is None:
        return None
    space = getattr(net, "space", None)
    return layout.check(len(space.decisions), getattr(space, "name", type(net).__name__)) if space is not None else layout


_CANDIDATE_PARAMS: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()
_WIDTH_MODULES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


class Supernet(nn.Module):
    """Base of every supernet: binds :class:`ChoiceLayer` s to decisions (see module docstring).

    A subclass builds its modules, calls :meth:`bind` for each choice layer (a decision may bind
    several layers, e.g. the same edge in every cell of a NAS-Bench-201 network) and implements
    :meth:`forward_path`, which runs whatever is active.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self._bindings: list[list[str]] = [[] for _ in space.decisions]
        self._active: Architecture | None = None
        self.is_child = False

    def bind(self, decision: int, layer_name: str) -> None:
        """Register submodule ``layer_name`` (a ChoiceLayer) as an instance of ``decision``."""
        self._bindings[decision].append(layer_name)

    def choice_layers(self, decision: int) -> list[ChoiceLayer]:
        return [self.get_submodule(n) for n in self._bindings[decision]]

    def set_active(
        self, arch: Architecture, weights: Sequence[torch.Tensor | None] | None = None
    ) -> None:
        """Make ``arch`` the path that ``forward`` runs; ``weights`` mixes set-valued options."""
        if self.is_child:
            return
        widths = self._width_modules()
        for i, opt in enumerate(arch.ops):
            if i in widths:
                if not isinstance(opt, str):
                    raise ArchitectureError(f"decision {i} ({self.space.decisions[i].name}) is a width: one channel count, "
                                            f"got a set {sorted(opt)}")
                c = self.space.decisions[i].channels_of(opt)  # type: ignore[attr-defined]
                for m in widths[i]:
                    m.set_width(i, c)
                continue
            active: str | tuple[str, ...] = opt if isinstance(opt, str) else option_members(opt)
            w = weights[i] if weights is not None else None
            for layer in self.choice_layers(i):
                layer.active = active
                layer.mix_weights = w
        self._active = arch

    def _width_modules(self) -> dict[int, list[Any]]:
        """Per width decision, the slim modules it sets (built once, like candidate_parameters)."""
        cached = _WIDTH_MODULES.get(self)
        if cached is None:
            from nascore.width import slim_modules

            cached = {i: [] for i, d in enumerate(self.space.decisions) if isinstance(d, WidthDecision)}
            if cached:
                for _, m in slim_modules(self):
                    for src in {m.in_source, m.out_source} - {None}:
                        if src not in cached:
                            raise NascoreError(
                                f"a slim module of {self.space.name!r} takes its width from decision {src}, "
                                "which is not a WidthDecision", hint="in_source/out_source must name width decisions")
                        cached[src].append(m)
            _WIDTH_MODULES[self] = cached
        return cached

    @property
    def active_arch(self) -> Architecture | None:
        return self._active

    def forward(self, x: torch.Tensor, arch: Architecture | None = None) -> torch.Tensor:
        if arch is not None:
            if self.is_child and arch != self._active:
                raise ArchitectureError("a child runs only the architecture it was built for",
                                        hint="build another child with supernet.child(arch)")
            self.set_active(arch)
        return self.forward_path(x)

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- parameters --------------------------------------------------------------------------
    def candidate_parameters(self) -> list[list[dict[str, tuple[nn.Parameter, ...]]]]:
        """Per decision, per bound choice layer: ``{op: its parameters}``.

        A width decision's entries are its slim modules' per-option parameters (each width's own
        BN of a :class:`~nascore.width.SwitchableBatchNorm2d`), so they are active only on their
        width, like an op decision's candidates.

        Built once per supernet (its modules never change after construction; weights are loaded in
        place), because walking the module tree every training step costs milliseconds on a
        20-layer supernet. Kept outside the module so that children do not copy it.
        """
        cached = _CANDIDATE_PARAMS.get(self)
        if cached is None:
            cached = [
                [{op: tuple(mod.parameters()) for op, mod in layer.candidates.items()} for layer in self.choice_layers(i)]
                for i in range(len(self._bindings))
            ]
            for i, mods in self._width_modules().items():
                cached[i].extend(per for per in (m.option_parameters() for m in mods) if per)
            _CANDIDATE_PARAMS[self] = cached
        return cached

    def _inactive(self, arch: Architecture) -> list[nn.Parameter]:
        out: list[nn.Parameter] = []
        for opt, layers in zip(arch.ops, self.candidate_parameters()):
            chosen = option_members(opt)
            for layer in layers:
                for name, params in layer.items():
                    if name not in chosen:
                        out.extend(params)
        return out

    def _inactive_ids(self, arch: Architecture) -> set[int]:
        return {id(p) for p in self._inactive(arch)}

    def active_parameters(self, arch: Architecture) -> list[tuple[str, nn.Parameter]]:
        """``(name, param)`` of the path, in ``named_parameters()`` order (the documented order)."""
        inactive = self._inactive_ids(arch)
        return [(n, p) for n, p in self.named_parameters() if id(p) not in inactive]

    def inactive_parameters(self, arch: Architecture) -> list[nn.Parameter]:
        """Parameters of the candidates ``arch`` does not use (cleared before each step)."""
        return list({id(p): p for p in self._inactive(arch)}.values())

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A detached copy of every weight and buffer (W0 for angles, clones for tree search)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_snapshot(self, snap: Mapping[str, torch.Tensor]) -> None:
        self.load_state_dict(dict(snap))

    def reset_parameters(self) -> None:
        """Re-initialise every weight (NSE's per-round restart) and reset BN statistics."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()

    # -- children ----------------------------------------------------------------------------
    def child(self, arch: Architecture, inherit: bool = True) -> nn.Module:
        """A standalone module for ``arch``: only the chosen candidates are copied.

        Width decisions' slim layers become plain layers of the chosen widths (only their channels).

        With ``inherit`` the child keeps the supernet's weights (and BN statistics), so its
        output equals the supernet path's in eval mode; without, it is re-initialised.
        """
        self.space.check(arch)
        self.set_active(arch)
        saved: list[tuple[ChoiceLayer, nn.ModuleDict]] = []
        try:
            for i, opt in enumerate(arch.ops):
                keep = option_members(opt)
                for layer in self.choice_layers(i):
                    saved.append((layer, layer.candidates))
                    layer._modules["candidates"] = nn.ModuleDict({k: layer.candidates[k] for k in keep})
            space = self.space
            self.space = None  # type: ignore[assignment]  # do not deep-copy the space
            try:
                child = clone_module(self)
            finally:
                self.space = space
        finally:
            for layer, cands in saved:
                layer._modules["candidates"] = cands
        if self._width_modules():
            from nascore.width import materialize

            materialize(child)  # plain layers holding only the chosen channels
        child.space = self.space
        child.is_child = True
        child._active = arch
        child.train(self.training)
        if not inherit:
            Supernet.reset_parameters(child)
        return child


_EMPTY_DICT_TYPES = (dict, OrderedDict)
_ATOMIC = (type(None), bool, int, float, str)


def _clone_tensor(t: torch.Tensor | None, memo: dict[int, Any]) -> torch.Tensor | None:
    """deepcopy of a parameter or buffer; plain buffers (BN statistics) take a cheap path.

    (The cheap path clones storage per tensor: two distinct buffers aliasing one storage without
    being views would come out unshared, where deepcopy keeps them shared. Views take deepcopy.)
    """
    if t is None:
        return None
    if id(t) in memo:
        return memo[id(t)]
    if (type(t) is torch.Tensor and t._base is None and not t.requires_grad and t.grad is None
            and not t.__dict__):
        new = t.clone(memory_format=torch.preserve_format)
        memo[id(t)] = new
        return new
    return copy.deepcopy(t, memo)


def _plain_module_type(cls: type) -> bool:
    """Does ``cls`` deep-copy like ``nn.Module`` (its ``__dict__`` as state, then ``__setstate__``)?"""
    return (
        getattr(cls, "__deepcopy__", None) is None
        and cls.__reduce_ex__ is nn.Module.__reduce_ex__
        and cls.__reduce__ is nn.Module.__reduce__
        and cls.__getstate__ is nn.Module.__getstate__
    )


def clone_module(module: nn.Module, memo: dict[int, Any] | None = None) -> nn.Module:
    """``copy.deepcopy(module)``, several times faster (child builds are on the search path).

    Same result as deepcopy (shared modules/tensors stay shared, parameters and buffers are
    cloned, other attributes deep-copied, then ``__setstate__``), but a module's bookkeeping dicts
    are handled directly: empty hook dicts are recreated instead of going through the generic
    pickling protocol, which is what dominated the time. Module types with their own
    ``__deepcopy__``/``__getstate__``/``__reduce__`` fall back to ``copy.deepcopy``.
    """
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]
    cls = type(module)
    if not _plain_module_type(cls):
        return copy.deepcopy(module, memo)
    new = cls.__new__(cls)
    memo[id(module)] = new
    state: dict[str, Any] = {}
    for key, value in module.__dict__.items():
        if key == "_compiled_call_impl":
            continue
        if key == "_modules":
            state[key] = type(value)(
                (n, None if m is None else clone_module(m, memo)) for n, m in value.items())
        elif key in ("_parameters", "_buffers"):
            state[key] = type(value)((n, _clone_tensor(t, memo)) for n, t in value.items())
        elif type(value) in _ATOMIC or (type(value) is tuple and all(type(v) in _ATOMIC for v in value)):
            state[key] = value  # what deepcopy returns for these
        elif type(value) is set and all(type(v) in _ATOMIC for v in value):
            state[key] = set(value)  # _non_persistent_buffers_set (deepcopy's path is slow for sets)
        elif type(value) in _EMPTY_DICT_TYPES and not value:
            state[key] = type(value)()
        else:
            state[key] = copy.deepcopy(value, memo)
    new.__setstate__(state)
    return new


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


S = TypeVar("S", bound="SearchSpace")


def require_space(space: Any, kind: type[S], who: str, hint: str) -> S:
    """``space`` as a ``kind`` space, or an error naming the component and the space it needs.

    For components that only make sense on one family of spaces (NEAS's ensembles, NSE's pool).
    """
    if not isinstance(space, kind):
        raise NascoreError(
            f"{who} needs the {kind.name} space, but the run's space is {getattr(space, 'name', space)!r}", hint=hint)
    return space
