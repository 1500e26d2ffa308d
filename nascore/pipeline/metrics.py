"""``metrics.jsonl``: one JSON object per logged step or event, flushed at once (rank 0 only).

Every record is mirrored to TensorBoard when that is on (:mod:`nascore.pipeline.tensorboard`). What
each record kind means, and how to follow a run live, is in docs/observing.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


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
