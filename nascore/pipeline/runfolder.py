"""The run folder: what a run writes, where, and how it is read back on resume.

Run folder::

    config.yaml     the resolved config (every default filled in)
    state.json      completed stages, current space, candidates (what resume reads)
    splits.json     the seeded train/val/archval indices
    metrics.jsonl   one JSON object per logged step or event
    checkpoints/    supernet.pt after each stage; stage-<key>-<step>.pt inside a stage; w0.pt
    results.json    the chosen architectures: arch, score, MACs, params, origin, retrain accuracy
    export/         standalone models (state dict + arch JSON, TorchScript, ONNX)
    retrain/        retrained children

Every file goes through :mod:`nascore.io` (atomic writes with an embedded content digest;
checkpoints read with ``torch.load(weights_only=True)``), so a kill at any moment leaves the old
version or the new one, damage is detected on read, and nothing in a run folder is executed. Every
JSON file is validated on read against the models below and an error names the file and the field.
A folder belongs to one run: only that run's own resume writes to it (``--overwrite`` clears it
first). Only rank 0 writes. What is guaranteed is listed in docs/concepts.md ("Run folders").
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from nascore._version import __version__
from nascore.arch import Architecture, Candidate
from nascore.errors import CheckpointError, NascoreError
from nascore.io import clean_temp_files, load_torch, read_json, read_text_verified, save_torch, write_json, write_yaml_text

if TYPE_CHECKING:
    from nascore.roles import Context, MetricsLogger

STATE_VERSION = 1

RUN_FILES = ("config.yaml", "state.json", "results.json", "metrics.jsonl", "splits.json", "report.html")
RUN_FOLDERS = ("checkpoints", "export", "retrain", "plots")
LOCK_FILE = ".nascore.lock"
"""Held (an OS file lock) by the one process writing the folder: a run, its resume or ``nascore export``."""


# -- what the JSON files hold (validated on every read) ------------------------------------------
class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")  # plugins keep their own keys; only what nascore reads is checked


class CandidateRecord(_Record):
    """One candidate as ``state.json`` and ``results.json`` hold it (``null`` score: non-finite)."""

    arch: str
    ops: list[str | list[str]]
    score: float | None
    macs: int
    params: int
    metrics: dict[str, Any] = {}
    origin: str = ""

    def candidate(self) -> Candidate:
        return Candidate(arch=Architecture.from_json(self.ops), arch_str=self.arch,
                         score=math.nan if self.score is None else float(self.score), macs=self.macs,
                         params=self.params, metrics=dict(self.metrics), origin=self.origin)


class RetrainRecord(_Record):
    test_acc: float | None = None
    test_loss: float | None = None


class StateFile(_Record):
    """``state.json``."""

    version: int
    completed: list[str]
    candidates: list[CandidateRecord]
    loop_done: dict[str, bool] = {}
    space_allowed: list[list[str]] | None = None
    timings: dict[str, float] = {}
    retrain: dict[str, RetrainRecord] = {}
    smoke: bool = False


class ResultCandidate(CandidateRecord):
    retrain: RetrainRecord | None = None


class ResultsFile(_Record):
    """``results.json``."""

    run: str | None = None
    space: str | None = None
    dataset: str | None = None
    constraint: str | None = None
    input_shape: list[int] = []
    candidates: list[ResultCandidate]
    timings: dict[str, float] = {}


def problems(e: ValidationError, limit: int = 4) -> str:
    """``field.path: message`` for the first few errors of a pydantic ValidationError."""
    items = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        items.append(f"{loc}: {err['msg']}")
    more = len(e.errors()) - limit
    return "; ".join(items) + (f"; and {more} more" if more > 0 else "")


def validated(path: Path, data: Any, model: type[BaseModel]) -> Any:
    """``data`` (read from ``path``) checked against ``model``; a CheckpointError names file and field."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}",
                              hint="the file is damaged; restore it or start a new run")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise CheckpointError(f"{path}: malformed ({problems(e)})",
                              hint="the file is damaged; restore it or start a new run") from None


