"""``metrics.jsonl``: one JSON object per logged step or event, flushed at once (rank 0 only).

Every record is mirrored to TensorBoard when that is on (:mod:`nascore.pipeline.tensorboard`). What
each record kind means, and how to follow a run live, is in docs/observing.md.

Each line is strict JSON (a non-finite number is written as ``null``) ending in a ``crc32`` of the
line; :func:`read_metrics` skips, and counts in a warning, lines that are cut, damaged or not records.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from nascore.errors import NascoreError
from nascore.io import parse_line, seal_line


class MetricLine(BaseModel):
    """A metrics.jsonl record: an object with a ``kind``; the kinds the report plots are checked further."""

    model_config = ConfigDict(extra="allow")
    kind: str
    time: float | None = None


class TrainLine(MetricLine):
    step: int
    loss: float | None = None
    acc: float | None = None


class SpaceLine(MetricLine):
    allowed: list[list[str]] | None = None
    round: int | None = None


def _model(record: dict[str, Any]) -> type[MetricLine]:
    if record.get("kind") == "train":
        return TrainLine
    if record.get("kind") == "event" and record.get("event") == "space":
        return SpaceLine
    return MetricLine


def read_metrics(path: Path, *, warn: bool = True) -> list[dict[str, Any]]:
    """The valid records of ``metrics.jsonl`` (oldest first); bad lines are skipped with one warning."""
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    bad: list[str] = []
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise NascoreError(f"cannot read {path}: {e.strerror or e}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = parse_line(line)
        except ValueError as e:  # json.JSONDecodeError is a ValueError; so is a CRC mismatch
            bad.append(f"line {n}: {'damaged (CRC mismatch)' if 'CRC' in str(e) else 'not JSON'}")
            continue
        if not isinstance(record, dict):
            bad.append(f"line {n}: not an object")
            continue
        try:
            _model(record).model_validate(record)
        except ValidationError as e:
            err = e.errors()[0]
            bad.append(f"line {n}: {'.'.join(map(str, err['loc'])) or 'record'}: {err['msg']}")
            continue
        out.append(record)
    if bad and warn:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        print(f"nascore: warning: {path}: skipped {len(bad)} bad line(s) ({shown})", file=sys.stderr)
    return out


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, flushed at once (rank 0 only)."""

    def __init__(self, path: Path | None, enabled: bool = True, tensorboard: bool = False,
                 config_text: str | None = None) -> None:
        self.path = path
        self.enabled = enabled and path is not None
        self.tb = None
        if self.enabled and path is not None and tensorboard:  # mirror every record as TensorBoard scalars
            from nascore.pipeline.tensorboard import TensorBoardSink

            resumed = path.exists() and path.stat().st_size > 0
            self.tb = TensorBoardSink(path.parent, existing=read_metrics(path, warn=False) if resumed else (),
                                      config_text=None if resumed else config_text)
        try:
            self._f = open(path, "a", buffering=1) if self.enabled and path else None  # noqa: SIM115
        except OSError as e:
            if self.tb is not None:
                self.tb.close()
            raise NascoreError(f"cannot write {path}: {e.strerror or e}",
                               hint="the run folder is read-only or the disk is full") from None
        self._t0 = time.time()

    def _write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            return
        record = {"time": round(time.time() - self._t0, 3), **record}
        self._f.write(seal_line(record, path=self.path) + "\n")
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
