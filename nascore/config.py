"""Run configs: the YAML a user writes, validated whole before any work starts.

Validation is two-step. The run-level model (:class:`RunConfig`) checks the structure; then every
component reference (``{name, options}``) is resolved in the registry and its ``options`` are
validated against the pydantic model its plugin declared. All problems are collected and reported
together, one line each, naming the field path, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nascore.errors import ConfigError, UnknownComponent

# Unknown fields are errors, and so are inf/nan where a number is expected (``lr: .inf`` would
# otherwise validate and train to a NaN loss).
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

SEED_MAX = 2**32 - 1
"""Largest run seed: every seed nascore derives from it (splits, epochs, stages) stays within 64 bits."""
NAME_MAX = 100
"""Longest run name: it becomes a folder name (``runs/<name>-smoke``), which filesystems cap at 255 bytes."""
_NAME_BAD_START = (".", "-", " ")
_DEVICE_OK = re.compile(r"auto|cpu|mps|(cuda|xpu)(:[0-9]+)?")
INT_MAX = 2**63 - 1
"""Largest integer a config may hold anywhere (torch and the data loaders take 64-bit integers)."""
EXPORT_EXTRAS = {"onnx": ("onnx", "onnxruntime")}
"""The packages each export format needs beyond the core (the ``onnx`` extra: pip install 'nascore[onnx]')."""


class Ref(BaseModel):
    """A component by registry name, with its options (validated against the component's model)."""

    model_config = STRICT
    name: str = Field(description="registered component name (see `nascore plugins`)")
    options: dict[str, Any] = Field(default_factory=dict, description="the component's own options")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        return data


class DataConfig(BaseModel):
    """How the dataset is split and batched (splits are seeded by the run seed)."""

    model_config = STRICT
    batch_size: int = Field(64, gt=0, description="training batch size (global, across ranks)")
    eval_batch_size: int = Field(256, gt=0, description="batch size for evaluation")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of train data for trainers' second split")
    archval_fraction: float = Field(0.1, gt=0, lt=1, description="share of train data for scoring candidates")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes for file-backed datasets (0: in-process)")
    pin_memory: bool = Field(False, description="pinned host memory for batches (with num_workers, on CUDA)")
    persistent_workers: bool = Field(False, description="keep the workers alive across epochs (with num_workers)")
    random_labels: bool = Field(False, description="replace train/val labels by fixed random ones (RLNAS)")
    limit: int | None = Field(None, gt=0, description="use only the first N training examples")

    @model_validator(mode="after")
    def _fractions(self) -> "DataConfig":
        if self.val_fraction + self.archval_fraction >= 0.9:
            raise ValueError("val_fraction + archval_fraction must leave at least 10% for training")
        return self


class ConstraintConfig(BaseModel):
    """Resource bounds every searched architecture must satisfy (MACs as fvcore counts them)."""

    model_config = STRICT
    macs_min: float | None = Field(None, ge=0)
    macs_max: float | None = Field(None, gt=0)
    params_min: float | None = Field(None, ge=0)
    params_max: float | None = Field(None, gt=0)
    latency_ms_min: float | None = Field(None, ge=0, description="predicted latency lower bound (ms; needs latency_table)")
    latency_ms_max: float | None = Field(None, gt=0, description="predicted latency upper bound (ms; needs latency_table)")
    latency_table: str | None = Field(None, description="latency table from `nascore lut build` (predicted latency "
                                      "in results, report and compare; required by the latency bounds)")

    @model_validator(mode="after")
    def _ranges(self) -> "ConstraintConfig":
        for lo, hi in (("macs_min", "macs_max"), ("params_min", "params_max"), ("latency_ms_min", "latency_ms_max")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a:g}) is larger than {hi} ({b:g})")
        if (self.latency_ms_min is not None or self.latency_ms_max is not None) and not self.latency_table:
            raise ValueError("latency_ms_min/latency_ms_max need latency_table: the path of a table from "
                             "`nascore lut build SPACE`")
        return self


