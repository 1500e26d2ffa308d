"""Latency tables checked end to end: ``nascore lut build`` + ``nascore lut check`` for mobilenet
and shufflenet at two batch sizes, with the machine's load average beside every figure.

For each (space, batch) it builds a TorchScript table (1 pinned thread), measures ``--n`` random
children end to end with the same backend/batch/threads, and prints one markdown row per prediction
model (MAPE, share within ±10 %, Kendall τ; fitted models out of fold). Tables, check.json and
check.png go to ``--out``. Run at normal priority: a low-priority timing measures the scheduler.

    python benchmarks/latency.py                        # ~5-10 min on a quiet 2-core box
    python benchmarks/latency.py --estimator min --repeats 60 --n 40 --batches 1 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", nargs="+", default=["mobilenet", "shufflenet"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--backend", default="torchscript")
    ap.add_argument("--estimator", default="median", choices=["median", "p10", "min"])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--out", default="runs/latency-bench")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nascore = [sys.executable, "-m", "nascore"]
    rows = ["| space | batch | model | MAPE % | within ±10 % | Kendall τ | max err % | load avg (1 min) before → after |",
            "|---|---|---|---|---|---|---|---|"]
    for space in args.spaces:
        for batch in args.batches:
            table = out / f"{space}-{args.backend}-b{batch}.json"
            before = os.getloadavg()[0]
            subprocess.run([*nascore, "lut", "build", space, "--backend", args.backend, "--batch", str(batch),
                            "--threads", "1", "--repeats", str(args.repeats), "--estimator", args.estimator,
                            "--out", str(table), "--quiet"], check=True)
            subprocess.run([*nascore, "lut", "check", str(table), "-n", str(args.n), "--quiet",
                            "--out", str(out / f"{space}-b{batch}")], check=True)
            after = os.getloadavg()[0]
            res = json.loads((out / f"{space}-b{batch}" / "check.json").read_text())
            for name, e in res["models"].items():
                rows.append(f"| {space} | {batch} | {name} | {e['mape_pct']:.1f} | {e['within10_pct']:.0f} % | "
                            f"{e['kendall_tau']:.3f} | {e['max_err_pct']:.0f} | {before:.1f} → {after:.1f} |")
            print("\n".join(rows[-len(res["models"]):]), flush=True)
    print("\n".join(rows))
    (out / "table.md").write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
