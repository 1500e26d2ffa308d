"""Measured latency lookup tables: build, load, check, and latency as a cost.

**Table.** :func:`build_table` times, on the machine it runs on, every (decision, option) block of
a space on the input it sees inside the network (recorded with every option active, as the MACs
table does), at a chosen batch size, with a pinned thread count, for one backend: ``eager``
PyTorch, ``torchscript`` (traced and frozen) or ``onnxruntime``. Each entry is the median of
``repeats`` samples after ``warmup`` runs (a sample averages enough calls to last
``min_sample_ms``), with its inter-quartile spread. The fixed part (stem, head and the per-network
overhead) is the median, over a few reference children timed end to end, of the child's time
minus its blocks. The file records where it was measured (device model, backend and version,
torch version, threads, batch, date) and for what (space name and resolved options, input shape,
decisions, a fingerprint of the MACs table) — a run refuses a table for another space, options or
input shape and warns for another device or backend (:meth:`LatencyTable.check_for`).

**As a cost.** :meth:`LatencyTable.attach` puts the (calibrated) per-option milliseconds into the
run's :class:`nascore.cost.CostTable`, so ``ResourceConstraint`` (``latency_ms_min/max``) and every
method that checks feasibility through ``ctx.feasible``/``check_feasible`` honours latency with no
method-specific code. The prediction stays a sum of per-option terms (an affine calibration
``scale·Σ blocks + offset`` with ``scale > 0`` keeps it one), so bounds and branch-and-bound
combiners stay exact.

**Proof.** :func:`check` times ``n`` random children end to end with the same backend, batch and
threads and reports, per prediction model (plain sum, fitted constant, affine, per-transition
terms, a small regression over table features; fitted ones scored out of fold), the mean absolute
percentage error, the share within ±10 % and Kendall's τ.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import platform
import random
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from nascore.arch import Architecture, option_members
from nascore.cost import CostTable, record_candidate_inputs
from nascore.errors import ConfigError, NascoreError
from nascore.groundtruth.testbed import kendall_tau
from nascore.io import read_json, write_json

SCHEMA = "nascore.latency/1"
BACKENDS = ("eager", "torchscript", "onnxruntime")
Backend = Literal["eager", "torchscript", "onnxruntime"]

# A timer runs ``fn`` (which runs ``module`` on ``x``) and returns latency samples in ms. The wall
# timer ignores ``module``/``x``; a test's fake timer computes a deterministic time from them.
Timer = Callable[[Callable[[], Any], nn.Module, torch.Tensor], list[float]]


class LatencyWarning(UserWarning):
    """A latency table measured on another device or backend than the one in use."""


# -- where we are ----------------------------------------------------------------------------------
def device_model(device: str = "cpu") -> str:
    """A human-readable model of the device (CPU model name, or the CUDA device name)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def backend_version(backend: str) -> str:
    if backend == "onnxruntime":
        return _ort().__version__
    return torch.__version__


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise NascoreError("the onnxruntime backend needs the onnxruntime package",
                           hint="pip install onnxruntime, or use --backend torchscript / eager") from None
    return ort


