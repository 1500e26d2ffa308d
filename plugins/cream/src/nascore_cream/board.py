"""The prioritized path board: the K best paths seen during supernet training.

A path is *admitted* (Cream's ``PrioritizedBoard.isUpdate``) when

1. the board is not full, or
2. its score beats the worst entry's by more than ``acc_gap``, or
3. its score beats the worst entry's and it has fewer MACs;

and never when its MACs lie outside the board's range (a board path is a final-architecture
candidate, so it must satisfy the constraint). The board stays sorted best first — by score, ties
by fewer MACs, then by arrival — and is truncated to ``size`` (the worst entry is evicted).

With ``unique`` (our default) a path already on the board is never added twice: a new measurement
of it replaces the old entry (fresh score, images and probabilities) and the board is re-sorted.
The official code keeps duplicates (``unique: false``), which on a small space fills the board with
copies of one lucky path.

Each entry keeps what teacher matching needs: a few input images (``slice`` of the batch it was
scored on) and the softmax it produced on them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from nascore.arch import Architecture, option_members


@attrs.define
class BoardEntry:
    """One prioritized path: its score, cost and the evidence teacher matching uses."""

    arch: Architecture
    arch_str: str
    score: float
    macs: int
    step: int = 0
    images: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    serial: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch_str, "ops": self.arch.to_json(), "score": float(self.score),
                "macs": int(self.macs), "step": int(self.step)}

    def state(self) -> dict[str, Any]:
        out = {**self.to_json(), "serial": int(self.serial)}
        if self.images is not None and self.probs is not None:
            out["images"] = self.images.detach().cpu().clone()
            out["probs"] = self.probs.detach().cpu().clone()
        return out

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> "BoardEntry":
        return cls(Architecture.from_json(data["ops"]), str(data["arch"]), float(data["score"]), int(data["macs"]),
                   int(data.get("step", 0)), data.get("images"), data.get("probs"), int(data.get("serial", 0)))


class PrioritizedBoard:
    """Top-``size`` paths by score under Cream's admission rule (see the module docstring)."""

    def __init__(self, size: int = 10, acc_gap: float = 0.05, macs_min: float | None = None,
                 macs_max: float | None = None, unique: bool = True) -> None:
        if size < 1:
            raise ValueError(f"board size must be positive, got {size}")
        self.size = int(size)
        self.acc_gap = float(acc_gap)
        self.macs_min = macs_min
        self.macs_max = macs_max
        self.unique = unique
        self.entries: list[BoardEntry] = []
        self._serial = 0
        self.admitted = 0
        self.evicted = 0

    # -- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):  # noqa: ANN204 - iterator of entries
        return iter(self.entries)

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.size

    @property
    def worst(self) -> BoardEntry | None:
        return self.entries[-1] if self.entries else None

    @property
    def best(self) -> BoardEntry | None:
        return self.entries[0] if self.entries else None

    def in_range(self, macs: float) -> bool:
        """Is ``macs`` inside the board's MACs range (inclusive)?"""
        if self.macs_min is not None and macs < self.macs_min:
            return False
        return not (self.macs_max is not None and macs > self.macs_max)

    def index_of(self, arch: Architecture) -> int | None:
        for i, e in enumerate(self.entries):
            if e.arch == arch:
                return i
        return None

    def would_admit(self, score: float, macs: float) -> str | None:
        """Why a new path with ``score``/``macs`` would be admitted ("not full", "better",
        "better and fewer MACs"), or None. Ignores duplicates; checks the MACs range."""
        if not self.in_range(macs):
            return None
        if not self.full:
            return "not full"
        worst = self.entries[-1]
        if score > worst.score + self.acc_gap:
            return "better"
        if score > worst.score and macs < worst.macs:
            return "better and fewer MACs"
        return None

    # -- updates ------------------------------------------------------------------------------
    def offer(self, entry: BoardEntry) -> str | None:
        """Insert ``entry`` if the rule admits it; returns the reason, ``"refresh"`` when a path
        already on the board was re-measured, or None when nothing changed."""
        if not self.in_range(entry.macs):
            return None
        if self.unique:
            i = self.index_of(entry.arch)
            if i is not None:
                entry.serial = self._next_serial()
                self.entries[i] = entry
                self._sort()
                return "refresh"
        reason = self.would_admit(entry.score, entry.macs)
        if reason is None:
            return None
        entry.serial = self._next_serial()
        self.entries.append(entry)
        self._sort()
        self.admitted += 1
        while len(self.entries) > self.size:
            self.entries.pop()
            self.evicted += 1
        return reason

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _sort(self) -> None:
        self.entries.sort(key=lambda e: (-e.score, e.macs, e.serial))

    # -- statistics ----------------------------------------------------------------------------
    def op_counts(self) -> Counter:
        """How often each op name appears on the board, over all decisions (Cream's 'teacher' prior)."""
        counts: Counter = Counter()
        for e in self.entries:
            for opt in e.arch.ops:
                counts.update(option_members(opt))
        return counts

    # -- persistence ---------------------------------------------------------------------------
    def to_json(self) -> list[dict[str, Any]]:
        """JSON-able entries (arch string, ops, score, MACs, step), best first."""
        return [e.to_json() for e in self.entries]

    def state_dict(self) -> dict[str, Any]:
        """Everything, tensors included (for checkpoints: weights_only-loadable)."""
        return {"entries": [e.state() for e in self.entries], "serial": self._serial,
                "admitted": self.admitted, "evicted": self.evicted}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.entries = [BoardEntry.from_state(d) for d in state.get("entries", [])]
        self._serial = int(state.get("serial", len(self.entries)))
        self.admitted = int(state.get("admitted", 0))
        self.evicted = int(state.get("evicted", 0))
        self._sort()
