"""ABS on the cost-matched bed: how many of the true top 10 % survive each shrinking round, and
SPOS's final pick with and without shrinking.

    python benchmarks/abs_shrink.py                          # tiny_matched, seeds 0 1 2 (~25 min, 1 thread)
    python benchmarks/abs_shrink.py --seeds 0 --json runs/abs.json

Per seed, the ABS pipeline of ``nascore_abs.ranking`` (the ``benchmarks/ranking.py`` ABS row): a SPOS
supernet on the whole bed (E1 = 30 epochs), ``abs_shrink`` by ``angle`` (2 ops per round, 1 epoch of
SPOS between rounds) down to 16 architectures (two ops per layer), a fresh SPOS supernet (10 epochs) on
the 16, each survivor scored by ``accuracy`` (BN recalibrated, archval). ``--evaluator accuracy`` also
runs the paper's accuracy-based shrinking baseline the same way.

Reported, against the bed's standalone ground truth (``tiny_matched_mnist5k.json``):

* survivors of the true top 10 % (26 of 256) after each round, against **random shrinking** (the same
  number of ops dropped per round, never emptying a layer; mean over ``--random-draws`` draws);
* the pick (the survivor the final supernet scores best): its true accuracy and its rank of 256;
* SPOS without shrinking, every architecture scored by its supernet: at the final supernet's budget
  (10 epochs) and at ABS's **whole** training budget (E1 + the epochs between rounds + 10);
* the whole pipeline's ranking by the ``nascore rank`` figures (removed architectures rank last).

Everything is seeded; one thread.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def top_survivors(allowed: list[set[str]], top: set[tuple[str, ...]]) -> int:
    return sum(all(op in allowed[i] for i, op in enumerate(a)) for a in top)


def random_shrink(options: list[list[str]], schedule: list[int], top: set[tuple[str, ...]], rng: random.Random,
                  target: int) -> list[int]:
    """Survivors of ``top`` after each round when ``schedule[r]`` random ops are dropped in round r
    (never a layer's last op; stop at ``target`` architectures), as ABS's rule but blind."""
    allowed = [set(o) for o in options]
    out = []
    for n in schedule:
        for _ in range(n):
            size = 1
            for a in allowed:
                size *= len(a)
            if size <= target:
                break
            cands = [(i, o) for i, a in enumerate(allowed) if len(a) > 1 for o in sorted(a)]
            i, o = rng.choice(cands)
            allowed[i].discard(o)
        out.append(top_survivors(allowed, top))
    return out


def pick(scores: dict[str, float]) -> str:
    return max(sorted(scores), key=lambda k: scores[k])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bed", default="tiny_matched", choices=["tiny_matched", "tiny_chain"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--first-epochs", type=int, default=30, help="E1: SPOS epochs before the first round")
    ap.add_argument("--epochs", type=int, default=10, help="SPOS epochs of the fresh supernet on the shrunk space")
    ap.add_argument("--evaluator", nargs="+", default=["angle"], choices=["angle", "accuracy"],
                    help="shrinking signal(s): angle (ABS) and/or accuracy (the paper's baseline)")
    ap.add_argument("--random-draws", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from nascore import ranking
    from nascore_abs.ranking import PRUNED, TARGETS, kept_scores, run_abs_spos
    from nascore_abs.shrink import shrink_history
    from nascore_spos.ranking import spos_scores

    target = TARGETS[args.bed]
    ctx0 = ranking.bed_context(args.bed, 0)
    gt = ranking.load_ground_truth(args.bed, ctx0)
    truth = dict(zip(gt.keys, gt.truth))
    order = sorted(gt.keys, key=lambda k: -truth[k])
    k_top = max(2, round(0.1 * len(order)))
    top = {tuple(gt.space.parse(k).ops) for k in order[:k_top]}
    options = [list(o) for o in gt.space.allowed]
    print(f"{args.bed}: {len(order)} archs, true top 10 % = {k_top}; best {order[0]} {truth[order[0]]:.2f}%; "
          f"shrink to {target}, E1 {args.first_epochs}, fresh SPOS {args.epochs} epochs; seeds {args.seeds}", flush=True)

    def judged(scores: dict[str, float]) -> dict[str, Any]:
        p = pick(scores)
        m = ranking.rank_metrics([scores[k] for k in gt.keys], gt.truth, gt.macs)
        return {"pick": p, "pick_acc": truth[p], "pick_rank": order.index(p) + 1,
                **{k: m[k] for k in ("tau", "tau_top", "p_at_top")}}

    out: dict[str, Any] = {"bed": args.bed, "seeds": args.seeds, "k_top": k_top, "target": target, "rows": {}}
    for seed in args.seeds:
        for ev in args.evaluator:
            t0 = time.time()
            ctx = run_abs_spos(seed, first_epochs=args.first_epochs, epochs=args.epochs, space=args.bed, evaluator=ev)
            hist = shrink_history(ctx)
            allowed = [set(o) for o in options]
            surv, sizes = [], []
            for rec in hist:
                for lay, op in rec["dropped"]:
                    allowed[lay].discard(op)
                surv.append(top_survivors(allowed, top))
                sizes.append(rec["size"])
            scores = kept_scores(ctx)
            res = judged(scores)
            best_kept = max(truth[k] for k, v in scores.items() if v != PRUNED)
            schedule = [len(r["dropped"]) for r in hist]
            rng = random.Random(1000 + seed)
            draws = [random_shrink(options, schedule, top, rng, target) for _ in range(args.random_draws)]
            rand = [statistics.fmean(d[r] for d in draws) for r in range(len(schedule))]
            between = max(0, len(hist) - 1)
            row = {**res, "survivors": surv, "sizes": sizes, "random_survivors": rand, "best_kept": best_kept,
                   "dropped": [rec["dropped"] for rec in hist], "train_epochs": args.first_epochs + between + args.epochs,
                   "seconds": round(time.time() - t0, 1)}
            out["rows"].setdefault(f"abs ({ev})", []).append(row)
            print(f"seed {seed} ABS({ev}): top-{k_top} survivors per round {surv} (random {[round(v, 1) for v in rand]}), "
                  f"sizes {sizes}; best kept {best_kept:.2f}%; pick {res['pick']} {res['pick_acc']:.2f}% "
                  f"(rank {res['pick_rank']}); τ {res['tau']:+.2f}; {row['train_epochs']} epochs; {row['seconds']:.0f}s",
                  flush=True)
        budget = args.first_epochs + max(0, len(hist) - 1) + args.epochs
        for epochs in sorted({args.epochs, budget}):
            t0 = time.time()
            res = judged(spos_scores("uniform", seed, epochs=epochs, space=args.bed))
            res["seconds"] = round(time.time() - t0, 1)
            out["rows"].setdefault(f"spos, no shrinking, {epochs} epochs", []).append(res)
            print(f"seed {seed} SPOS {epochs} epochs, no shrinking: pick {res['pick']} {res['pick_acc']:.2f}% "
                  f"(rank {res['pick_rank']}); τ {res['tau']:+.2f}; {res['seconds']:.0f}s", flush=True)

    def ms(vals: list[float], fmt: str = ".2f") -> str:
        return (f"{statistics.fmean(vals):{fmt}} ± {statistics.stdev(vals):{fmt}}" if len(vals) > 1
                else f"{vals[0]:{fmt}}") + " [" + " ".join(f"{v:{fmt}}" for v in vals) + "]"

    print(f"\n{args.bed}, seeds {args.seeds}: mean ± sd [per seed]")
    for label, rows in out["rows"].items():
        line = (f"{label:<34} pick {ms([r['pick_acc'] for r in rows])}%  rank {ms([r['pick_rank'] for r in rows], '.0f')}"
                f"  τ {ms([r['tau'] for r in rows])}")
        if "survivors" in rows[0]:
            n = len(rows[0]["survivors"])
            per_round = " → ".join(f"{statistics.fmean(r['survivors'][i] for r in rows if len(r['survivors']) > i):.1f}"
                                   f" (random {statistics.fmean(r['random_survivors'][i] for r in rows if len(r['random_survivors']) > i):.1f})"
                                   for i in range(n))
            line += f"\n{'':<34} top-{k_top} survivors per round: {k_top} → {per_round}"
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
