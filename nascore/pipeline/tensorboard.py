"""TensorBoard event files beside ``metrics.jsonl``, for people who watch runs in TensorBoard.

Every record written to ``metrics.jsonl`` is mirrored: its numeric fields become scalars named
``<kind>/<field>`` (``train/loss``, ``candidate/score``, ``best/macs``, ``nse_round/hypervolume``),
with the stage key appended when the record has one (``train/loss/stage 0``), so that the stages of a
``loop`` draw separate curves. The x axis is the record's own counter (``step``, ``generation``,
``cycle``, ``round`` or ``epoch``), else the number of such records so far. The event files go into
the run folder itself, so ``tensorboard --logdir runs/`` lists each run by its folder name — the
layout ``torch.utils.tensorboard`` uses by default.

``tensorboard`` is an optional extra (``pip install 'nascore[tensorboard]'``); without it nothing
is written and nothing is imported.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any


STEP_FIELDS = ("step", "generation", "cycle", "round", "epoch")
"""Fields used as the x axis, in this order of preference."""

IDENTITY_FIELDS = ("index", "block", "level")
"""Fields that say *which* curve a record belongs to (retrain candidate, DNA block, TNAS level)."""

SKIP_FIELDS = frozenset({"time", "kind", "event", "stage", "rank"})


def available() -> bool:
    """Whether the ``tensorboard`` package is installed (checked without importing it)."""
    return importlib.util.find_spec("tensorboard") is not None


def resolve(setting: bool | None) -> bool:
    """``None`` → write when tensorboard is installed. (``True`` without it fails config validation.)"""
    return available() if setting is None else bool(setting) and available()


def scalars(record: dict[str, Any], counters: Counter) -> tuple[int, list[tuple[str, float]]]:
    """(x, [(tag, value), ...]) for one metrics.jsonl record; advances ``counters``.

    Pure, so that a resumed run can replay the existing file to continue the implicit counters.
    """
    name = record.get("event") if record.get("kind") == "event" else record.get("kind")
    if not name:
        return 0, []
    suffix = ""
    for f in IDENTITY_FIELDS:
        if isinstance(record.get(f), int) and not isinstance(record.get(f), bool):
            suffix += f"/{f} {record[f]}"
    if record.get("stage") is not None:
        suffix += f"/stage {record['stage']}"
    step_field = next((f for f in STEP_FIELDS if _number(record.get(f))), None)
    counter_key = f"{name}{suffix}"
    counters[counter_key] += 1
    x = int(record[step_field]) if step_field else counters[counter_key]
    values = []
    for k, v in record.items():
        if k in SKIP_FIELDS or k == step_field or k in IDENTITY_FIELDS or not _number(v):
            continue
        values.append((f"{name}/{k}{suffix}", float(v)))
    return x, values


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # NaN is not plotted


class TensorBoardSink:
    """A ``SummaryWriter`` on the run folder fed with metrics.jsonl records (rank 0 only)."""

    def __init__(self, run_dir: Path, existing: Iterable[dict[str, Any]] = (),
                 config_text: str | None = None) -> None:
        """``existing``: the records a resumed run's metrics.jsonl already holds (validated by its reader), so
        the step counters continue where they stopped."""
        from torch.utils.tensorboard import SummaryWriter

        self.counters: Counter = Counter()
        for record in existing:
            scalars(record, self.counters)
        self.writer = SummaryWriter(log_dir=str(run_dir), flush_secs=10)
        if config_text is not None:
            # TensorBoard renders text as markdown: indent to keep the YAML a code block.
            self.writer.add_text("config", "\n".join("    " + line for line in config_text.splitlines()), 0)

    def write(self, record: dict[str, Any]) -> None:
        x, values = scalars(record, self.counters)
        for tag, v in values:
            self.writer.add_scalar(tag, v, x)
        if record.get("event") == "best" and isinstance(record.get("arch"), str):
            self.writer.add_text(f"best/arch/stage {record.get('stage')}", f"`{record['arch']}`", x)

    def close(self) -> None:
        self.writer.close()