def new_state() -> dict[str, Any]:
    """The run state before any stage ran (``state.json``'s shape)."""
    return {"version": STATE_VERSION, "completed": [], "candidates": [], "loop_done": {}}


class Checkpoints:
    """In-stage checkpoints: ``stage-<key>-<step>.pt``, the newest few kept.

    ``load_latest`` falls back to the previous file when the newest is unreadable (a kill while the
    disk was full, a truncated copy), and says so.
    """

    def __init__(self, folder: Path | None, key: str, log: MetricsLogger, writer: bool, keep: int = 2) -> None:
        self.directory = folder
        self.key = key.replace(".", "_")
        self.log = log
        self.writer = writer
        self.keep = keep
        self._n = 0

    def _files(self) -> list[Path]:
        if self.directory is None or not self.directory.exists():
            return []
        return sorted(self.directory.glob(f"stage-{self.key}-*.pt"))

    def save(self, state: dict[str, Any]) -> None:
        if self.directory is None or not self.writer:
            return
        files = self._files()
        n = int(files[-1].stem.rsplit("-", 1)[1]) + 1 if files else 0
        save_torch(self.directory / f"stage-{self.key}-{n:06d}.pt", state)
        for old in self._files()[: -self.keep]:
            old.unlink(missing_ok=True)

    def load_latest(self) -> dict[str, Any] | None:
        for path in reversed(self._files()):
            try:
                saved = load_torch(path)
                if not isinstance(saved, dict):
                    raise CheckpointError(f"{path}: not a nascore checkpoint (a {type(saved).__name__}, not a dict)")
                return saved
            except CheckpointError as e:
                self.log.event("bad_checkpoint", file=str(path), error=str(e))
                print(f"nascore: warning: {e}; falling back to the previous checkpoint", file=sys.stderr)
        return None


# -- creating and reading a folder ------------------------------------------------------------
def run_traces(run_dir: Path) -> list[str]:
    """What a run has left in ``run_dir`` that a new run would destroy (empty: the folder is free).

    A folder holding only a ``config.yaml`` (and an empty log) is one whose run failed before its
    first stage: it did no work, and a new run may take it.
    """
    if not run_dir.is_dir():
        return []
    found = [f for f in ("state.json", "results.json", "splits.json") if (run_dir / f).exists()]
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        found.append("metrics.jsonl")
    for sub in ("checkpoints", "retrain", "export"):
        if (run_dir / sub).is_dir() and any((run_dir / sub).iterdir()):
            found.append(f"{sub}/")
    return found


def check_free(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse (before anything is written) to start a run in a folder that holds another run."""
    traces = run_traces(run_dir)
    if traces and not overwrite:
        raise NascoreError(
            f"{run_dir} already holds a run ({', '.join(traces)}); nothing was written",
            hint=f"continue it with `nascore resume {run_dir}`, choose another --out, "
                 "or pass --overwrite to delete that run and start this one there",
        )


def prepare_run_dir(run_dir: Path, resolved: dict[str, Any], overwrite: bool = False) -> Any:
    """Create the run folder, take its lock and write the resolved config; refuse to clobber another run.

    ``overwrite`` deletes everything the previous run left first, so nothing of it leaks into this one.
    Returns the folder's lock (:func:`lock_run_dir`), held until the run's context is closed.
    """
    check_free(run_dir, overwrite)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise NascoreError(f"cannot write to run folder {run_dir}: {e.strerror}", hint="choose a writable --out folder") from None
    lock = lock_run_dir(run_dir)
    try:
        check_free(run_dir, overwrite)  # again under the lock: another process may have started a run here meanwhile
        if overwrite:
            clear_previous_run(run_dir)
        else:  # a run that failed before its first stage: what it left is nothing of value
            for f in run_dir.glob("events.out.tfevents.*"):
                f.unlink(missing_ok=True)
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # empty (else check_free refused)
            clean_temp_files(run_dir)
        write_yaml_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    except BaseException:
        lock.release()
        raise
    return lock


def clear_previous_run(run_dir: Path) -> None:
    """``--overwrite``: remove everything a previous run left, so nothing of it leaks into this one.

    Only nascore's own files go; anything else in the folder stays.
    """
    if not run_dir.is_dir():
        return
    for f in RUN_FILES:
        (run_dir / f).unlink(missing_ok=True)
    for sub in RUN_FOLDERS:
        shutil.rmtree(run_dir / sub, ignore_errors=True)
    for f in run_dir.glob("events.out.tfevents.*"):
        f.unlink(missing_ok=True)
    clean_temp_files(run_dir)


def _note_pid(fd: int) -> None:
    """Write the holder's pid into the lock file, for the refusal message of the next process."""
    import os

    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())


