"""Ranking quality of supernet proxies on the test bed: Kendall tau and top-k hit rate per row.

    python benchmarks/ranking.py                       # every row, seeds 0 1 (~2-4 min on 1 thread)
    python benchmarks/ranking.py --seeds 0 --only spos --plot runs/ranking.png

The ground truth is ``nascore/resources/testbed/tiny_chain_mnist5k.json``: all 81 ``tiny_chain``
architectures trained standalone on mnist5k (mean over seeds). A *row* is a proxy: a function
``fn(seed) -> {arch string: score}`` (higher = predicted better) over those architectures.

Rows are plugins of this script: every module ``benchmarks/ranking_rows/*.py`` is imported and
its ``ROWS = [(label, fn), ...]`` appended in file-name order, so a method adds its rows by adding
a file — this script never changes. Two baselines are built in (MACs and params: "bigger is
better"), and the fixture's seed-to-seed tau is printed as the noise ceiling no proxy can beat
reliably.

Prints one table line per row: Kendall tau-b (mean ± sd over seeds), top-5 and top-10 hit rates
(share of the proxy's k best that are among the true k best), seconds; writes a scatter plot PNG
(proxy score vs standalone accuracy, first seed, one panel per row).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TESTBED = "tiny_chain_mnist5k"

Row = tuple[str, Callable[[int], dict[str, float]]]


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
                    raise TypeError(f"ROWS entries must be (label, fn(seed)), got {item!r}")
            rows += found
        except Exception as e:  # noqa: BLE001 - one broken row file must not stop the others
            problems.append(f"{path.name}: {type(e).__name__}: {e}")
    return rows, problems


def baseline_rows() -> list[Row]:
    from nascore.groundtruth.testbed import load_testbed

    return [
        ("baseline: MACs", lambda seed: load_testbed(TESTBED, "macs")),
        ("baseline: params", lambda seed: load_testbed(TESTBED, "params")),
    ]


def _fmt(values: list[float], pct: bool = False) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    m = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{m:.2f}" + (f" ± {sd:.2f}" if len(vals) > 1 else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--only", default=None, help="keep rows whose label contains this text")
    ap.add_argument("--plot", type=Path, default=ROOT / "runs" / "ranking.png", help="scatter plot PNG")
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from nascore.groundtruth.testbed import align, kendall_tau, load_testbed, load_testbed_file, topk_hit_rate

    truth = load_testbed(TESTBED)
    meta = load_testbed_file(TESTBED)["meta"]
    rows, problems = load_rows()
    if not args.no_baselines:
        rows = baseline_rows() + rows
    if args.only:
        rows = [r for r in rows if args.only in r[0]]
    for p in problems:
        print(f"warning: skipped rows of {p}", file=sys.stderr)
    print(f"test bed {TESTBED}: {len(truth)} archs, standalone acc {meta['acc_range'][0]:.1f}-{meta['acc_range'][1]:.1f}%, "
          f"noise ceiling (seed-to-seed tau) {meta['seed_tau']:.2f}; seeds {args.seeds}", flush=True)

    results = []
    for label, fn in rows:
        taus, top5, top10, first = [], [], [], None
        t0 = time.time()
        error = None
        for seed in args.seeds:
            try:
                scores = fn(seed)
            except Exception as e:  # noqa: BLE001
                error = f"{type(e).__name__}: {e}"
                traceback.print_exc()
                break
            pred, gt = align(scores, truth)
            if len(pred) < len(truth):
                error = f"scored {len(pred)} of {len(truth)} archs"
            taus.append(kendall_tau(pred, gt))
            top5.append(topk_hit_rate(pred, gt, 5))
            top10.append(topk_hit_rate(pred, gt, 10))
            if first is None:
                first = (pred, gt)
        secs = time.time() - t0
        results.append((label, taus, top5, top10, secs, error, first))
        print(f"  {label}: tau {_fmt(taus)} ({secs:.0f} s){'  ERROR ' + error if error else ''}", flush=True)

    header = ("proxy", "Kendall tau", "top-5 hit", "top-10 hit", "seconds")
    table = [header] + [
        (label, _fmt(t), _fmt(a), _fmt(b), f"{s:.0f}" + (" (error)" if err else "")) for label, t, a, b, s, err, _ in results
    ]
    w = [max(len(r[i]) for r in table) for i in range(len(header))]
    print()
    for i, r in enumerate(table):
        print("  ".join(v.ljust(w[j]) for j, v in enumerate(r)).rstrip())
        if i == 0:
            print("  ".join("-" * x for x in w))
    print(f"{'noise ceiling (seed-to-seed)'.ljust(w[0])}  {meta['seed_tau']:.2f}")

    plotted = [r for r in results if r[6] is not None]
    if args.plot and plotted:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(plotted)
        cols = min(3, n)
        nrows = math.ceil(n / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
        for ax, (label, taus, *_rest, (pred, gt)) in zip(axes.flat, plotted):
            ax.scatter(pred, gt, s=12, alpha=0.8)
            ax.set_title(f"{label}\ntau {taus[0]:.2f} (seed {args.seeds[0]})", fontsize=9)
            ax.set_xlabel("proxy score", fontsize=8)
            ax.set_ylabel("standalone acc (%)", fontsize=8)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"scatter plot: {args.plot}")
    return 1 if any(r[5] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
