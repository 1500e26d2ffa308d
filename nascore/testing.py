"""Testing nascore components: helpers, and the contract suite a plugin points at its own components.

The contract is what the core relies on. Each ``check_*`` function runs it on a tiny input and raises
:class:`ContractError` (an ``AssertionError``) naming the component, the check and the numbers::

    import my_plugin.plugin
    from nascore.testing import check_selector, check_space, make_registry

    REG = make_registry(my_plugin.plugin)        # the built-ins plus exactly your plugin module

    def test_my_space_keeps_the_contract():
        check_space("my_space", registry=REG)

    def test_my_selector_keeps_the_contract(tmp_path):
        check_selector("my_selector", tmp_path, registry=REG, options={"budget": 6})

* space: sampled architectures are valid and round-trip through ``format``/``parse``; mutation and
  crossover stay in the space; the space takes the input shape and classes from its context; each
  child equals the supernet path on the same input (and different paths differ); the cost table
  equals fvcore; restriction and enumeration agree; the child exports to TorchScript and back.
* selector: every candidate meets the run's constraint and lies in the space; the same seed gives
  the same ranking; a run killed during its search and resumed gives the same ranking.
* evaluator: ``metric`` and ``higher_is_better`` are declared and honoured; scores are finite and
  deterministic, and an architecture's score does not depend on what it is scored with.
* trainer: ops that no trained path used are untouched (bit for bit); something was trained; a run
  killed mid-training and resumed reaches the same weights.
* distiller: ``replaces_ce`` is declared; a train stage with it gives finite, changed weights.

With pytest, ``-p nascore.testing`` (or ``pytest_plugins = ["nascore.testing"]``) adds the fixtures
``one_thread``, ``rng`` and ``nascore_registry``. Importing this module needs no pytest; only using a
fixture does. :func:`make_registry`, :func:`run_config`, :func:`make_context` and :func:`tiny_config`
are the helpers the suite is built from.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from nascore.arch import Architecture, option_members
from nascore.registry import Registry, build_registry
from nascore.roles import SpaceContext

try:  # optional: the fixtures need it, nothing else does
    import pytest
except ImportError:  # pragma: no cover - exercised by a subprocess test without pytest
    pytest = None  # type: ignore[assignment]


class ContractError(AssertionError):
    """A component breaks the contract the core relies on (the message names the check)."""


def _fail(who: str, check: str, detail: str) -> ContractError:
    return ContractError(f"{who}: {check}: {detail}")


# -- helpers -----------------------------------------------------------------------------------------
def make_registry(*plugins: ModuleType | tuple[ModuleType, str]) -> Registry:
    """Built-ins plus ``plugins`` (modules of hookimpls), no entry points."""
    extra = [(p, p.__name__) if isinstance(p, ModuleType) else p for p in plugins]
    return build_registry(load_entry_points=False, extra=extra)


def run_config(
    data: dict[str, Any], run_dir: Path | None, *, plugins: Iterable[ModuleType] = (), smoke: bool = False,
    registry: Registry | None = None,
) -> Any:
    """Validate and run ``data`` (a config dict); returns the finished context (a ``nascore.pipeline.context.RunContext``)."""
    from nascore.pipeline.run import open_run, run_pipeline

    reg = registry or make_registry(*plugins)
    ctx = open_run(data, run_dir=run_dir, registry=reg, smoke=smoke, quiet=True, overwrite=True)
    try:
        run_pipeline(ctx)
    finally:
        ctx.close()
    return ctx


def make_context(data: dict[str, Any], *, plugins: Iterable[ModuleType] = (), run_dir: Path | None = None,
                 registry: Registry | None = None, smoke: bool = False) -> Any:
    """A RunContext for ``data`` without running any stage (unit tests of components)."""
    from nascore.pipeline.run import open_run

    return open_run(data, run_dir=run_dir, registry=registry or make_registry(*plugins), quiet=True, overwrite=True,
                    smoke=smoke)


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A minimal valid config on the tiny chain space and synthetic data (edit ``stages``)."""
    cfg: dict[str, Any] = {
        "name": "test",
        "seed": 0,
        "device": "cpu",
        "space": {"name": "tiny_chain"},
        "dataset": {"name": "synthetic"},
        "data": {"batch_size": 32},
        "stages": [{"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}}],
    }
    cfg.update(overrides)
    return cfg


def _ranking(cands: Iterable[Any]) -> list[tuple[str, float]]:
    return [(c.arch_str, round(float(c.score), 10)) for c in cands]


def _outcome(ctx: Any) -> tuple[list[tuple[str, float]], list[list[str]]]:
    """What a search stage leaves behind: the ranking and the (possibly restricted) space."""
    return _ranking(ctx.candidates), ctx.space.allowed_json()


# -- spaces --------------------------------------------------------------------------------------------
def build_space(space: str | Callable[..., Any], options: Mapping[str, Any] | None = None, *,
                registry: Registry | None = None, input_shape: tuple[int, int, int] = (1, 28, 28),
                num_classes: int = 10, config: Any = None) -> Any:
    """Build a space the way the core does: a registered name, or ``factory(cfg, ctx)`` (``config``: its model)."""
    ctx = SpaceContext(input_shape, num_classes, registry=registry)
    if isinstance(space, str):
        return (registry or make_registry()).get("space", space).build(dict(options or {}), ctx)
    cfg = config.model_validate(dict(options or {})) if config is not None else dict(options or {})
    return space(cfg, ctx)


def check_space(space: str | Callable[..., Any], options: Mapping[str, Any] | None = None, *,
                registry: Registry | None = None, config: Any = None, samples: int = 6, seed: int = 0,
                other_input: tuple[tuple[int, int, int], int] = ((3, 32, 32), 7), atol: float = 1e-5) -> None:
    """The space contract (module docstring) on ``samples`` random architectures."""
    from nascore.cost import check_table

    who = f"space {space if isinstance(space, str) else getattr(space, '__name__', space)!r}"
    torch.manual_seed(seed)
    sp = build_space(space, options, registry=registry, config=config)
    rng = random.Random(seed)
    archs = [sp.sample(rng) for _ in range(samples)]

    # sampled architectures are valid and round-trip; mutation/crossover stay inside
    for a in archs:
        if not sp.contains(a):
            raise _fail(who, "sample", f"{a} is not in the space it was sampled from")
        sp.check(a)
        if sp.parse(sp.format(a)) != a:
            raise _fail(who, "format/parse", f"{sp.format(a)!r} parses to {sp.parse(sp.format(a))}, not {a}")
        if Architecture.from_json(a.to_json()) != a:
            raise _fail(who, "to_json/from_json", f"{a} does not round-trip")
    for a, b in zip(archs, archs[1:]):
        for child in (sp.mutate(a, 0.5, rng), sp.crossover(a, b, rng)):
            if not sp.contains(child):
                raise _fail(who, "mutate/crossover", f"{child} left the space")

    # the space learns the input shape and classes from its context
    shape, classes = other_input
    other = build_space(space, options, registry=registry, config=config, input_shape=shape, num_classes=classes)
    if tuple(other.input_shape) != tuple(shape) or other.num_classes != classes:
        raise _fail(who, "context", f"built with ctx.data.input_shape={shape}, num_classes={classes} it reports "
                    f"{tuple(other.input_shape)}, {other.num_classes}: read them from ctx.data")

    # each child equals the supernet path; different paths compute different functions
    net = sp.build_supernet().eval()
    x = torch.randn(2, *sp.input_shape, generator=torch.Generator().manual_seed(seed))
    outs = []
    with torch.no_grad():
        for a in archs:
            y_path = net(x, a)
            if tuple(y_path.shape) != (2, sp.num_classes):
                raise _fail(who, "forward_path", f"output shape {tuple(y_path.shape)} for input {tuple(x.shape)}, "
                            f"expected (2, {sp.num_classes})")
            try:
                y_child = net.child(a).eval()(x)
            except Exception as e:  # noqa: BLE001 - reported as the broken clause
                raise _fail(who, "child", f"{sp.format(a)}: child(arch) failed: {type(e).__name__}: {e}") from e
            diff = float((y_path - y_child).abs().max())
            if not diff <= atol:
                raise _fail(who, "child", f"{sp.format(a)}: child differs from the supernet path by {diff:.3g}")
            outs.append((sp.format(a), y_path))
    distinct = {s for s, _ in outs}
    if len(distinct) > 1 and all(torch.equal(outs[0][1], y) for _, y in outs[1:]):
        raise _fail(who, "forward_path", f"{len(distinct)} different architectures give identical outputs: "
                    "forward_path ignores what set_active chose")

    # the cost table equals fvcore on the built child
    bad = [r for r in check_table(sp, archs[:3]) if not r["ok"]]
    if bad:
        r = bad[0]
        raise _fail(who, "cost table", f"{r['arch']}: table {r['table_macs']:,} MACs / {r['table_params']:,} params, "
                    f"fvcore {r['fvcore_macs']:,} MACs / child {r['params']:,} params")

    # restriction and enumeration agree
    keep = {i: list(allowed[:2]) for i, allowed in enumerate(sp.allowed)}
    restricted = sp.restrict(keep)
    counted = 0
    for a in restricted.enumerate():
        counted += 1
        if counted > 20_000:
            break
        if not all(set(option_members(o)) <= set(keep[i]) for i, o in enumerate(a.ops)) or not sp.contains(a):
            raise _fail(who, "restrict", f"enumeration of the restricted space yields {a}, outside it")
    if counted <= 20_000 and counted != restricted.size():
        raise _fail(who, "restrict/enumerate", f"enumerate() yields {counted} architectures, size() says "
                    f"{restricted.size()}")
    for _ in range(samples):
        a = restricted.sample(rng)
        if not restricted.contains(a):
            raise _fail(who, "restrict", f"sampling the restricted space gave {a}, outside it")
    names = [n for n, _ in restricted.build_supernet().named_parameters()]
    if names != [n for n, _ in net.named_parameters()]:
        raise _fail(who, "restrict", "a restricted space builds a different supernet (weights could not carry over)")

    # export round-trips: TorchScript of the child computes the same
    import warnings

    a = archs[0]
    child = net.child(a).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(child, x, check_trace=False)
        import io

        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        buf.seek(0)
        loaded = torch.jit.load(buf)
        diff = float((loaded(x) - child(x)).abs().max())
    if not diff <= atol:
        raise _fail(who, "export", f"{sp.format(a)}: the TorchScript model differs from the child by {diff:.3g}")


# -- runs with an interruption ---------------------------------------------------------------------------
class Interrupted(BaseException):
    """Raised by the contract suite to kill a run at a chosen point (then it resumes it).

    A ``BaseException``, like the ``KeyboardInterrupt`` of a real kill: plugin error handling that
    catches ``Exception`` lets it through, as it would a kill."""


def _wrap_factory(registry: Registry, role: str, name: str, wrap: Callable[[Any, Any], Any]) -> Callable[[], None]:
    """Make ``registry`` build ``role name`` as ``wrap(obj, ctx)``; returns the undo."""
    import attrs

    comp = registry.components[role][name]

    def factory(cfg: Any, ctx: Any) -> Any:
        return wrap(comp.factory(cfg, ctx), ctx)

    registry.components[role][name] = attrs.evolve(comp, factory=factory)
    return lambda: registry.components[role].__setitem__(name, comp)


class _CountingEvaluator:
    """An evaluator that raises :class:`Interrupted` on its ``after``-th ``score`` call."""

    def __init__(self, inner: Any, after: int, calls: list[int]) -> None:
        self._inner, self._after, self._calls = inner, after, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def score(self, archs: Any, ctx: Any) -> Any:
        self._calls.append(len(archs))
        if self._after and len(self._calls) >= self._after:
            raise Interrupted(f"contract suite: killed at score() call {len(self._calls)}")
        return self._inner.score(archs, ctx)


def _base_config(config: Mapping[str, Any] | None, seed: int) -> dict[str, Any]:
    cfg = tiny_config(seed=seed)
    if config:
        cfg.update({k: v for k, v in config.items()})
    return cfg


def _kill_and_resume(reg: Registry, role: str, name: str, wrap: Callable[[Any, Any], Any], cfg: Any,
                     run_dir: Path, smoke: bool, who: str, *, must_interrupt: bool) -> Any:
    """Run ``cfg`` with the ``role`` component wrapped so it raises :class:`Interrupted` (a kill), then
    resume the folder to the end and return the resumed run's context."""
    from nascore.pipeline.run import resume_run, run_pipeline

    undo = _wrap_factory(reg, role, name, wrap)
    try:
        run_config(cfg, run_dir, registry=reg, smoke=smoke)
        if must_interrupt:
            raise _fail(who, "resume", "the run was not interrupted (the suite's kill did not happen)")
    except Interrupted:
        pass
    finally:
        undo()
    ctx = resume_run(run_dir, quiet=True, registry=reg)
    try:
        run_pipeline(ctx)
    finally:
        ctx.close()
    return ctx


def check_selector(name: str, run_dir: Path, *, options: Mapping[str, Any] | None = None,
                   registry: Registry | None = None, config: Mapping[str, Any] | None = None,
                   evaluator: str | Mapping[str, Any] = "params", before: list[dict[str, Any]] | None = None,
                   constraint: Mapping[str, Any] | None = None, seed: int = 0, smoke: bool = True) -> list[Any]:
    """The selector contract; ``before``: stages to run first (its trainer), ``config``: the run's config
    fields (space, dataset …), ``constraint`` defaults to a MACs limit at the space's median. A
    shrinking selector (one that returns a restricted space and no candidates) is held to the same
    checks on the space it leaves. Returns the uninterrupted run's candidates."""
    who = f"selector {name!r}"
    reg = registry or make_registry()
    cfg = _base_config(config, seed)
    ev = {"name": evaluator} if isinstance(evaluator, str) else dict(evaluator)
    search = {"kind": "search", "selector": {"name": name, "options": dict(options or {})}, "evaluator": ev}
    cfg.update(stages=[*(before or []), search])
    if constraint is None:  # the median MACs of the space at the run's own input shape
        probe = make_context(cfg, registry=reg, smoke=smoke)
        try:
            rng = random.Random(seed)
            macs = sorted(probe.cost.macs(probe.space.sample(rng)) for _ in range(64))
        finally:
            probe.close()
        constraint = {"macs_max": macs[len(macs) // 2]}
    cfg["constraint"] = dict(constraint)
    run_dir = Path(run_dir)

    calls: list[int] = []
    undo = _wrap_factory(reg, "evaluator", ev["name"], lambda obj, ctx: _CountingEvaluator(obj, 0, calls))
    try:
        first = run_config(cfg, run_dir / "a", registry=reg, smoke=smoke)
    finally:
        undo()
    cands = list(first.candidates)
    shrunk = first.space.allowed_json() != first.base_space.allowed_json()
    if not cands and not shrunk:
        raise _fail(who, "search", "returned no candidates and no restricted space")
    for i, (now, was) in enumerate(zip(first.space.allowed, first.base_space.allowed)):
        if not set(now) <= set(was):
            raise _fail(who, "space", f"decision {i}: the returned space allows {sorted(set(now) - set(was))}, "
                        "which the run's space does not (restrict() the space you were given)")
    for c in cands:
        if not first.feasible(c.arch):
            raise _fail(who, "constraint", f"{c.arch_str} ({c.macs:,} MACs, {c.params:,} params) breaks "
                        f"{first.constraint.describe()}")
        if not first.base_space.contains(c.arch):
            raise _fail(who, "space", f"{c.arch_str} is not an architecture of the run's space")

    second = run_config(cfg, None, registry=reg, smoke=smoke)
    if _outcome(second) != _outcome(first):
        raise _fail(who, "determinism", f"the same seed gave {_outcome(second)} then {_outcome(first)} "
                    "(ranking, space): draw randomness from ctx.stage_seed()")

    # killed during its search (at the middle score() call, when it calls its evaluator), then resumed
    after = max(1, (len(calls) + 1) // 2) if calls else 0
    ctx = _kill_and_resume(reg, "evaluator", ev["name"], lambda obj, ctx: _CountingEvaluator(obj, after, []),
                           cfg, run_dir / "b", smoke, who, must_interrupt=bool(after))
    if _outcome(ctx) != _outcome(first):
        raise _fail(who, "resume", f"killed at score() call {after} of {len(calls)} and resumed it gave "
                    f"{_outcome(ctx)}, uninterrupted {_outcome(first)} (ranking, space)")
    return cands


# -- evaluators ----------------------------------------------------------------------------------------------
def check_evaluator(name: str, *, options: Mapping[str, Any] | None = None, registry: Registry | None = None,
                    config: Mapping[str, Any] | None = None, before: list[dict[str, Any]] | None = None,
                    archs: int = 4, seed: int = 0, smoke: bool = True) -> list[dict[str, float]]:
    """The evaluator contract, on a context after ``before`` (default: one epoch of ``single_path``)."""
    from nascore.config import Ref
    from nascore.search import objective

    who = f"evaluator {name!r}"
    reg = registry or make_registry()
    cfg = _base_config(config, seed)
    if before is not None:
        cfg["stages"] = before
    ctx = run_config(cfg, None, registry=reg, smoke=smoke)
    ctx.stage_key = "contract"
    rng = random.Random(seed)
    sample = list(dict.fromkeys(ctx.space.sample(rng) for _ in range(archs * 4)))[:archs]
    comp = reg.get("evaluator", name)

    def fresh() -> Any:
        return ctx.build("evaluator", Ref(name=name, options=dict(options or {})), "contract.evaluator")

    ev = fresh()
    if not isinstance(getattr(ev, "metric", None), str) or not isinstance(getattr(ev, "higher_is_better", None), bool):
        raise _fail(who, "declaration", "needs metric: str and higher_is_better: bool")
    scores = ev.score(sample, ctx)
    if not isinstance(scores, list) or len(scores) != len(sample):
        raise _fail(who, "score", f"returned {type(scores).__name__} of {len(scores) if hasattr(scores, '__len__') else '?'}"
                    f" for {len(sample)} architectures: one dict per architecture, in order")
    for a, m in zip(sample, scores):
        if ev.metric not in m:
            raise _fail(who, "metric", f"{ctx.space.format(a)}: no {ev.metric!r} in {sorted(m)}")
        value = float(m[ev.metric])
        if not math.isfinite(value):
            raise _fail(who, "score", f"{ctx.space.format(a)}: {ev.metric} = {value}")
        want = value if ev.higher_is_better else -value
        if objective(ev, m) != want:
            raise _fail(who, "direction", f"objective {objective(ev, m)} != {want} (higher_is_better={ev.higher_is_better})")
    again = fresh().score(list(reversed(sample)), ctx)[::-1]
    for a, m1, m2 in zip(sample, scores, again):
        if float(m1[ev.metric]) != float(m2[ev.metric]):
            raise _fail(who, "determinism", f"{ctx.space.format(a)}: {m1[ev.metric]} then {m2[ev.metric]} (scored in "
                        "another order by a fresh instance): seed from ctx.stage_seed(), not a global stream")
    alone = fresh().score(sample[-1:], ctx)[0]
    if float(alone[ev.metric]) != float(scores[-1][ev.metric]):
        raise _fail(who, "determinism", f"{ctx.space.format(sample[-1])}: {scores[-1][ev.metric]} with others, "
                    f"{alone[ev.metric]} alone")
    del comp
    return scores


# -- trainers ------------------------------------------------------------------------------------------------
def _recording_supernet(net: Any, seen: list[Any], interrupt_after: int = 0) -> None:
    """Swap ``net``'s class for one whose ``set_active`` records (and optionally interrupts)."""
    base = type(net)
    if getattr(base, "_contract_recording", False):
        base = base.__mro__[1]

    def set_active(self: Any, arch: Any, weights: Any = None) -> None:
        if not self.is_child:
            seen.append(arch)
            if interrupt_after and len(seen) >= interrupt_after:
                raise Interrupted(f"contract suite: killed at set_active call {len(seen)}")
        base.set_active(self, arch, weights)

    net.__class__ = type(base.__name__, (base,), {"set_active": set_active, "_contract_recording": True,
                                                  "__module__": base.__module__})


def _train_stage(name: str, options: Mapping[str, Any] | None, distiller: Any = None) -> dict[str, Any]:
    st: dict[str, Any] = {"kind": "train", "trainer": {"name": name, "options": dict(options or {})}}
    if distiller is not None:
        st["distiller"] = distiller
    return st


def check_trainer(name: str, run_dir: Path, *, options: Mapping[str, Any] | None = None,
                  registry: Registry | None = None, config: Mapping[str, Any] | None = None,
                  before: list[dict[str, Any]] | None = None, distiller: Any = None, seed: int = 0,
                  smoke: bool = True, trains_every_op: bool = False) -> None:
    """The trainer contract on a run whose last stage trains with it (``before``: stages run first, with
    other trainers). ``trains_every_op``: a trainer that updates every op by design (mixed-op α) skips the
    untouched-ops check; the rest still applies."""
    who = f"trainer {name!r}"
    reg = registry or make_registry()
    cfg = _base_config(config, seed)
    cfg["stages"] = [*(before or []), _train_stage(name, options, distiller)]
    run_dir = Path(run_dir)
    seen: list[Any] = []
    start: dict[str, torch.Tensor] = {}

    def recording(obj: Any, ctx: Any) -> Any:  # built at the start of its stage: snapshot, then record
        start.update({n: p.detach().clone() for n, p in ctx.supernet.named_parameters()})
        _recording_supernet(ctx.supernet, seen)
        return obj

    undo = _wrap_factory(reg, "trainer", name, recording)
    try:
        ctx = run_config(cfg, run_dir / "a", registry=reg, smoke=smoke)
    finally:
        undo()
    net = ctx.supernet
    if not seen:
        raise _fail(who, "training", "no path was ever set active: train through supernet.set_active / forward(x, arch)")
    end = {n: p.detach() for n, p in net.named_parameters()}
    if all(torch.equal(start[n], end[n]) for n in end):
        raise _fail(who, "training", "no weight changed")
    if any(not torch.isfinite(v).all() for v in end.values()):
        raise _fail(who, "training", "non-finite weights after training")
    if not trains_every_op:
        names = {id(p): n for n, p in net.named_parameters()}
        used: list[set[str]] = [set() for _ in net.space.decisions]
        for a in seen:
            for i, o in enumerate(a.ops):
                used[i].update(option_members(o))
        for i, layers in enumerate(net.candidate_parameters()):
            for layer in layers:
                for op, params in layer.items():
                    if op in used[i]:
                        continue
                    for p in params:
                        n = names[id(p)]
                        if not torch.equal(start[n], end[n]):
                            raise _fail(who, "unused ops", f"{n} (decision {i}, op {op!r}, never on a trained path) "
                                        "changed: clear unused gradients (SupernetTrainer does) and keep weight "
                                        "decay/momentum off them")
    final = {k: v.detach().clone() for k, v in net.state_dict().items()}

    # killed in the middle of its stage (at the middle set_active call), resumed: the same weights
    after = max(1, len(seen) // 2)

    def interrupting(obj: Any, ctx: Any) -> Any:
        _recording_supernet(ctx.supernet, [], interrupt_after=after)
        return obj

    ctx = _kill_and_resume(reg, "trainer", name, interrupting, cfg, run_dir / "b", smoke, who, must_interrupt=True)
    got = ctx.supernet.state_dict()
    diff = [k for k in final if not torch.equal(final[k], got[k])]
    if diff:
        worst = max(float((final[k].float() - got[k].float()).abs().max()) for k in diff)
        raise _fail(who, "resume", f"killed at path {after} of {len(seen)} and resumed, {len(diff)} tensors differ "
                    f"from the uninterrupted run (max {worst:.3g}), e.g. {diff[0]}: checkpoint through ctx.checkpoints "
                    "and restore every random stream")


def check_distiller(name: str, run_dir: Path, *, options: Mapping[str, Any] | None = None,
                    registry: Registry | None = None, config: Mapping[str, Any] | None = None,
                    trainer: str = "single_path", trainer_options: Mapping[str, Any] | None = None,
                    before: list[dict[str, Any]] | None = None, seed: int = 0, smoke: bool = True) -> None:
    """The distiller contract: ``replaces_ce`` declared; a train stage with it trains to finite, changed weights."""
    who = f"distiller {name!r}"
    reg = registry or make_registry()
    cfg = _base_config(config, seed)
    dist = {"name": name, "options": dict(options or {})}
    cfg["stages"] = [*(before or []), _train_stage(trainer, trainer_options, dist)]
    ctx = run_config(cfg, Path(run_dir), registry=reg, smoke=smoke)
    d = ctx.distiller
    if d is not None and not isinstance(getattr(d, "replaces_ce", None), bool):
        raise _fail(who, "declaration", "needs replaces_ce: bool")
    w = ctx.supernet.state_dict()
    if any(v.is_floating_point() and not torch.isfinite(v).all() for v in w.values()):
        raise _fail(who, "training", "non-finite weights after a train stage with it")


# -- pytest fixtures (opt in: ``pytest -p nascore.testing`` or ``pytest_plugins = ["nascore.testing"]``) -------
def _fixture(fn: Callable[..., Any]) -> Any:
    if pytest is not None:
        return pytest.fixture(fn)

    def needs_pytest(*args: Any, **kwargs: Any) -> Any:
        raise ImportError(f"the fixture {fn.__name__!r} of nascore.testing needs pytest: pip install pytest")

    needs_pytest.__name__ = fn.__name__
    return needs_pytest


@_fixture
def one_thread() -> None:
    torch.set_num_threads(1)


@_fixture
def rng() -> random.Random:
    return random.Random(0)


@_fixture
def nascore_registry() -> Registry:
    """The built-ins and every installed plugin (entry points), as the CLI sees them."""
    return build_registry()


__all__ = ["ContractError", "Interrupted", "build_space", "check_distiller", "check_evaluator", "check_selector",
           "check_space", "check_trainer", "make_context", "make_registry", "run_config", "tiny_config"]
