"""Built-in evaluators (registered through the same hooks as any plugin).

``nb201_table`` scores NAS-Bench-201 cells by looking them up in a shipped accuracy table (or a
user CSV) instead of the supernet: the "oracle" that benchmarks compare supernet rankings to, and a
free evaluator for testing selectors. It counts lookups so a benchmark can report how many
architectures a selector queried.

A selector sees only the column it searches on: ``score`` returns ``{metric: value}`` and nothing
else, so a search on the validation column can never read (or leak into its choice) the test
accuracy it is judged by. The other columns of the chosen cells are read for the final report
only, through :meth:`NB201TableEvaluator.report_metrics` (which does not count as a query).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nascore.arch import Architecture
from nascore.errors import ConfigError
from nascore.hookspecs import hookimpl


class NB201TableConfig(BaseModel):
    """Options of ``nb201_table``: which table and column to look NB201 cells up in."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: Literal["cifar10_200ep", "12ep"] = Field(
        "cifar10_200ep", description="cifar10_200ep = final CIFAR-10; 12ep = 12-epoch C10/C100/IN16-120"
    )
    metric: str | None = Field(
        None, description="column (or its result key); default test_top1 (200ep) / cifar10-test (12ep)"
    )
    path: str | None = Field(None, description="a user CSV (optionally .gz) with a 'cellstr' column instead")

    @model_validator(mode="after")
    def _known_metric(self) -> "NB201TableConfig":
        if self.path is None and self.metric is not None:
            from nascore.groundtruth.nb201_table import COLUMNS, METRIC_NAMES

            keys = {v: k for k, v in METRIC_NAMES[self.table].items()}
            if self.metric not in COLUMNS[self.table] and self.metric not in keys:
                raise ValueError(
                    f"metric {self.metric!r} is not a column of table {self.table!r}; "
                    f"choose one of {', '.join(COLUMNS[self.table])}"
                )
        if self.path is not None and self.metric is None:
            raise ValueError("with 'path', name the CSV column to score by in 'metric'")
        return self


class NB201TableEvaluator:
    """Looks NB201 cells up in a table: ``score`` returns only the search column, keyed by result name.

    ``metric`` is the result key of the chosen column (e.g. ``nb201_cifar10_valid``);
    ``queries`` counts lookups (every arch of every call) and ``unique_queries`` distinct cells.
    ``report_metrics`` returns every column of a cell for the final report (not a query).
    """

    higher_is_better = True

    def __init__(self, table: str = "cifar10_200ep", column: str | None = None, path: str | None = None) -> None:
        from nascore.groundtruth.nb201_table import DEFAULT_METRIC, METRIC_NAMES, load_table, metric_name

        self.table_name = None if path is not None else table
        if column is None:
            column = DEFAULT_METRIC[table]
        if self.table_name is not None:
            column = {v: k for k, v in METRIC_NAMES[table].items()}.get(column, column)
        self.column = column
        self.table = load_table(table, path=path, required=(column,))
        self.table.check_metric(column)
        self.names = {c: metric_name(self.table_name, c) for c in self.table.columns}
        self.metric: str = self.names[column]
        self.queries = 0
        self.seen: set[str] = set()

    @property
    def unique_queries(self) -> int:
        return len(self.seen)

    def cell(self, arch: Architecture, ctx: Any) -> str:
        """The canonical cell string of ``arch`` (via the run's space)."""
        space = getattr(ctx, "space", None)
        if space is None:
            raise ConfigError(["evaluator nb201_table needs a run context with a search space (ctx.space)"])
        return space.format(arch)

    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        """The search metric of each arch (only that key: a selector must not see the others)."""
        out: list[dict[str, float]] = []
        for arch in archs:
            cell = self.cell(arch, ctx)
            row = self.table.row(cell)
            self.queries += 1
            self.seen.add(cell)
            out.append({self.metric: row[self.column]})
        return out

    def report_metrics(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        """Every column of each arch, keyed by result name, for the final report of chosen cells.

        Not a query (the counters do not move): call it after the search has made its choice,
        never from inside a selector's search loop.
        """
        return [{self.names[c]: v for c, v in self.table.row(self.cell(a, ctx)).items()} for a in archs]

    def __repr__(self) -> str:
        return f"NB201TableEvaluator({self.table.source}, metric={self.metric!r}, queries={self.queries})"


def make_nb201_table(cfg: NB201TableConfig, ctx: Any = None) -> NB201TableEvaluator:
    """NAS-Bench-201 accuracies looked up in a table (no supernet; counts queries)."""
    return NB201TableEvaluator(cfg.table, cfg.metric, cfg.path)


@hookimpl
def register_evaluators(register: Any) -> None:
    register("nb201_table", make_nb201_table, config=NB201TableConfig,
             summary="NAS-Bench-201 table lookup (CIFAR-10 200-epoch or 12-epoch C10/C100/IN16); counts queries")
