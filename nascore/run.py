"""The pipeline: a run config becomes a run folder, stage by stage, resumable at any point.

A run executes the config's stages in order (``train``, ``search``/``shrink``, ``export``,
``retrain``, and ``loop`` of them). Each stage has a key (``"0"``, ``"2"``, ``"3.1.0"`` for stage
0 of round 1 of the loop at index 3) and derives every random stream from ``(seed, key)``, so its
result never depends on what ran before it in this process. After each stage the supernet weights
and the run state (completed stages, the current restricted space, candidates) are written
atomically; trainers checkpoint inside their stage. ``nascore resume`` rebuilds the context from
the folder and continues: the same seed gives the same chosen architecture as an uninterrupted run.

Run folder::

    config.yaml     the resolved config (every default filled in)
    state.json      completed stages, current space, candidates (what resume reads)
    splits.json     the seeded train/val/archval indices
    metrics.jsonl   one JSON object per logged step or event
    checkpoints/    supernet.pt after each stage; stage-<key>-<step>.pt inside a stage
    results.json    the chosen architectures: arch, score, MACs, params, origin, retrain accuracy
    export/         standalone models (state dict + arch JSON, TorchScript, ONNX)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from nascore import __version__, tblog
from nascore.arch import Architecture, Candidate
from nascore.config import (
    ExportStage, LoopStage, Ref, RetrainStage, RunConfig, SearchStage, TrainStage, resolved_dict, validate,
)
from nascore.cost import CostTable, ResourceConstraint, human
from nascore.data import DataBundle, split_indices
from nascore.errors import CheckpointError, NascoreError, PluginError
from nascore.io import load_torch, read_json, save_torch, write_json, write_text
from nascore.registry import Registry, get_registry
from nascore.roles import Evaluator, SearchResult, Selector, Trainer
from nascore.space import SearchSpace, Supernet

STATE_VERSION = 1


class DistInfo:
    """This process's place in a torch.distributed job (1 process when not launched by torchrun)."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, flushed at once (rank 0 only)."""

    def __init__(self, path: Path | None, enabled: bool = True, tensorboard: bool = False,
                 config_text: str | None = None) -> None:
        self.path = path
        self.enabled = enabled and path is not None
        self.tb = None
        if self.enabled and path is not None and tensorboard:  # mirror every record as TensorBoard scalars
            from nascore.tblog import TensorBoardSink

            resumed = path.exists() and path.stat().st_size > 0
            self.tb = TensorBoardSink(path.parent, existing=path if resumed else None,
                                      config_text=None if resumed else config_text)
        self._f = open(path, "a", buffering=1) if self.enabled and path else None  # noqa: SIM115
        self._t0 = time.time()

    def _write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            return
        record = {"time": round(time.time() - self._t0, 3), **record}
        self._f.write(json.dumps(record, default=float) + "\n")
        if self.tb is not None:
            self.tb.write(record)

    def metric(self, kind: str, **values: Any) -> None:
        self._write({"kind": kind, **values})

    def event(self, kind: str, **values: Any) -> None:
        self._write({"kind": "event", "event": kind, **values})

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class Checkpoints:
    """In-stage checkpoints: ``stage-<key>-<step>.pt``, the newest few kept.

    ``load_latest`` falls back to the previous file when the newest is unreadable (a kill while the
    disk was full, a truncated copy), and says so.
    """

    def __init__(self, folder: Path | None, key: str, log: MetricsLog, writer: bool, keep: int = 2) -> None:
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


