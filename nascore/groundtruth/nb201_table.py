"""NAS-Bench-201 accuracy tables shipped with nascore (all 15,625 cells), and a user-CSV reader.

Evaluating a method's ranking on NB201 needs the benchmark's accuracies; the official ``.pth`` is
several GB and needs network. nascore ships two small gzip CSVs (``nascore/resources/nb201``, see
its README for sources and licences):

* ``cifar10_200ep`` — CIFAR-10 final (200-epoch) accuracies: ``test_top1`` (best 94.37),
  ``valid_top1``, ``valid_test_top1``, ``params``, ``score`` (NASWOT);
* ``12ep`` — CIFAR-10/100/ImageNet16-120 **12-epoch** accuracies (``cifar10-test``,
  ``cifar100-test``, ``imagenet-test`` and ``-val``); not final numbers — say so when reporting.

Rows are keyed by the canonical cell string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (edge order
1<-0 | 2<-0, 2<-1 | 3<-0, 3<-1, 3<-2). Only the stdlib is used (no pandas, no pickles), and each
file is parsed once per process.
"""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import io
import math
import os
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import attrs

from nascore.errors import ArchitectureError, ConfigError, DatasetError

KEY = "cellstr"
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), in cell-string order

TABLES: dict[str, str] = {
    "cifar10_200ep": "nb201_cifar10_200ep_naswot.csv.gz",
    "12ep": "nb201_12ep_c10_c100_in16.csv.gz",
}
DEFAULT_METRIC: dict[str, str] = {"cifar10_200ep": "test_top1", "12ep": "cifar10-test"}
COLUMNS: dict[str, tuple[str, ...]] = {
    "cifar10_200ep": ("params", "score", "test_top1", "valid_top1", "valid_test_top1"),
    "12ep": ("cifar10-test", "cifar10-val", "cifar100-test", "cifar100-val", "imagenet-test", "imagenet-val"),
}
# Result-key names of each column (what the ``nb201_table`` evaluator reports).
METRIC_NAMES: dict[str, dict[str, str]] = {
    "cifar10_200ep": {
        "test_top1": "nb201_cifar10_test",
        "valid_top1": "nb201_cifar10_valid",
        "valid_test_top1": "nb201_cifar10valid_test",
        "params": "nb201_params_m",
        "score": "nb201_naswot_score",
    },
    "12ep": {
        "cifar10-test": "nb201_12ep_cifar10_test",
        "cifar10-val": "nb201_12ep_cifar10_valid",
        "cifar100-test": "nb201_12ep_cifar100_test",
        "cifar100-val": "nb201_12ep_cifar100_valid",
        "imagenet-test": "nb201_12ep_in16_test",
        "imagenet-val": "nb201_12ep_in16_valid",
    },
}


def cell_string(ops: Sequence[str]) -> str:
    """The canonical NB201 cell string of six edge ops in edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2."""
    if len(ops) != 6:
        raise ArchitectureError(f"an NB201 cell has 6 edges, got {len(ops)} ops: {list(ops)}")
    parts = [f"{op}~{src}" for op, (_, src) in zip(ops, EDGES)]
    return f"|{parts[0]}|+|{parts[1]}|{parts[2]}|+|{parts[3]}|{parts[4]}|{parts[5]}|"


def parse_cell_string(text: str) -> tuple[str, ...]:
    """Inverse of :func:`cell_string` (checks the node structure, not the op names)."""
    nodes = text.strip().split("+")
    ops: list[str] = []
    for to, node in enumerate(nodes, start=1):
        edges = [e for e in node.strip().strip("|").split("|") if e]
        if len(edges) != to:
            raise ArchitectureError(f"{text!r}: node {to} should have {to} input edge(s), has {len(edges)}")
        for src, e in enumerate(edges):
            op, _, s = e.partition("~")
            if s != str(src):
                raise ArchitectureError(f"{text!r}: edge {e!r} of node {to} should come from node {src}")
            ops.append(op)
    if len(ops) != 6:
        raise ArchitectureError(f"{text!r} is not a 3-node NB201 cell string")
    return tuple(ops)


def _to_float(v: str) -> float:
    v = v.strip()
    if not v:
        return math.nan
    try:
        return float(v)
    except ValueError:
        return math.nan