# -- timing -----------------------------------------------------------------------------------------
@attrs.frozen
class WallTimer:
    """Median-ready wall-clock samples: ``warmup`` calls, then ``repeats`` samples of
    ``inner`` calls each, ``inner`` chosen so that one sample lasts about ``min_sample_ms``."""

    warmup: int = 10
    repeats: int = 30
    min_sample_ms: float = 1.0
    cuda: bool = False

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], Any], module: nn.Module | None = None, x: torch.Tensor | None = None) -> list[float]:
        clock = time.perf_counter
        for _ in range(max(1, self.warmup)):
            fn()
        self._sync()
        t0 = clock()
        fn()
        self._sync()
        one = (clock() - t0) * 1e3
        inner = max(1, min(1000, math.ceil(self.min_sample_ms / max(one, 1e-4))))
        out = []
        for _ in range(self.repeats):
            t0 = clock()
            for _ in range(inner):
                fn()
            self._sync()
            out.append((clock() - t0) * 1e3 / inner)
        return out


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median and spread (inter-quartile range, min) of latency samples in ms."""
    s = sorted(float(v) for v in samples)
    if not s:
        raise ValueError("no latency samples")

    def q(p: float) -> float:
        pos = p * (len(s) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return {"median_ms": q(0.5), "p10_ms": q(0.1), "iqr_ms": q(0.75) - q(0.25), "min_ms": s[0], "n": len(s)}


ESTIMATORS = ("median", "p10", "min")


def estimate(stats: dict[str, float], estimator: str) -> float:
    """The value a table keeps for one block: the median (default), the 10th percentile or the
    minimum of its samples — the low ones are robust when other processes preempt the timing."""
    return float(stats[f"{estimator}_ms"])


def compile_for(module: nn.Module, x: torch.Tensor, backend: str, threads: int) -> Callable[[], Any]:
    """A no-argument callable that runs ``module`` on ``x`` with ``backend`` (what gets timed)."""
    module = module.eval()
    if backend == "eager":
        def run_eager() -> Any:
            with torch.inference_mode():
                return module(x)
        return run_eager
    if backend == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            ts = torch.jit.freeze(torch.jit.trace(module, x, check_trace=False).eval())

        def run_ts() -> Any:
            with torch.no_grad():
                return ts(x)
        return run_ts
    if backend == "onnxruntime":
        ort = _ort()
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), buf, input_names=["input"], dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.detach().cpu().numpy()} if sess.get_inputs() else {}
        if not feed:  # an op whose output does not depend on its input (e.g. a constant zero)
            return lambda: None

        def run_ort() -> Any:
            return sess.run(None, feed)
        return run_ort
    raise NascoreError(f"unknown latency backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")


# -- the table file ---------------------------------------------------------------------------------
class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    median_ms: float = Field(ge=0)
    p10_ms: float | None = Field(None, ge=0)
    iqr_ms: float = Field(0.0, ge=0)
    min_ms: float = Field(0.0, ge=0)
    n: int = Field(0, ge=0)


class _Fixed(BaseModel):
    """The fixed part: stem, head and per-network overhead; negative when isolated blocks carry
    more call overhead than they cost inside the whole network."""

    model_config = ConfigDict(extra="forbid")
    median_ms: float
    p10_ms: float | None = None
    iqr_ms: float = Field(0.0, ge=0)
    min_ms: float = 0.0
    n: int = Field(0, ge=0)


class _Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["constant", "affine"]
    scale: float = Field(gt=0)
    offset: float
    fitted_on: int = Field(ge=1)
    date: str = ""


class _TableFile(BaseModel):
    """The JSON layout of a latency table (``nascore lut build`` writes it)."""

    model_config = ConfigDict(extra="forbid")
    schema_: Literal["nascore.latency/1"] = Field(alias="schema")
    space: dict[str, Any]
    input_shape: list[int] = Field(min_length=3, max_length=3)
    batch: int = Field(ge=1)
    backend: str
    backend_version: str
    torch: str
    device: str
    device_model: str
    threads: int = Field(ge=1)
    date: str
    warmup: int = Field(ge=0)
    repeats: int = Field(ge=1)
    estimator: Literal["median", "p10", "min"] = "median"
    decisions: list[dict[str, Any]]
    macs_fingerprint: str
    fixed: _Fixed
    fixed_references: list[dict[str, Any]] = Field(default_factory=list)
    blocks: list[dict[str, _Entry]]
    calibration: _Calibration | None = None
    build_seconds: float = 0.0


def macs_fingerprint(table: CostTable) -> str:
    """A short hash of the MACs/params table: differs when the space's options change its blocks."""
    return hashlib.sha256(json.dumps(table.to_json(), sort_keys=True).encode()).hexdigest()[:16]


