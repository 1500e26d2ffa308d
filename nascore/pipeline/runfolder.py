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

Every file goes through :mod:`nascore.io` (atomic writes; checkpoints read with
``torch.load(weights_only=True)``), so a kill at any moment leaves the old version or the new one,
and nothing in a run folder is executed. Only rank 0 writes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from nascore._version import __version__
from nascore.arch import Candidate
from nascore.errors import CheckpointError, NascoreError
from nascore.io import load_torch, read_json, save_torch, write_json, write_text

if TYPE_CHECKING:
    from nascore.roles import Context, MetricsLogger

STATE_VERSION = 1

RUN_FILES = ("state.json", "results.json", "metrics.jsonl", "splits.json", "report.html")
RUN_FOLDERS = ("checkpoints", "export", "retrain", "plots")


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
                return load_torch(path)
            except CheckpointError as e:
                self.log.event("bad_checkpoint", file=str(path), error=str(e))
                print(f"nascore: warning: {e}; falling back to the previous checkpoint", file=sys.stderr)
        return None


# -- creating and reading a folder ------------------------------------------------------------
def prepare_run_dir(run_dir: Path, resolved: dict[str, Any], overwrite: bool = False) -> None:
    """Create the run folder and write the resolved config; refuse to clobber another run."""
    if (run_dir / "state.json").exists() and not overwrite:
        raise NascoreError(
            f"{run_dir} already holds a run",
            hint=f"continue it with `nascore resume {run_dir}`, or pass --out to choose a new folder (or --overwrite)",
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise NascoreError(f"cannot write to run folder {run_dir}: {e.strerror}", hint="choose a writable --out folder") from None
    write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))


def clear_previous_run(run_dir: Path) -> None:
    """``--overwrite``: remove everything a previous run left, so nothing of it leaks into this one."""
    for f in RUN_FILES:
        (run_dir / f).unlink(missing_ok=True)
    for sub in RUN_FOLDERS:
        shutil.rmtree(run_dir / sub, ignore_errors=True)
    for f in run_dir.glob("events.out.tfevents.*"):
        f.unlink(missing_ok=True)


def load_run_config(run_dir: Path) -> dict[str, Any]:
    from nascore.config import load_yaml

    if not (run_dir / "config.yaml").exists():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml)", hint="pass the folder `nascore run` wrote")
    return load_yaml(run_dir / "config.yaml")


def was_smoke(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` was started with ``--smoke`` (its resume keeps the budget)."""
    if (run_dir / "state.json").exists():
        return bool(read_json(run_dir / "state.json").get("smoke", False))
    return False


def write_splits(run_dir: Path, seed: int, splits: dict[str, Any]) -> None:
    write_json(run_dir / "splits.json", {"seed": seed, **splits})


# -- W0: the supernet at initialisation -------------------------------------------------------
def w0_path(run_dir: Path | None) -> Path | None:
    return run_dir / "checkpoints" / "w0.pt" if run_dir is not None else None


def load_w0(run_dir: Path | None) -> dict[str, torch.Tensor] | None:
    path = w0_path(run_dir)
    if path is not None and path.exists():
        return load_torch(path)["supernet"]
    return None


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
    """``state.json`` and its candidates, or None when no stage has finished yet."""
    path = run_dir / "state.json"
    if not path.exists():
        return None
    state = read_json(path)
    return state, [Candidate.from_json(c) for c in state.get("candidates", [])]


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
            {**c.to_json(), **({"retrain": retrain[c.arch_str]} if c.arch_str in retrain else {})}
            for c in ctx.candidates
        ],
        "timings": ctx.state.get("timings", {}),
        "nascore": __version__,
    })
