"""MACs and parameter counts: fvcore for truth, per-option tables for speed.

**Definition.** nascore reports *MACs*: fvcore's ``FlopCountAnalysis`` counts one fused
multiply-add as one "flop", so its total is a MAC count (what all ten papers call "FLOPs"). It
also counts batch-norm (eval mode, one per element) and adaptive pooling, and counts element-wise
ops it does not know (activations, residual adds, SE scaling) as 0. "Params" is the number of
parameter elements of the standalone child.

**Tables.** Search must not trace a model per candidate (fvcore takes ~0.15 s per trace). A
:class:`CostTable` holds, per decision and option, the MACs and params that option adds, plus a
fixed part; ``cost(arch)`` is then a sum of a few dictionary lookups (~µs). The table is built
from two fvcore traces (all candidates at once, with their recorded input shapes, then one child
for the fixed part) and is checked to agree *exactly* with fvcore on whole children
(:func:`check_table`, tests, ``nascore cost --check``).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from nascore.arch import Architecture, option_members
from nascore.errors import ConfigError, ConstraintError

_FVCORE_LOGGER = "fvcore.nn.jit_analysis"


def _fvcore() -> Any:
    """Import fvcore quietly (it warns about torch.jit.script at import on torch >= 2.14)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fvcore.nn as fvnn
    logging.getLogger(_FVCORE_LOGGER).setLevel(logging.ERROR)
    return fvnn


def _analysis(model: nn.Module, inputs: tuple) -> Any:
    fvnn = _fvcore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fca = fvnn.FlopCountAnalysis(model, inputs)
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
    return fca


def fvcore_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of ``model`` on one input of shape ``input_shape`` (C, H, W), counted by fvcore."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_shape)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(_analysis(model, (x,)).total())
    finally:
        model.train(was_training)