class TrainStage(BaseModel):
    """Train the supernet with a trainer (and optionally a distiller)."""

    model_config = STRICT
    kind: Literal["train"]
    trainer: Ref
    distiller: Ref | None = None


class SearchStage(BaseModel):
    """Run a selector; ``shrink`` is the same stage for selectors that return a smaller space."""

    model_config = STRICT
    kind: Literal["search", "shrink"]
    selector: Ref
    evaluator: Ref | None = None
    keep: int = Field(10, gt=0, description="how many top candidates to keep in results")


class ExportStage(BaseModel):
    """Write the chosen architectures as standalone models."""

    model_config = STRICT
    kind: Literal["export"]
    formats: list[Literal["json", "torchscript", "onnx"]] = Field(default_factory=lambda: ["json", "torchscript"])
    top: int = Field(1, gt=0)
    bake_normalization: bool = Field(False, description="TorchScript/ONNX models take raw pixel values and "
                                     "normalise inside (arch.json's preprocessing says how)")


class RetrainStage(BaseModel):
    """Train the chosen architectures from scratch (or fine-tune inherited weights)."""

    model_config = STRICT
    kind: Literal["retrain"]
    epochs: int = Field(5, gt=0)
    lr: float = Field(0.05, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    top: int = Field(1, gt=0)
    inherit: bool = Field(False, description="start from the supernet's weights instead of scratch")
    distiller: Ref | None = None


class LoopStage(BaseModel):
    """Repeat inner stages (NSE rounds); a selector returning ``done`` ends the loop early."""

    model_config = STRICT
    kind: Literal["loop"]
    rounds: int = Field(gt=0)
    stages: list["Stage"]


Stage = Annotated[
    Union[TrainStage, SearchStage, ExportStage, RetrainStage, LoopStage], Field(discriminator="kind")
]
LoopStage.model_rebuild()


class RunConfig(BaseModel):
    """A whole run: what to search, on what data, under which constraint, in which stages."""

    model_config = STRICT
    name: str = Field("run", description="run name (default run folder: runs/<name>): at most 100 characters, "
                      "no '/', '\\\\' or '..'")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="run seed, 0 … 2^32-1")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    space: Ref
    dataset: Ref
    data: DataConfig = Field(default_factory=DataConfig)
    constraint: ConstraintConfig = Field(default_factory=ConstraintConfig)
    stages: list[Stage] = Field(min_length=1)
    checkpoint_every: int = Field(50, gt=0, description="training steps between checkpoints")
    log_every: int = Field(10, gt=0)
    tensorboard: bool | None = Field(
        None, description="mirror metrics.jsonl as TensorBoard event files in the run folder; "
        "null: when the tensorboard package is installed (pip install 'nascore[tensorboard]')")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        """The name becomes ``runs/<name>``: it must stay one plain folder inside runs/."""
        if len(v) > NAME_MAX:
            raise ValueError(f"a run name is at most {NAME_MAX} characters (got {len(v)}); pass --out for the folder")
        if "/" in v or "\\" in v or ".." in v:
            raise ValueError("a run name may not contain '/', '\\' or '..' (it names a folder inside runs/); "
                             "pass --out DIR to choose where the run goes")
        if not v or v.startswith(_NAME_BAD_START) or any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("a run name is not empty, does not start with '.', '-' or a space, and holds no "
                             "control characters")
        return v

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not _DEVICE_OK.fullmatch(v):
            raise ValueError("not a device: use auto, cpu, cuda, cuda:N (or mps, xpu, xpu:N)")
        return v


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("TrainStage", "SearchStage", "ExportStage", "RetrainStage", "LoopStage") or str(part) in (
            "train", "search", "shrink", "export", "retrain", "loop") and out.endswith("]"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_pydantic(err: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: ``field: message (got value)``."""
    lines = []
    for e in err.errors():
        where = _loc(tuple(e["loc"]))
        if prefix:
            where = f"{prefix}.{where}" if where != "(top level)" else prefix
        msg = e["msg"]
        if e["type"] == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (remove it or check its spelling)"
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        if e["type"] == "union_tag_invalid":
            msg = "unknown stage kind; use one of train, search, shrink, export, retrain, loop"
        lines.append(f"{where}: {msg}{shown}")
    return lines


def parse_set(items: list[str]) -> list[tuple[list[str], Any]]:
    """``a.b.c=value`` overrides; the value is YAML (``3``, ``1e-3``, ``[a, b]``, ``null``)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError([f"--set {item!r}: expected PATH=VALUE, e.g. stages.0.trainer.options.epochs=3"], source="--set")
        path, _, raw = item.partition("=")
        parts = [p for p in path.strip().split(".") if p]
        if not parts:
            raise ConfigError([f"--set {item!r}: empty path"], source="--set")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
            if isinstance(value, str):
                try:  # YAML 1.1 reads 1e6 as a string; a user means the number
                    value = float(value) if any(c in value.lower() for c in ".e") else int(value)
                except ValueError:
                    pass
        except yaml.YAMLError as e:
            raise ConfigError([f"--set {path}: value {raw!r} is not valid YAML ({e.__class__.__name__})"], source="--set") from None
        out.append((parts, value))
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for parts, value in parse_set(overrides):
        node: Any = data
        for i, key in enumerate(parts[:-1]):
            node = _step(node, key, parts[: i + 1], create=True)
        last = parts[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise ConfigError([f"--set {'.'.join(parts)}: {last!r} is not an index of a list of {len(node)}"], source="--set") from None
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError([f"--set {'.'.join(parts)}: {'.'.join(parts[:-1])} is a value, not a section"], source="--set")
    return data


def _step(node: Any, key: str, path: list[str], create: bool) -> Any:
    where = ".".join(path)
    if isinstance(node, list):
        try:
            return node[int(key)]
        except (ValueError, IndexError):
            raise ConfigError([f"--set {where}: {key!r} is not an index of a list of {len(node)}"], source="--set") from None
    if isinstance(node, dict):
        if key not in node or node[key] is None:
            if not create:
                raise ConfigError([f"--set {where}: no such field"], source="--set")
            node[key] = {}
        return node[key]
    raise ConfigError([f"--set {where}: {key!r} is inside a value, not a section"], source="--set")


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError([f"{p}: no such file"], source="config")
    if p.is_dir():
        raise ConfigError([f"{p}: is a folder, not a config file (pass a .yaml file, a recipe name, or "
                           f"`nascore resume {p}` for a run folder)"], source="config")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else f"not UTF-8 text ({e.__class__.__name__})"
        raise ConfigError([f"{p}: cannot be read: {why}"], source="config") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{p}{where}: not valid YAML: {getattr(e, 'problem', e)}"], source="config") from None
    if not isinstance(data, dict):
        raise ConfigError([f"{p}: a run config is a mapping (space:, dataset:, stages: …), got {type(data).__name__}"], source="config")
    return data


def iter_refs(cfg: RunConfig) -> list[tuple[str, str, Ref]]:
    """(field path, role, ref) for every component the config names, in order."""
    refs: list[tuple[str, str, Ref]] = [("space", "space", cfg.space), ("dataset", "dataset", cfg.dataset)]

    def walk(stages: list[Any], prefix: str) -> None:
        for i, st in enumerate(stages):
            here = f"{prefix}[{i}]"
            if isinstance(st, TrainStage):
                refs.append((f"{here}.trainer", "trainer", st.trainer))
                if st.distiller:
                    refs.append((f"{here}.distiller", "distiller", st.distiller))
            elif isinstance(st, SearchStage):
                refs.append((f"{here}.selector", "selector", st.selector))
                if st.evaluator:
                    refs.append((f"{here}.evaluator", "evaluator", st.evaluator))
            elif isinstance(st, RetrainStage) and st.distiller:
                refs.append((f"{here}.distiller", "distiller", st.distiller))
            elif isinstance(st, LoopStage):
                walk(st.stages, f"{here}.stages")

    walk(cfg.stages, "stages")
    return refs


def _non_finite(value: Any, where: str) -> list[str]:
    """Paths under ``value`` (a validated options model) holding inf or nan."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [where]
    if isinstance(value, BaseModel):
        return [p for k in type(value).model_fields for p in _non_finite(getattr(value, k), f"{where}.{k}")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{where}[{i}]")]
    return []


def _finite_problems(model: BaseModel, raw: dict[str, Any], prefix: str) -> list[str]:
    """inf/nan that a user put into a component's options (a plugin's model may not forbid them)."""
    out = []
    for key in raw:
        if key in type(model).model_fields:
            for where in _non_finite(getattr(model, key), f"{prefix}.{key}"):
                out.append(f"{where}: must be a finite number (got {raw[key]!r})")
    return out


def _huge_ints(value: Any, where: str) -> list[tuple[str, int]]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [(where or "(top level)", value)] if abs(value) > INT_MAX else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _huge_ints(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _huge_ints(v, f"{where}[{i}]")]
    return []


def _module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def export_formats(stages: list[Any]) -> set[str]:
    """Every format an ``export`` stage of ``stages`` (loops included) writes."""
    out: set[str] = set()
    for st in stages:
        if isinstance(st, ExportStage):
            out |= set(st.formats)
        elif isinstance(st, LoopStage):
            out |= export_formats(st.stages)
    return out


def validate(
    data: dict[str, Any], registry: Any, source: str = "config", *,
    tensorboard_available: Callable[[], bool] | None = None,
    module_available: Callable[[str], bool] | None = None,
) -> tuple[RunConfig, dict[str, BaseModel]]:
    """Validate a whole config; returns the model and every component's validated options.

    Checked against what is installed: the components (``registry``), for ``tensorboard:
    true`` the tensorboard package (``tensorboard_available``; the pipeline passes its
    :func:`nascore.pipeline.tensorboard.available`, the default looks the package up), and the
    packages each requested export format needs (:data:`EXPORT_EXTRAS`, looked up with
    ``module_available``). Numbers must be finite, in component options too.
    Raises :class:`ConfigError` listing every problem at once.
    """
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_pydantic(e), source=source) from None
    problems: list[str] = []
    options: dict[str, BaseModel] = {}
    for path, role, ref in iter_refs(cfg):
        try:
            comp = registry.get(role, ref.name)
        except UnknownComponent as e:
            problems.append(f"{path}.name: {str(e).replace(chr(10) + '  fix: ', ' — ')}")
            continue
        try:
            options[path] = comp.config.model_validate(ref.options)
        except ValidationError as e:
            problems.extend(format_pydantic(e, prefix=f"{path}.options"))
            continue
        problems.extend(_finite_problems(options[path], ref.options, f"{path}.options"))
    if not problems:  # an integer past 64 bits overflows torch and the data loaders mid-run: refuse it now
        for where, v in _huge_ints(resolved_dict(cfg, options), ""):
            problems.append(f"{where}: {v} is too large (at most 2^63-1)")
    have = module_available or _module_available
    for fmt in sorted(export_formats(cfg.stages)):
        missing = [m for m in EXPORT_EXTRAS.get(fmt, ()) if not have(m)]
        if missing:
            problems.append(f"stages: export format {fmt!r} needs the package(s) {', '.join(missing)}, not installed "
                            f"— pip install 'nascore[{fmt}]', or drop {fmt!r} from the export stage's formats")
    if cfg.tensorboard:
        available = tensorboard_available or (lambda: importlib.util.find_spec("tensorboard") is not None)
        if not available():
            problems.append("tensorboard: the tensorboard package is not installed (got true) — "
                            "pip install 'nascore[tensorboard]', or set tensorboard: null to write only when installed")
    if problems:
        raise ConfigError(problems, source=source)
    return cfg, options


def resolved_dict(cfg: RunConfig, options: dict[str, BaseModel]) -> dict[str, Any]:
    """The config with every default filled in (what the run folder records)."""
    data = cfg.model_dump(mode="json")
    for path, model in options.items():
        node: Any = data
        for part in path.replace("]", "").replace("[", ".").split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        node["options"] = model.model_dump(mode="json")
    return data
