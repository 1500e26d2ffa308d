"""Cream vs SPOS at the same budget on a test bed (tiny_chain or the cost-matched tiny_matched, mnist5k).

For each seed, every method trains a supernet with the same optimiser, batches and steps
(``ranking_rows/cream.py``: EPOCHS x 50 steps, SGD lr 0.1 linear decay), then picks its final
architecture under a MACs limit:

* ``spos``       uniform single-path training (``spos`` trainer, or ``single_path`` without
                 nascore-spos) + the core ``evolution`` selector with the ``accuracy`` evaluator;
* ``in-range``   ablation: the ``cream`` trainer with warm-up = the whole run, i.e. Cream's sampler
                 (uniform inside the MACs range) but no board and no distillation, + ``evolution``;
* ``cream``      the ``cream`` trainer (paper semantics) + the ``board`` selector (re-scored);
* ``cream-code`` the same with ``compat: cream-code`` (the official code's quirks).

Reported per method (mean over seeds, per-seed in brackets): the ground-truth (standalone, test bed
fixture) accuracy of the final architecture and its rank among the feasible architectures; Kendall
tau (``nascore.ranking.rank_metrics``) between the supernet's accuracy (BN recalibrated) and the
ground truth over all architectures and over the feasible ones, and tau among the true top 10 %;
the **supernet accuracy of the board paths** (the paths the ``cream`` run of the same seed kept on its
board, scored by every method's supernet: does distillation make those subnets better?); for Cream,
the mean ground truth of the board vs of all feasible architectures; and the training wall time. The
paper claims better-trained subnets; whatever this prints is what we measured.

On ``--bed tiny_matched`` every architecture has the same MACs, so there is no MACs limit (all 256
feasible; ``--macs-max`` is ignored) and ``in-range`` is exactly the ``cream`` trainer without its
board and distillation: the same training without path distillation.

    python benchmarks/cream_vs_spos.py                    # 2 seeds, ~2 min CPU (one thread)
    python benchmarks/cream_vs_spos.py --seeds 0 1 2 3 --epochs 20 --macs-max 8e5
    python benchmarks/cream_vs_spos.py --bed tiny_matched --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "ranking_rows"))
import cream as rows  # noqa: E402  (benchmarks/ranking_rows/cream.py)

from nascore.ranking import rank_metrics  # noqa: E402
from nascore.groundtruth.testbed import align, load_testbed, load_testbed_file  # noqa: E402

EVAL = {"name": "accuracy", "options": {"recal_batches": 20}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bed", default="tiny_chain", choices=["tiny_chain", "tiny_matched"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=rows.EPOCHS)
    ap.add_argument("--macs-max", type=float, default=7e5, help="MACs limit of the final architecture")
    ap.add_argument("--methods", nargs="+", default=["spos", "in-range", "cream", "cream-code"],
                    choices=["spos", "in-range", "cream", "cream-code"])
    return ap.parse_args(argv)


def run_method(method: str, seed: int, epochs: int, macs_max: float | None, reg: Any,
               bed: str = "tiny_chain") -> dict[str, Any]:
    constraint = {"macs_max": macs_max} if macs_max is not None else {}
    evolution = {"kind": "search", "selector": {"name": "evolution", "options": {
        "population": 20, "generations": 5, "top_k": 5, "mutations": 10, "crossovers": 10}}, "evaluator": EVAL}
    if method == "spos":
        train, search = rows.spos_stage(reg, epochs), evolution
    elif method == "in-range":
        train, search = rows.cream_stage(epochs, warmup_epochs=epochs), evolution
    else:
        train = rows.cream_stage(epochs, **({"compat": "cream-code"} if method == "cream-code" else {}))
        search = {"kind": "search", "selector": "board", "evaluator": EVAL}
    t0 = time.time()
    ctx = rows.train_supernet(train, seed, constraint=constraint, extra_stages=[search], reg=reg, space=bed)
    wall = ctx.state["timings"]
    out: dict[str, Any] = {"final": ctx.candidates[0].arch_str, "train_s": wall["0"], "search_s": wall["1"]}
    scores = rows.score_all(ctx)
    out["total_s"] = time.time() - t0
    out["scores"] = scores
    board = ctx.state.get("cream_board")
    out["board"] = [e["arch"] for e in board["entries"]] if board else []
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    truth, macs = load_testbed(f"{args.bed}_mnist5k"), load_testbed(f"{args.bed}_mnist5k", metric="macs")
    macs_max = None if len(set(macs.values())) == 1 else args.macs_max  # cost-matched: no limit
    feasible = [a for a in truth if macs_max is None or macs[a] <= macs_max]
    ranked = sorted(feasible, key=lambda a: -truth[a])
    reg = rows.registry()
    spos_trainer = rows.spos_name(reg)
    noise = load_testbed_file(f"{args.bed}_mnist5k")["meta"].get("seed_tau", float("nan"))
    print(f"{args.bed} / mnist5k, {args.epochs} epochs x 50 steps, "
          f"{'no MACs limit (every arch costs the same)' if macs_max is None else f'MACs <= {macs_max:.3g}'} "
          f"({len(feasible)} of {len(truth)} archs feasible; best feasible {ranked[0]} = {truth[ranked[0]]:.2f}%, "
          f"mean {statistics.mean(truth[a] for a in feasible):.2f}%); SPOS trainer: {spos_trainer}; "
          f"test-bed seed-to-seed tau (noise ceiling): {noise:.3f}")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        seed_rows = []
        for m in args.methods:
            r = run_method(m, seed, args.epochs, macs_max, reg, args.bed)
            p, g = align(r["scores"], truth)
            full = rank_metrics(p, g)
            r["tau"], r["tau_top"], r["p_at_top"] = full["tau"], full["tau_top"], full["p_at_top"]
            pf, gf = align({a: r["scores"][a] for a in feasible}, truth)
            r["tau_feasible"] = rank_metrics(pf, gf)["tau"]
            r["gt"] = truth[r["final"]]
            r["rank"] = ranked.index(r["final"]) + 1 if r["final"] in ranked else -1
            r["board_gt"] = statistics.mean(truth[a] for a in r["board"]) if r["board"] else float("nan")
            results[m].append(r)
            seed_rows.append(r)
            print(f"  seed {seed} {m:<10} final {r['final']:<24} GT {r['gt']:6.2f}% (rank {r['rank']:>2}/{len(ranked)})"
                  f"  tau {r['tau']:.3f}  tau(feasible) {r['tau_feasible']:.3f}  train {r['train_s']:.1f}s", flush=True)
        board = next((r["board"] for m, r in zip(args.methods, seed_rows) if m == "cream"), None) or \
            next((r["board"] for r in seed_rows if r["board"]), [])
        for m, r in zip(args.methods, seed_rows):  # the cream run's board paths, on every supernet
            r["board_sn"] = 100 * statistics.mean(r["scores"][a] for a in board) if board else float("nan")
            r["all_sn"] = 100 * statistics.mean(r["scores"][a] for a in feasible)
        print(f"  seed {seed} supernet accuracy of the cream board's {len(board)} paths: "
              + ", ".join(f"{m} {r['board_sn']:.2f}% (all feasible {r['all_sn']:.2f}%)" for m, r in zip(args.methods, seed_rows)),
              flush=True)

    def col(m: str, key: str, fmt: str) -> str:
        vals = [r[key] for r in results[m]]
        return f"{statistics.mean(vals):{fmt}} [" + " ".join(f"{v:{fmt}}" for v in vals) + "]"

    header = ("method", "final GT acc %", "final rank", f"tau ({len(truth)})", "tau (feasible)", "tau top 10%",
              "board paths' supernet acc %", "board mean GT %", "train s")
    table = [header]
    for m in args.methods:
        table.append((m, col(m, "gt", ".2f"), col(m, "rank", ".1f"), col(m, "tau", ".3f"), col(m, "tau_feasible", ".3f"),
                      col(m, "tau_top", ".2f"), col(m, "board_sn", ".2f"),
                      col(m, "board_gt", ".2f") if m.startswith("cream") else "-", col(m, "train_s", ".1f")))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print()
    for i, r in enumerate(table):
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if "spos" in results:
        base = statistics.mean(r["tau"] for r in results["spos"])
        for m in args.methods:
            if m != "spos":
                print(f"tau ratio {m} / spos: {statistics.mean(r['tau'] for r in results[m]) / base:.3f}")


if __name__ == "__main__":
    main()