def lock_run_dir(run_dir: Path) -> Any:
    """Take the folder's write lock, or refuse: two processes writing one run folder would each
    replace the other's checkpoints, and a resume removes the temp files of writes it believes were
    killed. The lock is the OS's (``filelock``: flock where the filesystem has it), so a killed run
    releases it by itself; a second open in the same process is re-entrant. Release with ``.release()``.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(run_dir / LOCK_FILE, timeout=0, is_singleton=True, on_acquired=_note_pid)
    try:
        lock.acquire()
    except Timeout:
        try:
            pid = (run_dir / LOCK_FILE).read_text().strip()
        except OSError:
            pid = ""
        who = f" (pid {pid})" if pid.isdigit() else ""
        raise NascoreError(
            f"{run_dir} is in use by another nascore process{who}: a run, resume or export is writing it; nothing was written",
            hint="wait for it to finish, or stop it (a stopped run releases the folder) and `nascore resume` it",
        ) from None
    except OSError as e:
        raise NascoreError(f"cannot lock run folder {run_dir}: {e.strerror or e}",
                           hint="nascore needs a writable local folder; choose another --out") from None
    return lock


def open_for_resume(run_dir: Path) -> Any:
    """Before a resume writes: the folder must be writable and free (its lock is taken and returned);
    temp files of killed writes are removed (safe only under the lock: no other process is writing)."""
    probe = run_dir / ".write-test"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise NascoreError(f"cannot write to run folder {run_dir}: {e.strerror or e}",
                           hint="resume needs a writable folder; copy the run folder somewhere writable") from None
    lock = lock_run_dir(run_dir)
    for p in clean_temp_files(run_dir):
        print(f"nascore: removed {p} (left by a killed write)", file=sys.stderr)
    return lock


def load_run_config(run_dir: Path) -> dict[str, Any]:
    """``config.yaml`` of a run folder, digest-checked and parsed; damage is a CheckpointError."""
    path = run_dir / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml)", hint="pass the folder `nascore run` wrote")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not the run's config", hint="pass the folder `nascore run` wrote")
    text = read_text_verified(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 2}" if mark else ""
        raise CheckpointError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or type(e).__name__})",
                              hint="the file is truncated or corrupted; restore it or start a new run") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: a run config is a mapping, got {type(data).__name__}",
                              hint="the file is truncated or corrupted; restore it or start a new run")
    return data


def was_smoke(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` was started with ``--smoke`` (its resume keeps the budget)."""
    saved = read_state(run_dir)
    return bool(saved[0].get("smoke", False)) if saved is not None else False


def write_splits(run_dir: Path, seed: int, splits: dict[str, Any]) -> None:
    write_json(run_dir / "splits.json", {"seed": seed, **splits})


# -- W0: the supernet at initialisation -------------------------------------------------------
def w0_path(run_dir: Path | None) -> Path | None:
    return run_dir / "checkpoints" / "w0.pt" if run_dir is not None else None


def load_w0(run_dir: Path | None) -> dict[str, torch.Tensor] | None:
    path = w0_path(run_dir)
    if path is not None and path.exists():
        return weights_of(load_torch(path), path)
    return None


def load_state_into(module: torch.nn.Module, saved: Any, path: Path | str, key: str = "supernet", what: str = "model") -> None:
    """Load ``saved[key]`` into ``module``; a checkpoint of another shape is a CheckpointError naming
    ``path`` (the file, or what the checkpoint is)."""
    try:
        module.load_state_dict(weights_of(saved, path, key))
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not fit this run's {what} ({str(e).splitlines()[0][:200]})",
                              hint="the file belongs to another run or is damaged") from None


