"""What a component sees of a run: the :class:`RunContext`.

Components receive it in their factory and in every call. It satisfies :class:`nascore.roles.Context`,
the protocol plugins are written against; the rest of it (``cfg``, ``options``, restoring and
writing the run folder) is for the pipeline.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import torch

from nascore.arch import Architecture, Candidate
from nascore.config import Ref, RunConfig
from nascore.cost import CostTable, ResourceConstraint
from nascore.data import DataBundle, split_indices
from nascore.errors import NascoreError, PluginError
from nascore.io import load_torch
from nascore.pipeline import runfolder, tensorboard
from nascore.pipeline.distributed import DistInfo, allreduce_grads, check_same_path, pick_device
from nascore.pipeline.metrics import MetricsLog
from nascore.pipeline.runfolder import Checkpoints
from nascore.registry import Registry
from nascore.space import SearchSpace, Supernet


def terminal_size(stream: Any = None) -> tuple[int, int] | None:
    """(columns, rows) the terminal ``stream`` (stderr) is on reports; None when it is no terminal."""
    import os

    try:
        size = os.get_terminal_size((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return size.columns, size.lines


def progress_bar(total: int | None = None, desc: str = "", initial: int = 0, disable: bool = False) -> Any:
    """A tqdm bar on stderr that draws on any terminal and always shows its last numbers once.

    tqdm sizes its bar from the terminal and draws nothing at all on a pseudo-terminal that reports
    0 rows (a pty nobody sized: ``docker exec -t``, ``script``, some CI runners); such a terminal gets
    a fixed bar (``$COLUMNS`` or 100 columns, 20 rows). Postfixes set with ``refresh=False`` are drawn
    on the next timed refresh, so a loop faster than ``mininterval`` would never show them: closing
    draws the final state first.
    """
    import os

    from tqdm.auto import tqdm

    class _Bar(tqdm):  # type: ignore[misc, valid-type]
        def close(self) -> None:
            if not self.disable:
                self.refresh()
            super().close()

    size = None if disable else terminal_size(sys.stderr)
    if size is not None and min(size) > 0:
        return _Bar(total=total, desc=desc, initial=initial, leave=False, file=sys.stderr, dynamic_ncols=True)
    env = os.environ.get("COLUMNS", "")
    cols = size[0] if size and size[0] > 0 else int(env) if env.isdigit() and int(env) > 0 else 100
    rows = size[1] if size and size[1] > 0 else 20
    return _Bar(total=total, desc=desc, initial=initial, disable=disable, leave=False, file=sys.stderr,
                ncols=cols, nrows=rows)


class RunContext:
    """Everything a component may use: space, supernet, data, costs, constraint, log, state.

    Components receive it in their factory and in every call; it is the one API between a plugin
    and the pipeline (plugins never touch torch.distributed or the run folder directly). What a
    plugin may rely on is :class:`nascore.roles.Context`; a test checks this class provides all of it.
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
        self.device = pick_device(cfg.device)
        self.stage_key = "setup"
        self.log = self._open_log()
        self.state: dict[str, Any] = runfolder.new_state()
        self.candidates: list[Candidate] = []
        self.distiller: Any = None
        self.data: DataBundle = None  # type: ignore[assignment]
        self._supernet: Supernet | None = None
        self._pending_weights: Path | None = None
        self._initial_weights: dict[str, torch.Tensor] | None = None
        self._saved_digest: tuple[Any, ...] | None = None  # (weights digest, file size, mtime) of the last save_supernet
        self.run_lock: Any = None  # the run folder's write lock (runfolder.lock_run_dir), held until close()
        bounds = cfg.constraint.model_dump()
        self.latency_table_path: str | None = bounds.pop("latency_table", None)
        self.constraint = ResourceConstraint(**bounds)
        self._latency: Any = None
        self._cost_pair: tuple[Any, Any] | None = None  # (base table, the same with latency attached)
        self._build_data()
        self.base_space: SearchSpace = self.build("space", cfg.space, "space")
        if not isinstance(self.base_space, SearchSpace):
            raise PluginError(f"space {cfg.space.name!r} did not return a nascore.space.SearchSpace")
        self.space: SearchSpace = self.base_space

    # -- construction --------------------------------------------------------------------------
    def _open_log(self) -> MetricsLog:
        cfg, run_dir = self.cfg, self.run_dir
        return MetricsLog(
            run_dir / "metrics.jsonl" if run_dir else None, enabled=self.dist.is_main,
            tensorboard=tensorboard.resolve(cfg.tensorboard) and self.dist.is_main,
            config_text=(run_dir / "config.yaml").read_text() if run_dir and (run_dir / "config.yaml").exists() else None,
        )

    def close(self) -> None:
        """Close the log and release the run folder (another process may then resume or export it)."""
        self.log.close()
        if self.run_lock is not None:
            self.run_lock.release()
            self.run_lock = None

    def attach_run_dir(self, run_dir: Path) -> None:
        """Give a context built before its run folder existed (checks first, then writes) that folder."""
        self.log.close()
        self.run_dir = Path(run_dir)
        self.log = self._open_log()

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
        # a smoke evaluates no bigger batches than it trains on: a recipe's eval batch of 200 at 224
        # would make each candidate's evaluation the slowest step of a CPU smoke
        eval_bs = min(dc.eval_batch_size, bs) if self.smoke else dc.eval_batch_size
        self.data = DataBundle(
            spec, splits, seed=self.cfg.seed, batch_size=bs // self.dist.world_size,
            eval_batch_size=eval_bs, rank=self.dist.rank, world_size=self.dist.world_size,
            num_workers=self._workers(dc.num_workers), pin_memory=dc.pin_memory, persistent_workers=dc.persistent_workers,
        )
        if dc.random_labels:
            self.data = self.data.with_random_labels(self.cfg.seed + 104729)

    def _workers(self, asked: int) -> int:
        """``data.num_workers``, capped at this process's share of the CPUs it may run on.

        A paper recipe's 8 workers on a 2-core laptop only oversubscribe it (torch warns, in its
        words); the batches do not depend on the worker count, so capping changes no result.
        """
        import os

        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        share = max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))
        if asked <= share:
            return asked
        if self.dist.is_main:
            print(f"nascore: warning: data.num_workers {asked} > the {share} CPU(s) this process may use; "
                  f"using {share} (set data.num_workers to silence this)", file=sys.stderr)
        return share

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
                saved = load_torch(self._pending_weights, map_location=self.device)
                runfolder.load_state_into(net, saved, self._pending_weights, what="supernet")
                self._pending_weights = None
            self._supernet = net
        return self._supernet

    # -- W0: the supernet at initialisation (angle metrics: ABS, RLNAS) ---------------------------
    def _init_initial_weights(self, fresh: Supernet) -> None:
        """W0 = ``checkpoints/w0.pt`` when the run folder has one (resume), else ``fresh``'s weights."""
        saved = runfolder.load_w0(self.run_dir)
        if saved is not None:
            self._initial_weights = saved
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
        if self.dist.is_main:
            runfolder.save_w0(self.run_dir, self._initial_weights)

    @property
    def has_supernet(self) -> bool:
        return self._supernet is not None

    @property
    def cost(self) -> CostTable:
        """MACs/params table at the dataset's input shape (the same for restricted spaces); with
        ``constraint.latency_table`` it also carries the predicted latency (``latency_ms(arch)``)."""
        table = self.base_space.cost_table(self.data.input_shape)
        if not self.latency_table_path:
            return table
        if self._cost_pair is None or self._cost_pair[0] is not table:
            self._cost_pair = (table, self.latency.attach(table))
        return self._cost_pair[1]

    @property
    def latency(self) -> Any:
        """The run's measured latency table (:class:`nascore.latency.LatencyTable`), or None.

        Loaded once and refused when it was measured for another space, options or input shape;
        another device model warns."""
        if self._latency is None and self.latency_table_path:
            from nascore.latency import LatencyTable

            lut = LatencyTable.load(self.latency_table_path)
            opts = self.options.get("space")
            resolved = opts.model_dump(mode="json") if hasattr(opts, "model_dump") else dict(self.cfg.space.options)
            lut.check_for(self.cfg.space.name, resolved, self.data.input_shape,
                          self.base_space.cost_table(self.data.input_shape), device=self.device.type,
                          source=f"constraint.latency_table ({self.latency_table_path})")
            self._latency = lut
        return self._latency

    # -- helpers for components ----------------------------------------------------------------
    def stage_seed(self, stream: str = "") -> int:
        """A seed for ``stream`` of the current stage, fixed by (run seed, stage key)."""
        h = hashlib.sha256(f"{self.cfg.seed}/{self.stage_key}/{stream}".encode()).digest()
        return int.from_bytes(h[:4], "little")

    def feasible(self, arch: Architecture) -> bool:
        """Does ``arch`` satisfy the run's resource constraint (by the cost table)?"""
        if self.constraint.unbounded:
            return True
        return self.constraint.admits_arch(self.cost, arch)

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
        disable = self.quiet or not self.dist.is_main or not sys.stderr.isatty()
        return progress_bar(total=total, desc=desc, initial=initial, disable=disable)

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
        check_same_path(self.dist, self.space.format(arch), self.device, self.stage_key)

    def allreduce_grads(self, net: torch.nn.Module) -> None:
        """Average the active path's gradients across ranks (one flat all-reduce)."""
        allreduce_grads(self.dist, net)

    # -- run folder (what the pipeline writes after each stage, and reads on resume) --------------
    def write_state(self) -> None:
        runfolder.write_state(self)

    def save_supernet(self) -> None:
        """Write the stage-end weights, unless they are byte for byte the ones last written (a
        search, export or retrain stage leaves them alone: no need to rewrite a 100 MB+ file)."""
        if self.run_dir is None or not self.dist.is_main or self._supernet is None:
            return
        weights = self._supernet.state_dict()
        path = runfolder.supernet_path(self.run_dir)
        written = (_weights_digest(weights), *_file_stamp(path))
        if written == self._saved_digest:  # same weights, and the file is the one written then
            return
        runfolder.save_supernet(self.run_dir, weights)
        self._saved_digest = (written[0], *_file_stamp(path))

    def restore(self) -> None:
        """Load state.json and the last stage-end supernet weights (for resume/export)."""
        assert self.run_dir is not None
        saved = runfolder.read_state(self.run_dir)
        if saved is None:
            return
        self.state, self.candidates = saved
        allowed = self.state.get("space_allowed")
        if allowed:
            self.space = self.base_space.restrict({i: a for i, a in enumerate(allowed)})
        weights = runfolder.supernet_path(self.run_dir)
        if weights.exists():
            self._pending_weights = weights
            self._supernet = None

    def write_results(self) -> None:
        runfolder.write_results(self)


def _weights_digest(weights: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, dtypes, shapes and bytes; sha256, ~0.06 s per 100 MB
    on a CPU with SHA extensions, several times less than serialising and writing them)."""
    h = hashlib.sha256()
    for name, t in weights.items():
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _file_stamp(path: Path) -> tuple[int, int]:
    """(size, mtime in ns) of ``path``, (-1, -1) when it is missing."""
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)