class RunContext:
    """Everything a component may use: space, supernet, data, costs, constraint, log, state.

    Components receive it in their factory and in every call; it is the one API between a plugin
    and the pipeline (plugins never touch torch.distributed or the run folder directly).
    """

    def __init__(
        self,
        cfg: RunConfig,
        options: dict[str, Any],
        registry: Registry,
        run_dir: Path | None,
        *,
        smoke: bool = False,
        quiet: bool = False,
    ) -> None:
        self.cfg = cfg
        self.options = options
        self.registry = registry
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.smoke = smoke
        self.quiet = quiet
        self.dist = DistInfo()
        self.device = self._device(cfg.device)
        self.stage_key = "setup"
        self.log = MetricsLog(
            self.run_dir / "metrics.jsonl" if self.run_dir else None, enabled=self.dist.is_main,
            tensorboard=tblog.resolve(cfg.tensorboard) and self.dist.is_main,
            config_text=(self.run_dir / "config.yaml").read_text() if self.run_dir and (self.run_dir / "config.yaml").exists() else None,
        )
        self.state: dict[str, Any] = {"version": STATE_VERSION, "completed": [], "candidates": [], "loop_done": {}}
        self.candidates: list[Candidate] = []
        self.distiller: Any = None
        self.data: DataBundle = None  # type: ignore[assignment]
        self._supernet: Supernet | None = None
        self._pending_weights: Path | None = None
        self._initial_weights: dict[str, torch.Tensor] | None = None
        self.constraint = ResourceConstraint(**cfg.constraint.model_dump())
        self._build_data()
        self.base_space: SearchSpace = self.build("space", cfg.space, "space")
        if not isinstance(self.base_space, SearchSpace):
            raise PluginError(f"space {cfg.space.name!r} did not return a nascore.space.SearchSpace")
        self.space: SearchSpace = self.base_space

    # -- construction --------------------------------------------------------------------------
    @staticmethod
    def _device(name: str) -> torch.device:
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            return torch.device("cpu")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise NascoreError(f"device: {name!r} is not a device", hint="use auto, cpu, cuda or cuda:N") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise NascoreError(f"device: {name!r} requested but CUDA is not available", hint="use device: cpu or auto")
        return dev

    def build(self, role: str, ref: Ref, path: str) -> Any:
        comp = self.registry.get(role, ref.name)
        opts = self.options.get(path)
        return comp.build(opts if opts is not None else ref.options, self)

    def _build_data(self) -> None:
        spec = self.build("dataset", self.cfg.dataset, "dataset")
        dc = self.cfg.data
        total = len(spec.train)
        n = total
        if dc.limit:
            n = min(n, dc.limit)
        if self.smoke:
            n = min(n, 512)
        splits = split_indices(total, {"val": dc.val_fraction, "archval": dc.archval_fraction}, self.cfg.seed,
                               limit=n)
        bs = dc.batch_size
        if bs % self.dist.world_size:
            raise NascoreError(
                f"data.batch_size {bs} is not divisible by the {self.dist.world_size} processes",
                hint="batch_size is the global batch; make it a multiple of --nproc-per-node × nodes",
            )
        bs = min(bs, max(len(splits["train"]) // 2, 1))
        self.data = DataBundle(
            spec, splits, seed=self.cfg.seed, batch_size=bs // self.dist.world_size,
            eval_batch_size=dc.eval_batch_size, rank=self.dist.rank, world_size=self.dist.world_size,
            num_workers=dc.num_workers,
        )
        if dc.random_labels:
            self.data = self.data.with_random_labels(self.cfg.seed + 104729)

    @property
    def supernet(self) -> Supernet:
        """The supernet, built on first use (a table-only search never builds one).

        Its weights at the first build of the run, before any training, are kept as
        :attr:`initial_weights` (and in ``checkpoints/w0.pt``, which a resumed run reads back).
        """
        if self._supernet is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed)  # the same initial weights on every rank and every run
                net = self.base_space.build_supernet().to(self.device)
            self._init_initial_weights(net)
            if self._pending_weights is not None:
                net.load_state_dict(load_torch(self._pending_weights, map_location=self.device)["supernet"])
                self._pending_weights = None
            self._supernet = net
        return self._supernet

    # -- W0: the supernet at initialisation (angle metrics: ABS, RLNAS) ---------------------------
    def _w0_path(self) -> Path | None:
        return self.run_dir / "checkpoints" / "w0.pt" if self.run_dir is not None else None

    def _init_initial_weights(self, fresh: Supernet) -> None:
        """W0 = ``checkpoints/w0.pt`` when the run folder has one (resume), else ``fresh``'s weights."""
        path = self._w0_path()
        if path is not None and path.exists():
            self._initial_weights = load_torch(path)["supernet"]
            return
        self.set_initial_weights(fresh.snapshot())

    @property
    def initial_weights(self) -> dict[str, torch.Tensor]:
        """W0: a CPU copy of the supernet's state dict before any training, keyed by name."""
        if self._initial_weights is None:
            self.supernet  # noqa: B018 - building the supernet records W0
        assert self._initial_weights is not None
        return self._initial_weights

    def set_initial_weights(self, snapshot: dict[str, torch.Tensor] | None = None) -> None:
        """Replace W0 by ``snapshot`` (default: the current supernet's weights) and persist it.

        For methods that re-initialise the supernet or move the angle reference (ABS's one-time
        W0 replacement); a resumed run reads the replaced W0 back.
        """
        if snapshot is None:
            snapshot = self.supernet.snapshot()
        self._initial_weights = {k: v.detach().to("cpu", copy=True) for k, v in snapshot.items()}
        path = self._w0_path()
        if path is not None and self.dist.is_main:
            save_torch(path, {"supernet": self._initial_weights})

    @property
    def has_supernet(self) -> bool:
        return self._supernet is not None

    @property
    def cost(self) -> CostTable:
        """MACs/params table at the dataset's input shape (the same for restricted spaces)."""
        return self.base_space.cost_table(self.data.input_shape)

    # -- helpers for components ----------------------------------------------------------------
    def stage_seed(self, stream: str = "") -> int:
        """A seed for ``stream`` of the current stage, fixed by (run seed, stage key)."""
        h = hashlib.sha256(f"{self.cfg.seed}/{self.stage_key}/{stream}".encode()).digest()
        return int.from_bytes(h[:4], "little")

    def feasible(self, arch: Architecture) -> bool:
        """Does ``arch`` satisfy the run's resource constraint (by the cost table)?"""
        if self.constraint.unbounded:
            return True
        return self.constraint.admits(*self.cost.cost(arch))

    def candidate(self, arch: Architecture, score: float, metrics: dict[str, float] | None = None, origin: str = "") -> Candidate:
        macs, params = self.cost.cost(arch)
        return Candidate(arch, self.space.format(arch), float(score), macs, params, dict(metrics or {}), origin)

    def log_space(self, stage: str, round: int | None = None) -> None:
        """Log the current search space (``event: space``); shrinking selectors call it after each
        round so that ``plots/space.png`` shows what each round removed."""
        extra = {} if round is None else {"round": round}
        self.log.event("space", stage=stage, **extra, size=self.space.size(), allowed=self.space.allowed_json())

    def progress(self, total: int | None = None, desc: str = "", initial: int = 0) -> Any:
        """A tqdm progress bar; silent when quiet, not a terminal, or not rank 0."""
        from tqdm.auto import tqdm

        disable = self.quiet or not self.dist.is_main or not sys.stderr.isatty()
        return tqdm(total=total, desc=desc, initial=initial, disable=disable, leave=False, dynamic_ncols=True)

    @property
    def checkpoints(self) -> Checkpoints:
        folder = self.run_dir / "checkpoints" if self.run_dir else None
        return Checkpoints(folder, self.stage_key, self.log, writer=self.dist.is_main)

    def check_same_arch(self, arch: Architecture) -> None:
        """In a distributed run, verify every rank sampled the same path (cheap, periodic)."""
        if not self.dist.enabled:
            return
        self._same_calls = getattr(self, "_same_calls", 0) + 1
        if self._same_calls % 50 != 1:
            return
        code = zlib.crc32(self.space.format(arch).encode())
        t = torch.tensor([code, -code], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        if int(t[0]) != code or int(-t[1]) != code:
            raise NascoreError(
                f"ranks sampled different paths at stage {self.stage_key}",
                hint="a sampler must draw from the trainer's seeded generator only (self.rng)",
            )

    def allreduce_grads(self, net: torch.nn.Module) -> None:
        """Average the active path's gradients across ranks (one flat all-reduce)."""
        if not self.dist.enabled:
            return
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch._utils._flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat /= self.dist.world_size
        for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    # -- run folder ------------------------------------------------------------------------------
    def write_state(self) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        self.state["space_allowed"] = self.space.allowed_json()
        self.state["candidates"] = [c.to_json() for c in self.candidates]
        write_json(self.run_dir / "state.json", self.state)

    def save_supernet(self) -> None:
        if self.run_dir is None or not self.dist.is_main or self._supernet is None:
            return
        save_torch(self.run_dir / "checkpoints" / "supernet.pt", {"supernet": self._supernet.state_dict()})

    def restore(self) -> None:
        """Load state.json and the last stage-end supernet weights (for resume/export)."""
        assert self.run_dir is not None
        path = self.run_dir / "state.json"
        if not path.exists():
            return
        self.state = read_json(path)
        allowed = self.state.get("space_allowed")
        if allowed:
            self.space = self.base_space.restrict({i: a for i, a in enumerate(allowed)})
        self.candidates = [Candidate.from_json(c) for c in self.state.get("candidates", [])]
        weights = self.run_dir / "checkpoints" / "supernet.pt"
        if weights.exists():
            self._pending_weights = weights
            self._supernet = None

    def write_results(self) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        retrain = self.state.get("retrain", {})
        write_json(self.run_dir / "results.json", {
            "run": self.cfg.name,
            "space": self.cfg.space.name,
            "dataset": self.cfg.dataset.name,
            "constraint": self.constraint.describe(),
            "input_shape": list(self.data.input_shape),
            "cost_definition": "MACs and params counted by fvcore (one multiply-add = 1)",
            "candidates": [
                {**c.to_json(), **({"retrain": retrain[c.arch_str]} if c.arch_str in retrain else {})}
                for c in self.candidates
            ],
            "timings": self.state.get("timings", {}),
            "nascore": __version__,
        })


# ---------------------------------------------------------------------------------------------
def iter_stages(stages: list[Any], prefix: str = "") -> Iterator[tuple[str, Any, str | None]]:
    """(key, stage, loop key) for each leaf stage, loops unrolled (rounds × inner stages)."""
    for i, st in enumerate(stages):
        key = f"{prefix}{i}"
        if isinstance(st, LoopStage):
            for r in range(st.rounds):
                for sub_key, sub, _ in iter_stages(st.stages, prefix=f"{key}.{r}."):
                    yield sub_key, sub, key
        else:
            yield key, st, None


def _stage_name(st: Any) -> str:
    if isinstance(st, TrainStage):
        return f"train ({st.trainer.name})"
    if isinstance(st, SearchStage):
        return f"{st.kind} ({st.selector.name})"
    return st.kind


def _option_path(cfg: RunConfig, key: str, field: str) -> str:
    """The options key (as produced by iter_refs) of ``field`` of the stage with ``key``."""
    parts = key.split(".")
    path = f"stages[{parts[0]}]"
    rest = parts[1:]
    while rest:
        _round, idx, *rest = rest
        path += f".stages[{idx}]"
    return f"{path}.{field}"


def run_pipeline(ctx: RunContext) -> list[Candidate]:
    """Run (or continue) every stage of ``ctx.cfg``; returns the final candidates."""
    cfg = ctx.cfg
    done = set(ctx.state.get("completed", []))
    timings = ctx.state.setdefault("timings", {})
    if not done:  # the space a run starts from: plots show what shrinking stages removed from it
        ctx.log_space("setup")
    for key, stage, loop_key in iter_stages(cfg.stages):
        if key in done:
            continue
        if loop_key is not None and ctx.state.get("loop_done", {}).get(loop_key):
            continue
        ctx.stage_key = key
        ctx.log.event("stage_start", stage=key, name=_stage_name(stage))
        t0 = time.time()
        if not ctx.quiet and ctx.dist.is_main:
            print(f"[{key}] {_stage_name(stage)}", file=sys.stderr)
        if isinstance(stage, TrainStage):
            _run_train(ctx, stage, key)
        elif isinstance(stage, SearchStage):
            result = _run_search(ctx, stage, key)
            if result.done and loop_key is not None:
                ctx.state.setdefault("loop_done", {})[loop_key] = True
        elif isinstance(stage, ExportStage):
            from nascore.export import export_candidates

            export_candidates(ctx, stage.top, stage.formats)
        elif isinstance(stage, RetrainStage):
            from nascore.retrain import retrain_candidates

            retrain_candidates(ctx, stage, key)
        timings[key] = round(time.time() - t0, 3)
        ctx.save_supernet()
        ctx.state.setdefault("completed", []).append(key)
        ctx.write_state()
        ctx.write_results()
        ctx.log.event("stage_end", stage=key, seconds=timings[key])
    ctx.stage_key = "done"
    return ctx.candidates


def _run_train(ctx: RunContext, stage: TrainStage, key: str) -> None:
    trainer = ctx.build("trainer", stage.trainer, _option_path(ctx.cfg, key, "trainer"))
    if not hasattr(trainer, "fit"):
        raise PluginError(f"trainer {stage.trainer.name!r} has no fit(ctx) method")
    ctx.distiller = (
        ctx.build("distiller", stage.distiller, _option_path(ctx.cfg, key, "distiller")) if stage.distiller else None
    )
    try:
        trainer.fit(ctx)
    finally:
        ctx.distiller = None


def _run_search(ctx: RunContext, stage: SearchStage, key: str) -> SearchResult:
    selector: Selector = ctx.build("selector", stage.selector, _option_path(ctx.cfg, key, "selector"))
    evaluator: Evaluator | None = (
        ctx.build("evaluator", stage.evaluator, _option_path(ctx.cfg, key, "evaluator")) if stage.evaluator else None
    )
    result = selector.search(ctx, evaluator)
    if not isinstance(result, SearchResult):
        raise PluginError(
            f"selector {stage.selector.name!r} returned {type(result).__name__}, expected nascore.roles.SearchResult"
        )
    if result.space is not None:
        ctx.space = result.space
        ctx.log_space(key)
    if result.candidates:
        ctx.candidates = list(result.candidates)[: stage.keep]
        best = ctx.candidates[0]
        ctx.log.event("best", stage=key, arch=best.arch_str, score=best.score, macs=best.macs, params=best.params)
    return result


# ---------------------------------------------------------------------------------------------
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


def open_run(
    data: dict[str, Any], *, run_dir: Path | None, registry: Registry | None = None, smoke: bool = False,
    quiet: bool = False, overwrite: bool = False, resume: bool = False, source: str = "config",
) -> RunContext:
    """Validate ``data`` and build the context (and run folder) for a new or resumed run."""
    registry = registry or get_registry()
    cfg, options = validate(data, registry, source=source)
    if run_dir is not None and not resume and DistInfo().is_main:
        prepare_run_dir(run_dir, resolved_dict(cfg, options), overwrite=overwrite)
        if overwrite:  # nothing of the previous run may leak into this one
            import shutil

            for f in ("state.json", "results.json", "metrics.jsonl", "splits.json", "report.html"):
                (run_dir / f).unlink(missing_ok=True)
            for sub in ("checkpoints", "export", "retrain", "plots"):
                shutil.rmtree(run_dir / sub, ignore_errors=True)
            for f in run_dir.glob("events.out.tfevents.*"):
                f.unlink(missing_ok=True)
    ctx = RunContext(cfg, options, registry, run_dir, smoke=smoke, quiet=quiet)
    if run_dir is not None:
        if resume:
            ctx.restore()
        elif ctx.dist.is_main:
            write_json(run_dir / "splits.json", {"seed": cfg.seed, **ctx.data.splits})
            if smoke:
                ctx.state["smoke"] = True
    return ctx


def load_run_config(run_dir: Path) -> dict[str, Any]:
    from nascore.config import load_yaml

    if not (run_dir / "config.yaml").exists():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml)", hint="pass the folder `nascore run` wrote")
    return load_yaml(run_dir / "config.yaml")


def resume_run(run_dir: Path, *, quiet: bool = False, registry: Registry | None = None) -> RunContext:
    data = load_run_config(run_dir)
    smoke = False
    if (run_dir / "state.json").exists():
        smoke = bool(read_json(run_dir / "state.json").get("smoke", False))
    return open_run(data, run_dir=run_dir, registry=registry, quiet=quiet, resume=True, smoke=smoke,
                    source=str(run_dir / "config.yaml"))


def summary_table(ctx: RunContext, top: int = 5) -> str:
    """The final table a person reads: rank, architecture, score, MACs, params, retrain accuracy."""
    retrain = ctx.state.get("retrain", {})
    rows = [("#", "architecture", "score", "MACs", "params", "retrained acc", "origin")]
    for i, c in enumerate(ctx.candidates[:top]):
        r = retrain.get(c.arch_str, {})
        acc = f"{100 * r['test_acc']:.2f}%" if "test_acc" in r else "-"
        rows.append((str(i), c.arch_str, f"{c.score:.4g}", human(c.macs), human(c.params), acc, c.origin))
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