def weights_of(saved: Any, path: Path | str, key: str = "supernet") -> dict[str, torch.Tensor]:
    """``saved[key]`` of a checkpoint, checked to be a state dict (a CheckpointError naming the file)."""
    weights = saved.get(key) if isinstance(saved, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: not a nascore checkpoint (no {key!r} state dict)",
                              hint="the file was replaced or damaged; restore it or start a new run")
    return weights


def save_w0(run_dir: Path | None, weights: dict[str, torch.Tensor]) -> None:
    path = w0_path(run_dir)
    if path is not None:
        save_torch(path, {"supernet": weights})


# -- after each stage: supernet, state, results -------------------------------------------------
def supernet_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "supernet.pt"


def save_supernet(run_dir: Path, weights: dict[str, torch.Tensor]) -> None:
    save_torch(supernet_path(run_dir), {"supernet": weights})


def write_state(ctx: Context) -> None:
    """``state.json``: the run state with the current space and candidates (what resume reads)."""
    if ctx.run_dir is None or not ctx.dist.is_main:
        return
    ctx.state["space_allowed"] = ctx.space.allowed_json()
    ctx.state["candidates"] = [c.to_json() for c in ctx.candidates]
    write_json(ctx.run_dir / "state.json", ctx.state)


def read_state(run_dir: Path) -> tuple[dict[str, Any], list[Candidate]] | None:
    """``state.json`` (validated) and its candidates, or None when no stage has finished yet."""
    path = run_dir / "state.json"
    if not path.exists():
        return None
    state = read_json(path)
    model = validated(path, state, StateFile)
    return state, [c.candidate() for c in model.candidates]


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """``results.json`` (validated), or None when there is none yet; damage is a CheckpointError."""
    path = run_dir / "results.json"
    if not path.exists():
        return None
    data = read_json(path)
    validated(path, data, ResultsFile)
    return data


def results_from_state(state: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What results.json says, rebuilt from state.json alone (for a damaged results.json)."""
    retrain = state.get("retrain", {})
    cfg = config or {}
    return {
        "run": cfg.get("name"), "space": (cfg.get("space") or {}).get("name"),
        "dataset": (cfg.get("dataset") or {}).get("name"),
        "candidates": [{**c, **({"retrain": retrain[c["arch"]]} if c.get("arch") in retrain else {})}
                       for c in state.get("candidates", [])],
        "timings": state.get("timings", {}),
    }


def write_results(ctx: Context) -> None:
    """``results.json``: the chosen architectures with their costs and retrained accuracy."""
    if ctx.run_dir is None or not ctx.dist.is_main:
        return
    retrain = ctx.state.get("retrain", {})
    write_json(ctx.run_dir / "results.json", {
        "run": ctx.cfg.name,
        "space": ctx.cfg.space.name,
        "dataset": ctx.cfg.dataset.name,
        "constraint": ctx.constraint.describe(),
        "input_shape": list(ctx.data.input_shape),
        "cost_definition": "MACs and params counted by fvcore (one multiply-add = 1)",
        "candidates": [
            {**c.to_json(), **({"retrain": retrain[c.arch_str]} if c.arch_str in retrain else {}),
             **_latency_of(ctx, c)}
            for c in ctx.candidates
        ],
        **({"latency_table": ctx.latency.describe()} if getattr(ctx, "latency", None) is not None else {}),
        "timings": ctx.state.get("timings", {}),
        "nascore": __version__,
    })


def _latency_of(ctx: Context, cand: Any) -> dict[str, Any]:
    """Predicted latency (ms, from the run's latency table) and, once exported, the measured one."""
    out: dict[str, Any] = {}
    lat = getattr(ctx.cost, "latency_ms", None) if getattr(ctx, "latency_table_path", None) else None
    if lat is not None:
        out["latency_ms"] = lat(cand.arch)
    measured = ctx.state.get("export_latency", {}).get(cand.arch_str)
    if measured is not None:
        out["latency_measured"] = measured
    return out
