"""The ``rlnas_search`` selector: a search that provably reads no labelled data (RLNAS).

RLNAS (Zhang et al., CVPR 2021) trains the supernet on *random* labels (``data: {random_labels:
true}``: every training label drawn once, uniformly, from a seed, and fixed across epochs), then
searches with SPOS evolution maximising the ABS ``angle`` — a score computed from weights only —
so "no validation data and no ground-truth labels are used anywhere in search".

This selector makes that checkable. It runs an inner selector (``evolution`` by default, any
registered selector works) with the stage's evaluator and watches the run's data access log
(:attr:`nascore.data.DataBundle.access_log`, which records every split any component reads):

* before searching it requires the run's labels to be random (``data.random_labels: true``);
* after every evaluator call, and after the inner search, any read of a split other than the
  random-labelled ``train`` split (``val``, ``archval``, ``test``) stops the run with
  :class:`LabelLeak`, naming the split and the evaluator — e.g. ``accuracy`` reads ``archval``,
  which keeps its real labels;
* what was read is recorded in ``ctx.state["rlnas"][<stage>]`` (``state.json``) and in the
  ``rlnas_guard`` event of ``metrics.jsonl``.

Retraining the result (the ``retrain`` stage) uses the real labels (the core retrains on
``ctx.data.with_true_labels()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nascore.arch import Architecture
from nascore.config import format_pydantic
from nascore.errors import ConfigError, NascoreError
from nascore.roles import SearchResult

#: Splits a random-label search may read: the training images, whose labels are random.
LABEL_FREE_SPLITS = frozenset({"train"})


class LabelLeak(NascoreError):
    """A component read labelled (or validation) data during a search that must use none."""


class RlnasSearchConfig(BaseModel):
    """Options of ``rlnas_search``."""

    model_config = ConfigDict(extra="forbid")
    selector: str = Field("evolution", description="the registered selector that searches (RLNAS: SPOS evolution)")
    options: dict[str, Any] = Field(default_factory=dict, description="that selector's own options")
    require_random_labels: bool = Field(
        True, description="refuse to run unless data.random_labels is true (the RLNAS setting)")


def _leaks(log: Sequence[str], start: int) -> list[str]:
    return sorted({s for s in log[start:] if s not in LABEL_FREE_SPLITS})


class GuardedEvaluator:
    """Wraps an evaluator; raises :class:`LabelLeak` as soon as one of its calls read labelled data."""

    def __init__(self, inner: Any, name: str) -> None:
        self.inner = inner
        self.name = name
        self.metric = inner.metric
        self.higher_is_better = getattr(inner, "higher_is_better", True)
        self.calls = 0

    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        log = ctx.data.access_log
        start = len(log)
        out = self.inner.score(archs, ctx)
        self.calls += 1
        leaked = _leaks(log, start)
        if leaked:
            raise LabelLeak(
                f"evaluator {self.name!r} read the {', '.join(leaked)} split(s) during an RLNAS search, "
                f"which must use no labelled or validation data",
                hint="score with a label-free evaluator (evaluator: angle); the accuracy evaluator reads archval",
            )
        return out

    def __getattr__(self, item: str) -> Any:  # counters and caches of the wrapped evaluator
        return getattr(self.inner, item)


class RlnasSearch:
    """Runs the inner selector under the no-labelled-data guard (see module docstring)."""

    def __init__(self, cfg: RlnasSearchConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self._inner_options: Any = None
        if ctx is not None:
            self._inner_options = self._validate(ctx)

    def _validate(self, ctx: Any) -> Any:
        comp = ctx.registry.get("selector", self.cfg.selector)
        if self.cfg.selector == "rlnas_search":
            raise ConfigError(["rlnas_search.selector: cannot wrap itself"], source="rlnas_search options")
        try:
            return comp.config.model_validate(self.cfg.options)
        except ValidationError as e:
            raise ConfigError(format_pydantic(e, prefix="rlnas_search.options"), source="rlnas_search options") from None

    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        if self.cfg.require_random_labels and getattr(ctx.data, "train_labels", None) is None:
            raise NascoreError(
                "rlnas_search needs a supernet trained on random labels, but this run uses the real ones",
                hint="set `data: {random_labels: true}` in the run config (or require_random_labels: false)",
            )
        if evaluator is None:
            raise NascoreError("rlnas_search needs an evaluator", hint="add `evaluator: angle` to the search stage")
        if self._inner_options is None:
            self._inner_options = self._validate(ctx)
        inner = ctx.registry.get("selector", self.cfg.selector).build(self._inner_options, ctx)
        name = getattr(evaluator, "metric", type(evaluator).__name__)
        guarded = GuardedEvaluator(evaluator, name)
        log = ctx.data.access_log
        start = len(log)
        try:
            result = inner.search(ctx, guarded)
        finally:
            read = list(log[start:])
            record = {"splits_read": sorted(set(read)), "reads": len(read), "labelled_reads": len(_leaks(log, start)),
                      "evaluator_calls": guarded.calls, "selector": self.cfg.selector}
            ctx.state.setdefault("rlnas", {})[str(ctx.stage_key)] = record
            ctx.log.event("rlnas_guard", stage=ctx.stage_key, **record)
        leaked = _leaks(log, start)
        if leaked:
            raise LabelLeak(
                f"selector {self.cfg.selector!r} read the {', '.join(leaked)} split(s) during an RLNAS search",
                hint="RLNAS searches with weights only; use a selector that reads no data (evolution, random)",
            )
        return result


def make_rlnas_search(cfg: RlnasSearchConfig, ctx: Any = None) -> RlnasSearch:
    return RlnasSearch(cfg, ctx)