@attrs.frozen
class NB201Table:
    """One table: metrics per canonical cell string; ``source`` says which file it came from."""

    source: str
    columns: tuple[str, ...]
    rows: dict[str, dict[str, float]] = attrs.field(repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, cell: object) -> bool:
        return cell in self.rows

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def row(self, cell: str) -> dict[str, float]:
        """Every metric of ``cell``; raises :class:`ArchitectureError` if it is not in the table."""
        try:
            return self.rows[cell]
        except KeyError:
            key = cell.strip()
            if key in self.rows:
                return self.rows[key]
            raise ArchitectureError(
                f"{cell!r} is not in the NB201 table {self.source}",
                hint="cells are written |op~0|+|op~0|op~1|+|op~0|op~1|op~2| with ops "
                + ", ".join(NB201_OPS) + " (single ops only, no mixed edges)",
            ) from None

    def get(self, cell: str, metric: str) -> float:
        """``metric`` of ``cell`` (NaN where the table has no value)."""
        self.check_metric(metric)
        return self.row(cell)[metric]

    def check_metric(self, metric: str) -> None:
        if metric not in self.columns:
            raise ConfigError(
                [f"metric {metric!r} is not a column of {self.source}; columns: {', '.join(self.columns)}"],
                source="nb201 table",
            )

    def best(self, metric: str) -> tuple[str, float]:
        """The cell with the highest ``metric`` (NaNs skipped), and that value."""
        self.check_metric(metric)
        cell = max((c for c in self.rows if not math.isnan(self.rows[c][metric])), key=lambda c: self.rows[c][metric])
        return cell, self.rows[cell][metric]


def _parse(text: io.TextIOBase, source: str, required: Sequence[str] = ()) -> NB201Table:
    reader = csv.reader(text)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetError(f"{source} is empty", hint=f"write a header with a {KEY!r} column and metric columns") from None
    missing = [c for c in (KEY, *required) if c not in header]
    if missing:
        raise DatasetError(
            f"{source} lacks column(s) {', '.join(repr(m) for m in missing)}; its columns are {', '.join(header)}",
            hint=f"the CSV needs a {KEY!r} column (|op~0|+|op~0|op~1|+|...|) and one column per metric",
        )
    k = header.index(KEY)
    cols = [(i, h) for i, h in enumerate(header) if i != k and h not in ("arch", "")]
    rows: dict[str, dict[str, float]] = {}
    for line_no, rec in enumerate(reader, start=2):
        if not rec:
            continue
        if len(rec) != len(header):
            raise DatasetError(f"{source}, line {line_no}: {len(rec)} fields, header has {len(header)}")
        rows[rec[k].strip()] = {h: _to_float(rec[i]) for i, h in cols}
    return NB201Table(source=source, columns=tuple(h for _, h in cols), rows=rows)


@lru_cache(maxsize=4)
def _load_builtin(table: str) -> NB201Table:
    name = TABLES[table]
    res = importlib.resources.files("nascore").joinpath("resources", "nb201", name)
    try:
        with res.open("rb") as fh, gzip.open(fh, "rt", encoding="utf-8", newline="") as text:
            return _parse(text, f"nascore/resources/nb201/{name}")
    except FileNotFoundError as e:
        raise DatasetError(f"nascore's NB201 table {name} is missing", hint="reinstall nascore") from e


@lru_cache(maxsize=8)
def _load_path(path: str, mtime_ns: int, required: tuple[str, ...]) -> NB201Table:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as text:  # type: ignore[operator]
        return _parse(text, path, required)


def load_table(table: str = "cifar10_200ep", path: str | os.PathLike | None = None,
               required: Sequence[str] = ()) -> NB201Table:
    """A shipped table (``table``) or a user CSV (``path``, optionally ``.gz``), parsed once.

    A user CSV needs a ``cellstr`` column and numeric metric columns; ``required`` names columns
    that must be present (a clear :class:`DatasetError` otherwise).
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DatasetError(f"NB201 table {p} does not exist",
                               hint="give the path of a CSV with a 'cellstr' column and metric columns")
        return _load_path(str(p.resolve()), p.stat().st_mtime_ns, tuple(required))
    if table not in TABLES:
        raise ConfigError([f"unknown NB201 table {table!r}; choose one of {', '.join(TABLES)}"], source="nb201 table")
    tab = _load_builtin(table)
    for r in required:
        tab.check_metric(r)
    return tab


def lookup(cell: str, metric: str | None = None, table: str = "cifar10_200ep") -> float:
    """``metric`` (default: the table's CIFAR-10 test accuracy) of one cell string."""
    return load_table(table).get(cell, metric or DEFAULT_METRIC[table])


def metric_name(table: str | None, column: str) -> str:
    """The result key of ``column``: e.g. ``test_top1`` of ``cifar10_200ep`` -> ``nb201_cifar10_test``."""
    if table is not None and column in METRIC_NAMES.get(table, {}):
        return METRIC_NAMES[table][column]
    safe = "".join(ch if ch.isalnum() else "_" for ch in column).strip("_").lower()
    return f"nb201_{safe}"