@attrs.frozen
class LatencyTable:
    """Per-(decision, option) latency in ms plus a fixed part, and what it was measured on."""

    meta: dict[str, Any]
    fixed_ms: float
    blocks: tuple[dict[str, float], ...]
    calibration: dict[str, Any] | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    # -- prediction ---------------------------------------------------------------------------
    def block_sum(self, arch: Architecture) -> float:
        """Σ of the chosen options' block latencies (a set-valued option sums its members)."""
        return sum(self.blocks[i][o] for i, opt in enumerate(arch.ops) for o in option_members(opt))

    @property
    def scale(self) -> float:
        return float(self.calibration["scale"]) if self.calibration else 1.0

    @property
    def offset(self) -> float:
        return float(self.calibration["offset"]) if self.calibration else self.fixed_ms

    def predict(self, arch: Architecture) -> float:
        """Predicted end-to-end latency (ms): ``scale·Σ blocks + offset`` (plain sum + fixed part
        when the table is not calibrated)."""
        return self.scale * self.block_sum(arch) + self.offset

    def attach(self, cost: Any) -> Any:
        """``cost`` (the run's MACs/params table) carrying this table's predicted latency.

        A :class:`nascore.cost.CostTable` gets the per-option ms as fields; any other cost table
        (NEAS's ensembles, a space's own) is wrapped so that it gains ``latency_ms(arch)`` and
        ``latency_bounds(allowed)`` and keeps everything else."""
        s = self.scale
        per = tuple({o: s * v for o, v in b.items()} for b in self.blocks)
        if isinstance(cost, CostTable):
            if len(cost.macs_table) != len(self.blocks):
                raise NascoreError(f"the latency table has {len(self.blocks)} decisions, the space {len(cost.macs_table)}")
            return attrs.evolve(cost, latency_fixed_ms=self.offset, latency_ms_table=per)
        return WithLatency(cost, self.offset, per)

    # -- identity -----------------------------------------------------------------------------
    def check_for(self, space_name: str, space_options: dict[str, Any], input_shape: Sequence[int],
                  cost: CostTable, *, device: str = "cpu", backend: str | None = None, source: str = "latency table") -> None:
        """Refuse a table measured for another space, options or input shape; warn for another
        device model or backend (a table is only as good as the machine it was timed on)."""
        m = self.meta
        problems = []
        if m["space"].get("name") != space_name:
            problems.append(f"it was measured for space {m['space'].get('name')!r}, this run uses {space_name!r}")
        elif _norm(m["space"].get("options", {})) != _norm(space_options):
            problems.append(f"it was measured for space options {m['space'].get('options')}, this run uses {space_options}")
        if tuple(m["input_shape"]) != tuple(int(v) for v in input_shape):
            problems.append(f"it was measured at input shape {'x'.join(map(str, m['input_shape']))}, "
                            f"this run's is {'x'.join(map(str, input_shape))}")
        if not problems and m.get("macs_fingerprint") != macs_fingerprint(cost):
            problems.append("its blocks do not match this space's (the MACs table differs)")
        if problems:
            raise ConfigError([f"{source}: " + p for p in problems] +
                              [f"{source}: build one for this space: nascore lut build {space_name} "
                               f"--input {'x'.join(map(str, input_shape))} (with the same --option values)"],
                              source=source)
        here = device_model(device)
        if m["device_model"] != here:
            warnings.warn(f"{source} was measured on {m['device_model']!r}, this machine is {here!r}: "
                          "predicted latency may not hold here (build a table on this machine)", LatencyWarning, stacklevel=2)
        if backend is not None and m["backend"] != backend:
            warnings.warn(f"{source} was measured with backend {m['backend']!r}, not {backend!r}", LatencyWarning, stacklevel=2)

    # -- files --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out = dict(self.raw)
        out["calibration"] = self.calibration
        return out

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: Any, source: str = "latency table") -> "LatencyTable":
        try:
            f = _TableFile.model_validate(data)
        except ValidationError as e:
            from nascore.config import format_pydantic

            raise ConfigError(format_pydantic(e), source=source) from None
        names = [d.get("options", []) for d in f.decisions]
        if len(f.blocks) != len(names) or any(sorted(b) != sorted(o) for b, o in zip(f.blocks, names)):
            raise ConfigError(["blocks: one entry per option of every decision is required"], source=source)
        meta = f.model_dump(by_alias=True, exclude={"blocks", "fixed", "calibration"})
        key = f"{f.estimator}_ms"
        blocks = tuple({o: float(getattr(e, key) if getattr(e, key) is not None else e.median_ms) for o, e in b.items()}
                       for b in f.blocks)
        cal = f.calibration.model_dump() if f.calibration else None
        return cls(meta, f.fixed.median_ms, blocks, cal, raw=f.model_dump(by_alias=True, mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        p = Path(path)
        if not p.exists():
            raise ConfigError([f"{p}: no such latency table"], source="constraint.latency_table")
        try:
            data = read_json(p)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise ConfigError([f"{p}: not a latency table ({type(e).__name__}: {e})"], source=str(p)) from None
        return cls.from_json(data, source=str(p))

    def describe(self) -> str:
        m = self.meta
        cal = f", calibrated ({self.calibration['model']})" if self.calibration else ""
        return (f"{m['space']['name']} {'x'.join(map(str, m['input_shape']))} batch {m['batch']}, {m['backend']} "
                f"{m['backend_version']}, {m['threads']} thread(s), {m['device_model']}, {m['date'][:10]}{cal}")


class WithLatency:
    """Any cost table plus an additive predicted latency (for cost tables that are not a
    :class:`nascore.cost.CostTable`, e.g. NEAS's ensemble table)."""

    def __init__(self, base: Any, fixed_ms: float, per_option: tuple[dict[str, float], ...]) -> None:
        self._base = base
        self._view = CostTable((0, 0, 0), 0, 0, tuple({} for _ in per_option), tuple({} for _ in per_option),
                               latency_fixed_ms=fixed_ms, latency_ms_table=per_option)
        self.latency_fixed_ms = fixed_ms
        self.latency_ms_table = per_option

    has_latency = True

    def latency_ms(self, arch: Architecture) -> float | None:
        return self._view.latency_ms(arch)

    def latency_bounds(self, allowed: Sequence[Sequence[str]] | None = None) -> tuple[float, float] | None:
        return self._view.latency_bounds(allowed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def _norm(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, default=str)


# -- building ---------------------------------------------------------------------------------------
def recorded_blocks(space: Any, net: nn.Module, input_shape: Sequence[int], batch: int) -> list[tuple[int, str, nn.Module, torch.Tensor]]:
    """(decision, option, candidate module, its input at ``batch``) for every bound candidate."""
    # Every option of every decision at once; a decision without blocks (a split point) keeps its first.
    everything = Architecture([frozenset(d.options) if len(d.options) > 1 and net.choice_layers(i) else d.options[0]
                               for i, d in enumerate(space.decisions)])
    recorded = record_candidate_inputs(space, net, everything, (1, *input_shape))
    gen = torch.Generator().manual_seed(0)
    out = []
    for i, d in enumerate(space.decisions):
        for layer in net.choice_layers(i):
            for name, mod in layer.candidates.items():
                if id(mod) in recorded:
                    shape = recorded[id(mod)].shape[1:]
                    out.append((i, name, mod, torch.randn(batch, *shape, generator=gen)))
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def build_table(
    space: Any, *, space_name: str, space_options: dict[str, Any] | None = None, input_shape: Sequence[int] | None = None,
    backend: str = "torchscript", batch: int = 1, threads: int = 1, warmup: int = 10, repeats: int = 30,
    references: int = 3, device: str = "cpu", timer: Timer | None = None, seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None, estimator: str = "median",
) -> LatencyTable:
    """Time every (decision, option) block and the fixed part of ``space`` (see module docstring)."""
    if backend not in BACKENDS:
        raise NascoreError(f"unknown latency backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if estimator not in ESTIMATORS:
        raise NascoreError(f"unknown estimator {estimator!r}", hint=f"use one of {', '.join(ESTIMATORS)}")
    if backend != "eager" and device != "cpu" and backend == "onnxruntime":
        raise NascoreError("the onnxruntime backend here runs on the CPU only", hint="use --backend torchscript on CUDA")
    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    shape = tuple(int(v) for v in (input_shape or space.input_shape))
    timer = timer or WallTimer(warmup=warmup, repeats=repeats, cuda=device.startswith("cuda"))
    cost = space.cost_table(shape)
    net = space.build_supernet().eval()
    items = recorded_blocks(space, net, shape, batch)
    rng = random.Random(seed)
    refs = [space.first()] + [space.sample(rng) for _ in range(max(0, references - 1))]
    bound = {i for i, _, _, _ in items}
    structural = [i for i in range(len(space.decisions)) if i not in bound and len(space.decisions[i].options) > 1]
    for i in structural:  # a decision with no blocks (a split point): time children with each option
        for o in space.decisions[i].options:
            for a in list(refs):
                if a.ops[i] == o:
                    break
            else:
                refs.extend(_with_option(space, rng, i, o, tries=50))
    total = len(items) + len(refs)
    entries: list[dict[str, list[float]]] = [{o: [] for o in d.options} for d in space.decisions]
    medians: list[dict[str, float]] = [{o: 0.0 for o in d.options} for d in space.decisions]
    for k, (i, name, mod, x) in enumerate(items):
        if progress:
            progress(k, total, f"{space.decisions[i].name}:{name}")
        mod, x = mod.to(device), x.to(device)
        samples = timer(compile_for(mod, x, backend, threads), mod, x)
        entries[i][name].extend(samples)
        medians[i][name] += estimate(summarize(samples), estimator)  # a decision bound in several layers adds up
    blocks_json = []
    for i, d in enumerate(space.decisions):
        row = {}
        for o in d.options:
            s = entries[i][o]
            e = summarize(s) if s else {"median_ms": 0.0, "iqr_ms": 0.0, "min_ms": 0.0, "n": 0}
            e[f"{estimator}_ms"] = medians[i][o]  # the sum over the decision's layers
            row[o] = e
        blocks_json.append(row)
    partial = LatencyTable({}, 0.0, tuple(medians))
    ref_rows, diffs = [], []
    for k, a in enumerate(refs):
        if progress:
            progress(len(items) + k, total, f"reference child {k + 1}/{len(refs)}")
        child = net.child(a).eval().to(device)
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(k)).to(device)
        whole = summarize(timer(compile_for(child, x, backend, threads), child, x))
        diffs.append(estimate(whole, estimator) - partial.block_sum(a))
        ref_rows.append({"arch": space.format(a), "measured_ms": estimate(whole, estimator), "blocks_ms": partial.block_sum(a)})
    if progress:
        progress(total, total, "done")
    for i in structural:  # decisions without blocks: per-option offsets from the reference children
        meds = {o: summarize(v)["median_ms"] for o in space.decisions[i].options
                if (v := [dv for dv, a in zip(diffs, refs) if a.ops[i] == o])}
        low = min(meds.values()) if meds else 0.0
        for o in space.decisions[i].options:
            n_o = sum(1 for a in refs if a.ops[i] == o)
            v = meds.get(o, low) - low
            blocks_json[i][o] = {"median_ms": v, "p10_ms": v, "iqr_ms": 0.0, "min_ms": v, "n": n_o}
    offsets = [sum(blocks_json[i][a.ops[i]]["median_ms"] for i in structural) for a in refs]
    fixed = summarize([dv - off for dv, off in zip(diffs, offsets)])
    raw = {
        "schema": SCHEMA, "space": {"name": space_name, "options": dict(space_options or {})},
        "input_shape": list(shape), "batch": int(batch), "backend": backend, "backend_version": backend_version(backend),
        "torch": torch.__version__, "device": device, "device_model": device_model(device),
        "threads": int(torch.get_num_threads()), "date": _now(), "warmup": int(warmup), "repeats": int(repeats),
        "estimator": estimator,
        "decisions": [{"name": d.name, "options": list(d.options)} for d in space.decisions],
        "macs_fingerprint": macs_fingerprint(cost),
        "fixed": fixed,
        "fixed_references": ref_rows, "blocks": blocks_json, "calibration": None,
        "build_seconds": round(time.perf_counter() - t_start, 2),
    }
    return LatencyTable.from_json(raw)


def _with_option(space: Any, rng: random.Random, i: int, option: str, tries: int) -> list[Architecture]:
    """One valid random architecture with ``option`` at decision ``i`` (none if none is found)."""
    for _ in range(tries):
        ops = list(space.sample(rng).ops)
        ops[i] = option
        a = Architecture(ops)
        try:
            space.check(a)
        except NascoreError:
            continue
        if getattr(space, "is_valid", lambda _a: True)(a):
            return [a]
    return []


def measure_exported(model: nn.Module, folder: str | Path, meta: dict[str, Any], input_shape: Sequence[int],
                     timer: Timer | None = None) -> dict[str, Any]:
    """Latency of an exported model, timed as the table ``meta`` was (backend, batch, threads):
    ``model.ts`` loaded and frozen for torchscript, ``model.onnx`` in ONNX Runtime, else ``model``."""
    folder = Path(folder)
    backend, batch, threads = meta["backend"], int(meta["batch"]), int(meta["threads"])
    torch.set_num_threads(threads)
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    source = "module"
    timer = timer or WallTimer(warmup=int(meta.get("warmup", 10)), repeats=int(meta.get("repeats", 30)))
    if backend == "torchscript" and (folder / "model.ts").exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch >= 2.14 calls jit.load/freeze deprecated
            ts = torch.jit.freeze(torch.jit.load(str(folder / "model.ts")).eval())

        def fn() -> Any:
            with torch.no_grad():
                return ts(x)
        source = "model.ts"
    elif backend == "onnxruntime" and (folder / "model.onnx").exists():
        ort = _ort()
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}

        def fn() -> Any:
            return sess.run(None, feed)
        source = "model.onnx"
    else:
        fn = compile_for(model.eval(), x, backend, threads)
    out: dict[str, Any] = dict(summarize(timer(fn, model, x)))
    out.update({"backend": backend, "batch": batch, "threads": threads, "timed": source,
                "device_model": device_model("cpu")})
    return out


# -- prediction models ------------------------------------------------------------------------------
def _lstsq(rows: list[list[float]], y: list[float], ridge: float = 0.0) -> list[float]:
    a = torch.tensor(rows, dtype=torch.float64)
    b = torch.tensor(y, dtype=torch.float64).unsqueeze(1)
    if ridge > 0:
        n = a.shape[1]
        reg = torch.eye(n, dtype=torch.float64) * math.sqrt(ridge)
        reg[-1, -1] = 0.0  # the intercept (last column) is not shrunk
        a = torch.cat([a, reg])
        b = torch.cat([b, torch.zeros(n, 1, dtype=torch.float64)])
    return torch.linalg.lstsq(a, b, driver="gelsd").solution.squeeze(1).tolist()


@attrs.frozen
class ChildFeatures:
    """What the prediction models see of one child: its table sums and its option sequence."""

    block_sum: float
    fixed: float
    macs: float
    params: float
    ops: tuple[str, ...]


def _transition_keys(ops: Sequence[str]) -> list[str]:
    return [f"{a}>{b}" for a, b in zip(ops[:-1], ops[1:])]


class _Model:
    name = ""
    fitted = True

    def fit(self, xs: list[ChildFeatures], y: list[float]) -> "_Model":
        return self

    def predict(self, f: ChildFeatures) -> float:
        raise NotImplementedError


class PlainSum(_Model):
    """The table as built: fixed part + Σ blocks (nothing fitted on the checked children)."""

    name, fitted = "sum", False

    def predict(self, f: ChildFeatures) -> float:
        return f.fixed + f.block_sum


class FittedConstant(_Model):
    """Σ blocks + c, with c the mean per-network overhead of the fitting children."""

    name = "constant"

    def fit(self, xs: list[ChildFeatures], y: list[float]) -> "FittedConstant":
        self.c = sum(t - f.block_sum for f, t in zip(xs, y)) / len(xs)
        return self

    def predict(self, f: ChildFeatures) -> float:
        return f.block_sum + self.c


class Affine(_Model):
    """a·Σ blocks + c (least squares): overhead that grows with the work, plus a constant."""

    name = "affine"

    def fit(self, xs: list[ChildFeatures], y: list[float]) -> "Affine":
        self.a, self.c = _lstsq([[f.block_sum, 1.0] for f in xs], y)
        return self

    def predict(self, f: ChildFeatures) -> float:
        return self.a * f.block_sum + self.c


class Transitions(_Model):
    """Σ blocks + c + Σ t(option_i → option_i+1): per-transition interaction terms (ridge)."""

    name = "transitions"

    def __init__(self, ridge: float = 1.0) -> None:
        self.ridge = ridge

    def fit(self, xs: list[ChildFeatures], y: list[float]) -> "Transitions":
        self.keys = sorted({k for f in xs for k in _transition_keys(f.ops)})
        rows = [self._row(f) for f in xs]
        scale = max(1e-9, sum(y) / len(y))
        w = _lstsq(rows, [(t - f.block_sum) / scale for f, t in zip(xs, y)], ridge=self.ridge)
        self.w = [v * scale for v in w]
        return self

    def _row(self, f: ChildFeatures) -> list[float]:
        counts = dict.fromkeys(self.keys, 0.0)
        for k in _transition_keys(f.ops):
            if k in counts:
                counts[k] += 1.0
        return [counts[k] for k in self.keys] + [1.0]

    def predict(self, f: ChildFeatures) -> float:
        return f.block_sum + sum(a * b for a, b in zip(self._row(f), self.w))


class Regression(_Model):
    """Least squares over the table's features: Σ blocks, MACs, params, non-empty blocks, 1."""

    name = "regression"

    def _row(self, f: ChildFeatures) -> list[float]:
        busy = sum(1 for o in f.ops if o not in ("skip", "none", "skip_connect", "identity"))
        return [f.block_sum, f.macs / 1e6, f.params / 1e6, float(busy), 1.0]

    def fit(self, xs: list[ChildFeatures], y: list[float]) -> "Regression":
        scale = max(1e-9, sum(y) / len(y))
        self.w = [v * scale for v in _lstsq([self._row(f) for f in xs], [t / scale for t in y], ridge=1e-3)]
        return self

    def predict(self, f: ChildFeatures) -> float:
        return sum(a * b for a, b in zip(self._row(f), self.w))


MODELS: tuple[type[_Model], ...] = (PlainSum, FittedConstant, Affine, Transitions, Regression)


def errors(pred: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """MAPE (%), share within ±10 % (%), Kendall τ and the max error (%) of predictions."""
    rel = [abs(p - t) / t for p, t in zip(pred, truth) if t > 0]
    return {
        "mape_pct": 100.0 * sum(rel) / len(rel) if rel else math.nan,
        "within10_pct": 100.0 * sum(1 for r in rel if r <= 0.10) / len(rel) if rel else math.nan,
        "kendall_tau": kendall_tau(list(pred), list(truth)),
        "max_err_pct": 100.0 * max(rel) if rel else math.nan,
    }


def out_of_fold(model: type[_Model], xs: list[ChildFeatures], y: list[float], folds: int = 5) -> list[float]:
    """Each child's prediction by ``model`` fitted on the other folds (all of them when unfitted)."""
    n = len(xs)
    if not model.fitted:
        m = model()
        return [m.predict(f) for f in xs]
    k = max(2, min(folds, n))
    pred = [0.0] * n
    for j in range(k):
        test = [i for i in range(n) if i % k == j]
        train = [i for i in range(n) if i % k != j]
        m = model().fit([xs[i] for i in train], [y[i] for i in train])
        for i in test:
            pred[i] = m.predict(xs[i])
    return pred


def compare_models(xs: list[ChildFeatures], y: list[float], folds: int = 5) -> dict[str, dict[str, Any]]:
    """Every model's out-of-fold predictions and errors on the same children."""
    out = {}
    for model in MODELS:
        pred = out_of_fold(model, xs, y, folds)
        out[model.name] = {"pred": pred, **errors(pred, y), "fitted": model.fitted}
    return out


def calibration_from(table: LatencyTable, xs: list[ChildFeatures], y: list[float]) -> dict[str, Any]:
    """The additive calibration a run can use (affine with a positive slope, else a constant)."""
    aff = Affine().fit(xs, y)
    if aff.a > 0:
        return {"model": "affine", "scale": float(aff.a), "offset": float(aff.c), "fitted_on": len(xs), "date": _now()}
    c = FittedConstant().fit(xs, y)
    return {"model": "constant", "scale": 1.0, "offset": float(c.c), "fitted_on": len(xs), "date": _now()}


def features(table: LatencyTable, cost: CostTable, arch: Architecture) -> ChildFeatures:
    macs, params = cost.cost(arch)
    ops = tuple("+".join(option_members(o)) for o in arch.ops)
    return ChildFeatures(table.block_sum(arch), table.fixed_ms, float(macs), float(params), ops)


def check(
    space: Any, table: LatencyTable, *, n: int = 40, seed: int = 0, timer: Timer | None = None, folds: int = 5,
    progress: Callable[[int, int, str], None] | None = None, rounds: int = 3,
) -> dict[str, Any]:
    """Time ``n`` random children end to end (the table's backend, batch, threads, device) and
    compare every prediction model with the measurements (see module docstring)."""
    m = table.meta
    shape = tuple(m["input_shape"])
    cost = space.cost_table(shape)
    net = space.build_supernet().eval()
    rng = random.Random(seed)
    archs: list[Architecture] = []
    seen: set[Architecture] = set()
    for _ in range(n * 20):
        if len(archs) >= n:
            break
        a = space.sample(rng)
        if a not in seen:
            seen.add(a)
            archs.append(a)
    # Every child is compiled once, then timed in ``rounds`` interleaved passes (each pass a share of
    # the repeats), so a burst of load from other processes falls on all children alike.
    torch.set_num_threads(int(m["threads"]))
    runs = []
    for a in archs:
        child = net.child(a).eval().to(m["device"])
        x = torch.randn(m["batch"], *shape, generator=torch.Generator().manual_seed(0)).to(m["device"])
        runs.append((compile_for(child, x, m["backend"], int(m["threads"])), child, x))
    per_round = max(1, math.ceil(int(m["repeats"]) / max(1, rounds)))
    wall = timer or WallTimer(warmup=int(m["warmup"]), repeats=per_round, cuda=str(m["device"]).startswith("cuda"))
    samples: list[list[float]] = [[] for _ in archs]
    total = len(archs) * max(1, rounds)
    for r in range(max(1, rounds)):
        for k, (fn, child, x) in enumerate(runs):
            if progress:
                progress(r * len(archs) + k, total, f"pass {r + 1}/{rounds} {space.format(archs[k])}")
            samples[k].extend(wall(fn, child, x))
    rows = []
    for a, smp in zip(archs, samples):
        meas = summarize(smp)
        rows.append({"arch": space.format(a), "measured_ms": estimate(meas, m.get("estimator", "median")),
                     "median_ms": meas["median_ms"], "iqr_ms": meas["iqr_ms"],
                     "table_ms": table.predict(a), "blocks_ms": table.block_sum(a)})
    if progress:
        progress(total, total, "done")
    xs = [features(table, cost, a) for a in archs]
    y = [r["measured_ms"] for r in rows]
    models = compare_models(xs, y, folds)
    for name, res in models.items():
        for r, p in zip(rows, res.pop("pred")):
            r[f"pred_{name}"] = p
    return {
        "table": table.describe(), "n": len(rows), "folds": folds, "models": models, "children": rows,
        "calibration": calibration_from(table, xs, y) if len(xs) >= 2 else None,
        "threads": torch.get_num_threads(), "rounds": rounds, "date": _now(),
    }


def plot_check(result: dict[str, Any], path: str | Path) -> None:
    """Predicted vs measured (one panel per model), ±10 % band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["models"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False)
    y = [r["measured_ms"] for r in result["children"]]
    lo, hi = min(y) * 0.85, max(y) * 1.15
    for ax, name in zip(axes[0], names):
        p = [r[f"pred_{name}"] for r in result["children"]]
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.85")
        ax.scatter(y, p, s=10)
        e = result["models"][name]
        ax.set_title(f"{name}\nMAPE {e['mape_pct']:.1f}%  ±10%: {e['within10_pct']:.0f}%  τ {e['kendall_tau']:.2f}", fontsize=8)
        ax.set_xlabel("measured ms", fontsize=8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    axes[0][0].set_ylabel("predicted ms", fontsize=8)
    fig.suptitle(result["table"], fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_table_text(result: dict[str, Any]) -> str:
    """The side-by-side error table ``lut check`` prints."""
    lines = [f"{'model':<12} {'MAPE %':>8} {'±10 % share':>12} {'Kendall τ':>10} {'max err %':>10}  fitted",
             "-" * 64]
    for name, e in result["models"].items():
        lines.append(f"{name:<12} {e['mape_pct']:>8.2f} {e['within10_pct']:>11.1f}% {e['kendall_tau']:>10.3f} "
                     f"{e['max_err_pct']:>10.1f}  {'out of fold' if e['fitted'] else 'no'}")
    return "\n".join(lines)
