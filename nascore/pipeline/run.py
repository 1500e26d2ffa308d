"""A run from start to finish: open (or resume) a run folder, then run its stages in order.

A run executes the config's stages in order (``train``, ``search``/``shrink``, ``export``,
``retrain``, and ``loop`` of them). After each stage the supernet weights and the run state
(completed stages, the current restricted space, candidates) are written atomically; trainers
checkpoint inside their stage. ``nascore resume`` rebuilds the context from the folder and
continues: the same seed gives the same chosen architecture as an uninterrupted run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from nascore.arch import Candidate
from nascore.config import ExportStage, RetrainStage, SearchStage, TrainStage, iter_refs, resolved_dict, validate
from nascore.errors import CheckpointError
from nascore.pipeline import runfolder, tensorboard
from nascore.pipeline.context import RunContext
from nascore.pipeline.distributed import DistInfo
from nascore.pipeline.export import export_candidates
from nascore.pipeline.preflight import preflight
from nascore.pipeline.retrain import retrain_candidates
from nascore.pipeline.stages import iter_stages, run_search, run_train, stage_name
from nascore.registry import Registry, get_registry


def run_pipeline(ctx: RunContext) -> list[Candidate]:
    """Run (or continue) every stage of ``ctx.cfg``; returns the final candidates.

    An exception raised by plugin code propagates with a note naming the plugin, the component and
    the stage (:meth:`nascore.registry.Registry.guard`); the CLI prints that instead of an internal error.
    """
    active = [ctx.registry.get(role, ref.name) for _, role, ref in iter_refs(ctx.cfg)]
    with ctx.registry.guard(active, lambda: f"running stage {ctx.stage_key}"):
        return _run_stages(ctx)


def _run_stages(ctx: RunContext) -> list[Candidate]:
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
        ctx.log.event("stage_start", stage=key, name=stage_name(stage))
        t0 = time.time()
        if ctx.dist.is_main:  # always printed (docs/observing.md): --quiet hides only the progress bars
            print(f"[{key}] {stage_name(stage)}", file=sys.stderr, flush=True)
        if isinstance(stage, TrainStage):
            run_train(ctx, stage, key)
        elif isinstance(stage, SearchStage):
            result = run_search(ctx, stage, key)
            if result.done and loop_key is not None:
                ctx.state.setdefault("loop_done", {})[loop_key] = True
        elif isinstance(stage, ExportStage):
            export_candidates(ctx, stage.top, stage.formats, stage.bake_normalization)
        elif isinstance(stage, RetrainStage):
            retrain_candidates(ctx, stage, key)
        timings[key] = round(time.time() - t0, 3)
        ctx.save_supernet()
        ctx.state.setdefault("completed", []).append(key)
        ctx.write_state()
        ctx.write_results()
        ctx.log.event("stage_end", stage=key, seconds=timings[key])
    ctx.stage_key = "done"
    return ctx.candidates


def open_run(
    data: dict[str, Any], *, run_dir: Path | None, registry: Registry | None = None, smoke: bool = False,
    quiet: bool = False, overwrite: bool = False, resume: bool = False, source: str = "config",
) -> RunContext:
    """Validate ``data`` and build the context (and run folder) for a new or resumed run."""
    registry = registry or get_registry()
    if run_dir is not None and not resume:  # a folder of another run is refused before anything is written
        runfolder.check_free(run_dir, overwrite)
    cfg, options = validate(data, registry, source=source, tensorboard_available=tensorboard.available)
    new = run_dir is not None and not resume
    # Device, dataset, space and constraint are checked before the folder is touched (docs/config.md).
    ctx = RunContext(cfg, options, registry, None if new else run_dir, smoke=smoke, quiet=quiet)
    preflight(ctx)
    if new and DistInfo().is_main:
        # ``overwrite``: everything of the previous run is deleted first, so nothing of it leaks into this one
        ctx.run_lock = runfolder.prepare_run_dir(run_dir, resolved_dict(cfg, options), overwrite=overwrite)
    try:
        if new:
            ctx.attach_run_dir(run_dir)
        if run_dir is not None:
            if resume:
                ctx.restore()
            elif ctx.dist.is_main:
                runfolder.write_splits(run_dir, cfg.seed, ctx.data.splits)
                if smoke:
                    ctx.state["smoke"] = True
                    ctx.write_state()  # now: a smoke run killed in its first stage must resume as a smoke run
    except BaseException:
        ctx.close()
        raise
    return ctx


def resume_run(run_dir: Path, *, quiet: bool = False, registry: Registry | None = None,
               export_only: bool = False) -> RunContext:
    """The context of the run in ``run_dir``, restored from its files, ready for :func:`run_pipeline`.

    Only the run's own resume opens its folder this way. It checks the folder is writable and removes
    the temporary files of killed writes; every file read is digest-checked and validated (damage is
    a CheckpointError naming the file). A damaged or missing ``results.json`` of a run whose
    ``state.json`` is sound is rebuilt from it. ``export_only`` (``nascore export``): no TensorBoard
    event files are written, since nothing is trained.
    """
    data = runfolder.load_run_config(run_dir)
    lock = runfolder.open_for_resume(run_dir) if DistInfo().is_main else None
    try:
        smoke = runfolder.was_smoke(run_dir)  # reads (and validates) state.json before anything is built
        if export_only:
            data = {**data, "tensorboard": False}
        ctx = open_run(data, run_dir=run_dir, registry=registry, quiet=quiet, resume=True, smoke=smoke,
                       source=str(run_dir / "config.yaml"))
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    ctx.run_lock = lock
    if ctx.dist.is_main and ctx.state.get("completed"):
        try:
            runfolder.read_results(run_dir)
            damaged = None if (run_dir / "results.json").exists() else f"{run_dir / 'results.json'}: missing"
        except CheckpointError as e:
            damaged = str(e).splitlines()[0]
        if damaged is not None:
            ctx.write_results()
            print(f"nascore: warning: {damaged}; rebuilt results.json from state.json", file=sys.stderr)
    return ctx
