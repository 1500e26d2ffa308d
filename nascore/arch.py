"""Architecture and Candidate: the immutable values every role passes around.

An :class:`Architecture` is one option per decision of a search space, in the space's decision
order. An option is an op name (``"k3e4"``), or a frozenset of op names where a decision holds a set
(TNAS mixed edges, NSE multi-branch layers). The space owns the canonical string form
(:meth:`nascore.space.SearchSpace.format` / ``parse``); the value itself is hashable, so it is the
cache key for evaluators and the visited set of selectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

import attrs

Option = Union[str, frozenset]


def _to_option(value: Any) -> Option:
    if isinstance(value, str):
        return value
    if isinstance(value, (set, frozenset, list, tuple)):
        items = frozenset(value)
        if len(items) == 1:
            return next(iter(items))
        return items
    raise TypeError(f"an option is an op name or a set of op names, got {value!r}")


def _to_ops(values: Iterable[Any]) -> tuple[Option, ...]:
    return tuple(_to_option(v) for v in values)


@attrs.frozen(order=False)
class Architecture:
    """One option per decision, in the space's decision order (hashable, immutable)."""

    ops: tuple[Option, ...] = attrs.field(converter=_to_ops)

    def __len__(self) -> int:
        return len(self.ops)

    def __getitem__(self, i: int) -> Option:
        return self.ops[i]

    def replace(self, index: int, option: Any) -> "Architecture":
        """A copy with decision ``index`` set to ``option``."""
        ops = list(self.ops)
        ops[index] = option
        return Architecture(ops)

    def to_json(self) -> list[Any]:
        """JSON-able form: lists of op names where a decision holds a set (sorted)."""
        return [sorted(o) if isinstance(o, frozenset) else o for o in self.ops]

    @classmethod
    def from_json(cls, data: Iterable[Any]) -> "Architecture":
        return cls(list(data))


def option_members(option: Option) -> tuple[str, ...]:
    """The op names an option stands for, sorted (one for a plain op)."""
    if isinstance(option, frozenset):
        return tuple(sorted(option))
    return (option,)


@attrs.frozen
class Candidate:
    """An evaluated architecture: what selectors return and ``results.json`` holds.

    ``score`` is the selector's objective (higher is better); ``metrics`` keeps every number the
    evaluator gave; ``macs``/``params`` come from the space's cost table (fvcore-exact);
    ``origin`` says where it came from (``"evolution:gen3"``, ``"board"``, ``"tnas:level2"``).
    """

    arch: Architecture
    arch_str: str
    score: float
    macs: int
    params: int
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    origin: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "arch": self.arch_str,
            "ops": self.arch.to_json(),
            "score": self.score,
            "macs": self.macs,
            "params": self.params,
            "metrics": dict(self.metrics),
            "origin": self.origin,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Candidate":
        return cls(
            arch=Architecture.from_json(data["ops"]),
            arch_str=data["arch"],
            score=float(data["score"]),
            macs=int(data["macs"]),
            params=int(data["params"]),
            metrics=dict(data.get("metrics", {})),
            origin=str(data.get("origin", "")),
        )
