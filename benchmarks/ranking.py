"""Ranking quality of supernet proxies on a test bed, by the `nascore rank` protocol.

    python benchmarks/ranking.py                                  # every row on tiny_matched, seeds 0 1 2
    python benchmarks/ranking.py --bed tiny_chain --seeds 0 1 --only spos --plot runs/ranking.png

The ground truth is a shipped test bed (``nascore/resources/testbed/<bed>_mnist5k.json``: every
architecture trained standalone on mnist5k, several seeds). A *row* is a proxy: a function
``fn(seed, bed) -> {arch string: score}`` (higher = predicted better) over the bed's architectures.

Rows are plugins of this script: every module ``benchmarks/ranking_rows/*.py`` is imported and
its ``ROWS = [(label, fn), ...]`` appended in file-name order, so a method adds its rows by adding
a file — this script never changes. A row that is not set up for a bed raises NotImplementedError
and is listed as skipped. The figures, the baselines (params, MACs, every installed zero-cost proxy)
and the noise ceiling come from :mod:`nascore.ranking`, exactly as ``nascore rank`` prints them.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

Row = tuple[str, Callable[..., dict[str, float]]]


def load_rows(folder: Path = HERE / "ranking_rows") -> tuple[list[Row], list[str]]:
    """``ROWS`` of every module in ``folder`` (sorted by file name); import problems are reported, not fatal."""
    rows: list[Row] = []
    problems: list[str] = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            spec = importlib.util.spec_from_file_location(f"ranking_rows_{path.stem}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            found = list(getattr(module, "ROWS"))
            for item in found:
                label, fn = item
                if not (isinstance(label, str) and callable(fn)):
                    raise TypeError(f"ROWS entries must be (label, fn(seed, bed)), got {item!r}")
            rows += found
        except Exception as e:  # noqa: BLE001 - one broken row file must not stop the others
            problems.append(f"{path.name}: {type(e).__name__}: {e}")
    return rows, problems


def as_scorer(fn: Callable[..., dict[str, float]], bed: str) -> Any:
    """A row ``fn(seed, bed) -> {arch: score}`` as a :mod:`nascore.ranking` scorer."""

    def scorer(gt: Any, seed: int) -> list[float]:
        scores = fn(seed, bed)
        missing = [k for k in gt.keys if k not in scores]
        if missing:
            raise ValueError(f"scored {len(gt.keys) - len(missing)} of {len(gt.keys)} archs (missing {missing[0]})")
        return [float(scores[k]) for k in gt.keys]

    return scorer


def main(argv: list[str] | None = None) -> int:
    from nascore import ranking

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bed", default="tiny_matched", choices=[b for b in ranking.BEDS if b != "nb201"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", default=None, help="keep rows whose label contains this text")
    ap.add_argument("--plot", type=Path, default=None, help="scatter plot PNG (scores vs truth, first seed)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from nascore.registry import get_registry

    reg = get_registry()
    ctx_for_seed = ranking.context_cache(args.bed, reg)

    gt = ranking.load_ground_truth(args.bed, ctx_for_seed(args.seeds[0]))
    rows, problems = load_rows()
    if args.only:
        rows = [r for r in rows if args.only in r[0]]
    for p in problems:
        print(f"warning: skipped rows of {p}", file=sys.stderr)
    baselines = [] if args.no_baselines else ranking.default_baselines(reg, ctx_for_seed)[0]

    skipped = []
    subjects = []
    for label, fn in rows:
        subjects.append((label, as_scorer(fn, args.bed), len(args.seeds)))
    protocol = ranking.protocol_text(gt, args.seeds, 0.1, 5)
    print(protocol, flush=True)
    results = ranking.rank(gt, subjects, baselines, args.seeds,
                           progress=lambda line: print("  " + line, file=sys.stderr, flush=True))
    for r in results:
        if r.error and r.error.startswith("NotImplementedError"):
            skipped.append(f"{r.label} ({r.error.split(': ', 1)[-1]})")
    results = [r for r in results if not (r.error and r.error.startswith("NotImplementedError"))]
    print()
    print(ranking.format_table(results))
    for s in skipped:
        print(f"skipped: {s}")
    if args.json:
        ranking.write_json(args.json, ranking.to_json(gt, results, protocol, args.seeds))
        print(f"wrote {args.json}")
    if args.plot:
        print(f"scatter plot: {ranking.plot(gt, results, args.plot)}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