def fvcore_macs_by_module(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """fvcore's MACs per submodule name of ``model`` (eval mode, one zero input of ``input_shape``)."""
    model.eval()
    x = torch.zeros(1, *input_shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: int(v) for k, v in _analysis(model, (x,)).by_module().items()}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _RunAll(nn.Module):
    """Runs each candidate on its recorded input so one trace counts them all."""

    def __init__(self, mods: list[nn.Module]) -> None:
        super().__init__()
        self.mods = nn.ModuleList(mods)

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        return [m(x) for m, x in zip(self.mods, inputs)]


class _Children(nn.Module):
    def __init__(self, children: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(children)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [n(x) for n in self.nets]


def fvcore_macs_many(children: Sequence[nn.Module], input_shape: Sequence[int]) -> list[int]:
    """fvcore's MACs of each child, traced together (``by_module``) to save the per-trace cost."""
    holder = _Children(list(children)).eval()
    x = torch.zeros(1, *input_shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per = _analysis(holder, (x,)).by_module()
    return [int(per.get(f"nets.{i}", 0)) for i in range(len(children))]


def record_candidate_inputs(space: Any, net: nn.Module, arch: Architecture,
                            batch_shape: Sequence[int]) -> dict[int, torch.Tensor]:
    """Each bound candidate module's input (by ``id``) in one forward pass of ``arch`` on zeros.

    ``arch`` holds every option of every decision at once, so one pass shows every block the input
    it sees in the network: the cost table counts each block there, the latency table times it there.
    """
    recorded: dict[int, torch.Tensor] = {}
    hooks = []
    for i in range(len(space.decisions)):
        for layer in net.choice_layers(i):
            for mod in layer.candidates.values():
                hooks.append(mod.register_forward_pre_hook(
                    lambda m, args: recorded.setdefault(id(m), args[0].detach().clone())))
    try:
        net.set_active(arch)
        with torch.no_grad():
            net(torch.zeros(*batch_shape))
    finally:
        for h in hooks:
            h.remove()
    return recorded


@attrs.frozen
class CostTable:
    """Per-option MACs/params of a space at one input shape; ``cost(arch)`` by summation."""

    input_shape: tuple[int, ...]
    fixed_macs: int
    fixed_params: int
    macs_table: tuple[dict, ...]
    params_table: tuple[dict, ...]
    # Predicted latency (ms) per option and fixed part, when a run attaches a measured latency
    # table (nascore.latency.LatencyTable.attach); None otherwise.
    latency_fixed_ms: float | None = None
    latency_ms_table: tuple[dict, ...] | None = None
    #: Width terms (spaces with width decisions): ``{key: ((coef, sources), ...)}`` where ``key`` is
    #: ``(decision, option)`` — counted when that option is chosen — or ``None`` (always counted), and
    #: a term adds ``coef * prod(chosen channels of each source decision)``. A width decision's own
    #: ``macs_table`` entries are 0: what a width costs depends on the other decisions.
    macs_terms: dict = attrs.field(factory=dict)
    params_terms: dict = attrs.field(factory=dict)
    #: ``{decision: {option: channels}}`` of the width decisions (their options may be labels such
    #: as PWKD's ``w25``); without it an option's channels are the option itself (``"48"``).
    width_channels: dict = attrs.field(factory=dict)

    def channels_of(self, i: int, option: Any) -> int:
        """The channels option ``option`` of width decision ``i`` sets (0 for a non-width decision)."""
        wc = self.width_channels.get(i)
        if wc is not None:
            return wc.get(option, 0)
        return int(option) if isinstance(option, str) and option.isdigit() else 0

    def _terms(self, terms: dict, arch: Architecture, widths: Sequence[int] | None = None) -> int:
        if not terms:
            return 0
        ops = arch.ops
        w = widths if widths is not None else [self.channels_of(i, o) for i, o in enumerate(ops)]
        total = 0
        for key in [None, *((i, o) for i, opt in enumerate(ops) for o in option_members(opt))]:
            for coef, sources in terms.get(key, ()):
                v = coef
                for s in sources:
                    v *= w[s]
                total += v
        return total

    def width_decisions(self) -> set[int]:
        """Indices of the decisions that appear as width sources in the terms."""
        return {s for terms in (self.macs_terms, self.params_terms) for ts in terms.values() for _, src in ts
                for s in src}

    @property
    def has_latency(self) -> bool:
        return self.latency_ms_table is not None

    def latency_ms(self, arch: Architecture) -> float | None:
        """Predicted latency of ``arch`` in ms (None without a latency table)."""
        if self.latency_ms_table is None:
            return None
        total = float(self.latency_fixed_ms or 0.0)
        for table, opt in zip(self.latency_ms_table, arch.ops):
            total += sum(table[o] for o in option_members(opt))
        return total

    def latency_bounds(self, allowed: Sequence[Sequence[str]] | None = None) -> tuple[float, float] | None:
        """(min, max) predicted latency over single-op choices (None without a latency table)."""
        if self.latency_ms_table is None:
            return None
        allowed = allowed or [tuple(t) for t in self.latency_ms_table]
        base = float(self.latency_fixed_ms or 0.0)
        lo = base + sum(min(t[o] for o in a) for t, a in zip(self.latency_ms_table, allowed))
        hi = base + sum(max(t[o] for o in a) for t, a in zip(self.latency_ms_table, allowed))
        return lo, hi

    def macs(self, arch: Architecture) -> int:
        total = self.fixed_macs
        for table, opt in zip(self.macs_table, arch.ops):
            if isinstance(opt, str):
                total += table[opt]
            else:
                total += sum(table[o] for o in opt)
        return total + self._terms(self.macs_terms, arch)

    def params(self, arch: Architecture) -> int:
        total = self.fixed_params
        for table, opt in zip(self.params_table, arch.ops):
            if isinstance(opt, str):
                total += table[opt]
            else:
                total += sum(table[o] for o in opt)
        return total + self._terms(self.params_terms, arch)

    def cost(self, arch: Architecture) -> tuple[int, int]:
        """``(macs, params)`` of ``arch``, exact with fvcore on its child."""
        m, p = self.fixed_macs, self.fixed_params
        for mt, pt, opt in zip(self.macs_table, self.params_table, arch.ops):
            if isinstance(opt, str):
                m += mt[opt]
                p += pt[opt]
            else:
                for o in opt:
                    m += mt[o]
                    p += pt[o]
        if self.macs_terms or self.params_terms:
            m += self._terms(self.macs_terms, arch)
            p += self._terms(self.params_terms, arch)
        return m, p

    def bounds(self, allowed: Sequence[Sequence[str]] | None = None) -> tuple[int, int, int, int]:
        """(min MACs, max MACs, min params, max params) over single-op choices.

        Exact with width terms too: every coefficient is non-negative, so the extremes take every
        width decision at its smallest (largest) allowed channels; the ops are then independent.
        """
        allowed = allowed or [tuple(t) for t in self.macs_table]
        if self.macs_terms or self.params_terms:
            return self._width_bounds(allowed)
        mmin = self.fixed_macs + sum(min(t[o] for o in a) for t, a in zip(self.macs_table, allowed))
        mmax = self.fixed_macs + sum(max(t[o] for o in a) for t, a in zip(self.macs_table, allowed))
        pmin = self.fixed_params + sum(min(t[o] for o in a) for t, a in zip(self.params_table, allowed))
        pmax = self.fixed_params + sum(max(t[o] for o in a) for t, a in zip(self.params_table, allowed))
        return mmin, mmax, pmin, pmax

    def _width_bounds(self, allowed: Sequence[Sequence[str]]) -> tuple[int, int, int, int]:
        wd = self.width_decisions()
        out = []
        for table, fixed, terms in ((self.macs_table, self.fixed_macs, self.macs_terms),
                                    (self.params_table, self.fixed_params, self.params_terms)):
            for pick in (min, max):
                w = [pick(self.channels_of(i, o) for o in a) if i in wd else 0 for i, a in enumerate(allowed)]
                total = fixed + self._terms(terms, Architecture([]), w)  # the always-counted terms
                for i, (t, a) in enumerate(zip(table, allowed)):
                    total += pick(t[o] + sum(c * math.prod(w[s] for s in src) for c, src in terms.get((i, o), ()))
                                  for o in a)
                out.append(total)
        mmin, mmax, pmin, pmax = out
        return mmin, mmax, pmin, pmax

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input_shape": list(self.input_shape),
            "fixed": {"macs": self.fixed_macs, "params": self.fixed_params},
            "macs": [dict(t) for t in self.macs_table],
            "params": [dict(t) for t in self.params_table],
        }
        if self.latency_ms_table is not None:
            out["latency_ms"] = {"fixed": self.latency_fixed_ms, "options": [dict(t) for t in self.latency_ms_table]}
        for name, terms in (("macs_terms", self.macs_terms), ("params_terms", self.params_terms)):
            if terms:
                out[name] = [{"decision": None if k is None else k[0], "option": None if k is None else k[1],
                              "terms": [{"coef": c, "sources": list(s)} for c, s in v]} for k, v in terms.items()]
        if self.width_channels:
            out["width_channels"] = {str(i): dict(m) for i, m in self.width_channels.items()}
        return out

    @classmethod
    def build(cls, space: Any, input_shape: Sequence[int]) -> "CostTable":
        """Count every candidate once with fvcore (one trace), then the fixed part (one more).

        Width decisions (:class:`nascore.space.WidthDecision`) cost no extra traces: both traces run
        at the largest widths, and each slim module's fvcore count there fixes the coefficient of
        its width monomial (:mod:`nascore.width`: bilinear in (in, out) channels for a dense conv,
        linear for a depthwise conv or a BN; a module running a multiple of its decision's channels
        has it in the coefficient). A width that sets the next block's input channels is a monomial
        over two decisions, so such couplings are exact, not approximated.
        """
        from nascore.width import macs_monomial, macs_scale, slim_modules  # width sits beside cost in the values layer

        input_shape = tuple(int(v) for v in input_shape)
        net = space.build_supernet().eval()  # a nascore.space.Supernet (cost sits beneath space)
        width_channels = {i: dict(zip(d.options, d.channels)) for i, d in enumerate(space.decisions)
                          if hasattr(d, "max_channels")}  # WidthDecisions (space sits above cost)
        # Record each candidate's input by running every option of every decision at once (widths: the largest).
        everything = Architecture([
            max(width_channels[i], key=width_channels[i].__getitem__) if i in width_channels
            else (frozenset(d.options) if len(d.options) > 1 else d.options[0])
            for i, d in enumerate(space.decisions)])
        recorded = record_candidate_inputs(space, net, everything, (1, *input_shape))
        mods, inputs, keys = [], [], []
        for i, d in enumerate(space.decisions):
            for layer in net.choice_layers(i):
                for name, mod in layer.candidates.items():
                    if id(mod) in recorded:
                        mods.append(mod)
                        inputs.append(recorded[id(mod)])
                        keys.append((i, name))
        per: dict[str, int] = {}
        if mods:  # (a space of width decisions alone has no candidates)
            runner = _RunAll(mods).eval()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                per = _analysis(runner, tuple(inputs)).by_module()
        macs_t: list[dict[str, int]] = [{o: 0 for o in d.options} for d in space.decisions]
        params_t: list[dict[str, int]] = [{o: 0 for o in d.options} for d in space.decisions]
        macs_terms: dict[Any, list[tuple[int, tuple[int, ...]]]] = {}
        params_terms: dict[Any, list[tuple[int, tuple[int, ...]]]] = {}
        in_candidates: set[int] = set()

        def add_slim(key: Any, path: str, mod: Any, counted: int) -> tuple[int, int]:
            """Turn one slim module's count at max width into its monomials; returns (macs, params) moved."""
            term = macs_monomial(mod, counted)
            if term is None:
                raise ConfigError([f"cost table of {getattr(space, 'name', space)!r}: fvcore counted {counted} MACs "
                                   f"for {path}, not a multiple of its widths' product {math.prod(macs_scale(mod))}"],
                                  source="the space's width layers")
            if counted:
                macs_terms.setdefault(key, []).append(term)
            for coef, src in mod.param_terms():
                params_terms.setdefault(key, []).append((coef, tuple(src)))
            return counted, count_params(mod)  # what the supernet holds (every width's BN, for per-width BN)

        for j, (i, name) in enumerate(keys):
            m_total, p_total = int(per.get(f"mods.{j}", 0)), count_params(mods[j])
            for sub, smod in slim_modules(mods[j]):
                in_candidates.add(id(smod))
                dm, dp = add_slim((i, name), sub, smod, int(per.get(f"mods.{j}.{sub}", 0)))
                m_total -= dm
                p_total -= dp
            macs_t[i][name] += m_total
            params_t[i][name] += p_total
        ref = space.first()
        child = net.child(ref)
        fixed_paths = [(path, m) for path, m in slim_modules(net) if id(m) not in in_candidates]
        if fixed_paths:  # slim layers outside the candidates (a stem or head whose width is searched)
            net.set_active(everything)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                per_net = _analysis(net, (torch.zeros(1, *input_shape),)).by_module()
            for path, smod in fixed_paths:
                add_slim(None, path, smod, int(per_net.get(path, 0)))
        partial = cls(input_shape, 0, 0, tuple(macs_t), tuple(params_t),
                      macs_terms={k: tuple(v) for k, v in macs_terms.items()},
                      params_terms={k: tuple(v) for k, v in params_terms.items()}, width_channels=width_channels)
        fixed_macs = fvcore_macs(child, input_shape) - partial.macs(ref)
        fixed_params = count_params(child) - partial.params(ref)
        return attrs.evolve(partial, fixed_macs=fixed_macs, fixed_params=fixed_params)


def check_table(space: Any, archs: Iterable[Architecture], input_shape: Sequence[int] | None = None) -> list[dict]:
    """Compare the table with fvcore on each arch's built child; one row per arch."""
    shape = tuple(input_shape or space.input_shape)
    table = space.cost_table(shape)
    net = space.build_supernet().eval()
    archs = list(archs)
    rows = []
    # fvcore's trace time grows faster than linearly with the traced graph: batch many small
    # children per trace (saves the per-trace overhead) but only one or a few large ones.
    n_modules = sum(1 for _ in net.child(archs[0]).modules()) if archs else 1
    chunk = max(1, min(25, 500 // n_modules))
    for start in range(0, len(archs), chunk):
        part = archs[start : start + chunk]
        children = [net.child(a) for a in part]
        truth = fvcore_macs_many(children, shape)
        for a, c, m in zip(part, children, truth):
            tm, tp = table.cost(a)
            rows.append(
                {"arch": space.format(a), "table_macs": tm, "fvcore_macs": m, "table_params": tp,
                 "params": count_params(c), "ok": tm == m and tp == count_params(c)}
            )
    return rows




@attrs.frozen
class ResourceConstraint:
    """Upper bounds and ranges on MACs, params and predicted latency (``None`` = unbounded).

    Checked against the cost table only, so a selector can test thousands of candidates a second.
    Latency bounds (ms) need the run's cost table to carry a measured latency table
    (``constraint.latency_table``; see :mod:`nascore.latency`).
    """

    macs_min: float | None = None
    macs_max: float | None = None
    params_min: float | None = None
    params_max: float | None = None
    latency_ms_min: float | None = None
    latency_ms_max: float | None = None

    @property
    def unbounded(self) -> bool:
        return all(v is None for v in (self.macs_min, self.macs_max, self.params_min, self.params_max,
                                       self.latency_ms_min, self.latency_ms_max))

    @property
    def bounds_latency(self) -> bool:
        return self.latency_ms_min is not None or self.latency_ms_max is not None

    def admits(self, macs: int, params: int, latency_ms: float | None = None) -> bool:
        if self.macs_min is not None and macs < self.macs_min:
            return False
        if self.macs_max is not None and macs > self.macs_max:
            return False
        if self.params_min is not None and params < self.params_min:
            return False
        if self.params_max is not None and params > self.params_max:
            return False
        if self.bounds_latency:
            if latency_ms is None:
                raise ConstraintError("the constraint bounds latency but no predicted latency was given",
                                      hint="set constraint.latency_table to a table from `nascore lut build`")
            if self.latency_ms_min is not None and latency_ms < self.latency_ms_min:
                return False
            if self.latency_ms_max is not None and latency_ms > self.latency_ms_max:
                return False
        return True

    def admits_arch(self, table: Any, arch: Architecture) -> bool:
        """Does ``arch`` satisfy every bound, by ``table`` (MACs, params and, if bounded, latency)?"""
        macs, params = table.cost(arch)
        lat = self._latency_of(table, arch) if self.bounds_latency else None
        return self.admits(macs, params, lat)

    @staticmethod
    def _latency_of(table: Any, arch: Architecture) -> float:
        fn = getattr(table, "latency_ms", None)
        lat = fn(arch) if fn is not None else None
        if lat is None:
            raise ConstraintError("the constraint bounds latency but the run has no latency table",
                                  hint="set constraint.latency_table to a table from `nascore lut build SPACE`")
        return lat

    def describe(self) -> str:
        parts = []
        for label, lo, hi, fmt in (("MACs", self.macs_min, self.macs_max, _fmt),
                                   ("params", self.params_min, self.params_max, _fmt),
                                   ("latency", self.latency_ms_min, self.latency_ms_max, lambda v: f"{v:g} ms")):
            if lo is not None and hi is not None:
                parts.append(f"{fmt(lo)} ≤ {label} ≤ {fmt(hi)}")
            elif hi is not None:
                parts.append(f"{label} ≤ {fmt(hi)}")
            elif lo is not None:
                parts.append(f"{label} ≥ {fmt(lo)}")
        return ", ".join(parts) or "none"

    def check_feasible(self, table: CostTable, allowed: Sequence[Sequence[str]]) -> None:
        """Raise :class:`ConstraintError` if no single-op architecture can satisfy the bounds
        (each bound on its own, over the table's per-option ranges)."""
        mmin, mmax, pmin, pmax = table.bounds(allowed)
        problems = []
        if self.macs_max is not None and mmin > self.macs_max:
            problems.append(f"the smallest architecture has {_fmt(mmin)} MACs > macs_max {_fmt(self.macs_max)}")
        if self.macs_min is not None and mmax < self.macs_min:
            problems.append(f"the largest architecture has {_fmt(mmax)} MACs < macs_min {_fmt(self.macs_min)}")
        if self.params_max is not None and pmin > self.params_max:
            problems.append(f"the smallest architecture has {_fmt(pmin)} params > params_max {_fmt(self.params_max)}")
        if self.params_min is not None and pmax < self.params_min:
            problems.append(f"the largest architecture has {_fmt(pmax)} params < params_min {_fmt(self.params_min)}")
        lat_hint = ""
        if self.bounds_latency:
            lb = table.latency_bounds(allowed) if hasattr(table, "latency_bounds") else None
            if lb is None:
                raise ConstraintError("the constraint bounds latency but the run has no latency table",
                                      hint="set constraint.latency_table to a table from `nascore lut build SPACE`")
            lmin, lmax = lb
            lat_hint = f", predicted latency from {lmin:.3f} to {lmax:.3f} ms"
            if self.latency_ms_max is not None and lmin > self.latency_ms_max:
                problems.append(f"the fastest architecture is predicted at {lmin:.3f} ms > latency_ms_max {self.latency_ms_max:g}")
            if self.latency_ms_min is not None and lmax < self.latency_ms_min:
                problems.append(f"the slowest architecture is predicted at {lmax:.3f} ms < latency_ms_min {self.latency_ms_min:g}")
        if problems:
            raise ConstraintError(
                "the constraint admits no architecture: " + "; ".join(problems),
                hint=f"MACs range from {_fmt(mmin)} to {_fmt(mmax)}, params from {_fmt(pmin)} to {_fmt(pmax)}{lat_hint} in this space",
            )


def _fmt(v: float) -> str:
    v = float(v)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:g}"


def human(v: float) -> str:
    """3.20M, 512K: what tables and logs print."""
    return _fmt(v)


def validate_constraint(data: dict) -> ResourceConstraint:
    try:
        return ResourceConstraint(**data)
    except TypeError as e:  # pragma: no cover - pydantic validates first
        raise ConfigError([f"constraint: {e}"]) from None


