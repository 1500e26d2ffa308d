"""The ``params`` and ``macs`` evaluators: an architecture's cost as its score.

The baselines every ranking must beat: on spaces where bigger networks are better (``tiny_chain``,
NAS-Bench-201) the parameter count alone ranks architectures well, so a method's ranking means
something only next to these. ``higher_is_better`` is True ("more is better"), the direction the
zero-cost literature (Abdelfattah et al. 2021; NASLib's zero-cost benchmark) reports #params and
FLOPs with. Scores come from the run's cost table (:attr:`nascore.roles.Context.cost`, exact with
fvcore), so they cost microseconds and read neither data nor the supernet's weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from nascore.arch import Architecture
from nascore.hookspecs import hookimpl


class CostEvaluatorConfig(BaseModel):
    """The cost evaluators take no options."""

    model_config = ConfigDict(extra="forbid")


class CostEvaluator:
    """Scores each architecture by its MACs or parameter count from ``ctx.cost``."""

    higher_is_better = True

    def __init__(self, metric: str) -> None:
        if metric not in ("macs", "params"):
            raise ValueError(f"CostEvaluator metric must be 'macs' or 'params', got {metric!r}")
        self.metric = metric
        self.evaluations = 0

    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        table = ctx.cost
        count = table.macs if self.metric == "macs" else table.params
        self.evaluations += len(archs)
        return [{self.metric: float(count(a))} for a in archs]

    def __repr__(self) -> str:
        return f"CostEvaluator({self.metric!r})"


def make_params(cfg: CostEvaluatorConfig, ctx: Any = None) -> CostEvaluator:
    """The parameter count of the standalone child (more is better)."""
    return CostEvaluator("params")


def make_macs(cfg: CostEvaluatorConfig, ctx: Any = None) -> CostEvaluator:
    """The MACs of the standalone child at the dataset's input shape (more is better)."""
    return CostEvaluator("macs")


@hookimpl
def register_evaluators(register: Any) -> None:
    register("params", make_params, config=CostEvaluatorConfig,
             summary="baseline: the parameter count from the cost table (more is better; reads no data)")
    register("macs", make_macs, config=CostEvaluatorConfig,
             summary="baseline: MACs from the cost table (more is better; reads no data)")
