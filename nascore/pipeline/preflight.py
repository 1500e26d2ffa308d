"""Checks of a run that need its built dataset and space, made before anything is written or trained.

:func:`nascore.config.validate` checks what the config says; :func:`preflight` checks what it means
once the dataset and the space exist (the context builds both, and picks the device, before the run
folder is created): that the space was built for the dataset's input shape and number of classes,
that it can process that input, and that the resource constraint admits at least one architecture
at that input size. The constraint is checked from the space's cost table (its min/max over the
options of every decision), never by tracing candidates, so a constraint no architecture meets
fails at start instead of when the search stage begins, after the whole supernet training.
"""

from __future__ import annotations

from typing import Any

import torch

from nascore.config import SearchStage
from nascore.errors import ConfigError, ConstraintError, NascoreError
from nascore.pipeline.stages import iter_stages
from nascore.roles import Context


def _shape(shape: Any) -> str:
    return "x".join(str(int(v)) for v in shape)


def _has_search(stages: list[Any]) -> bool:
    return any(isinstance(st, SearchStage) for _, st, _ in iter_stages(stages))


def preflight(ctx: Context) -> None:
    """Raise a :class:`ConfigError` / :class:`ConstraintError` for a run that cannot work as configured."""
    cfg, space, data = ctx.cfg, ctx.base_space, ctx.data
    shape = tuple(int(v) for v in data.input_shape)
    where = f"space {cfg.space.name!r} × dataset {cfg.dataset.name!r}"
    problems = []
    if tuple(int(v) for v in space.input_shape) != shape:
        problems.append(f"space: {where}: the space was built for input {_shape(space.input_shape)}, the dataset's "
                        f"images are {_shape(shape)} (a space factory must take ctx.data.input_shape)")
    if int(space.num_classes) != int(data.num_classes):
        problems.append(f"space: {where}: the space predicts {space.num_classes} classes, the dataset has "
                        f"{data.num_classes} (a space factory must take ctx.data.num_classes)")
    if problems:
        raise ConfigError(problems, source="the run's space and dataset")
    if ctx.constraint.unbounded and not _has_search(cfg.stages):
        return  # nothing will read the cost table
    try:
        # The table is cached on the space: the search reads this one. Its supernet is built on a
        # forked RNG, so the run's random streams are the same as without this check.
        with torch.random.fork_rng(devices=[]):
            table = space.cost_table(shape)
    except NascoreError:
        raise
    except Exception as e:  # noqa: BLE001 - the space cannot process the input: say so before any training
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise ConfigError(
            [f"space: {where}: the space cannot process the dataset's {_shape(shape)} input "
             f"({type(e).__name__}: {first}) — use a larger input (e.g. the dataset's pad_to) or fewer stride-2 "
             "stages"], source="the run's space and dataset") from e
    if getattr(ctx, "latency_table_path", None):
        table = ctx.cost  # the same table carrying the predicted latency (loading it refuses a foreign table)
    if ctx.constraint.unbounded:
        return
    try:
        ctx.constraint.check_feasible(table, space.allowed)
    except ConstraintError as e:
        raise ConstraintError(
            f"constraint: {str(e).splitlines()[0]} (space {cfg.space.name!r} at the dataset's input {_shape(shape)})",
            hint=(e.hint or "") + "; nothing was written or trained",
        ) from None
