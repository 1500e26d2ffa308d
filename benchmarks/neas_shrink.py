"""NEAS diversity shrinking vs potential-only shrinking (diversity weight 0), judged by a ground truth.

    python benchmarks/neas_shrink.py                               # tiny_matched, ensemble ground truth, seeds 0-4
    python benchmarks/neas_shrink.py --bed tiny_chain --drop 3     # the earlier tiny_chain check (standalone marginals)
    python benchmarks/neas_shrink.py --seeds 0 --epochs 5 --json runs/neas.json

Per seed: a K = 2 ``neas_ensemble`` space over the bed, the K-path supernet trained ``--epochs``
(``neas`` trainer), then one ``diversity_shrink`` call per diversity weight (``--weights``, 0 =
potential only) on that same supernet: the same seeded ensembles are drawn and scored once
(``ensemble_accuracy``, cached), only the weight of z(diversity) in the drop rule differs, so the
comparison is paired. ``--drop`` (layer, op) pairs are dropped (never a layer's last op).

On ``tiny_matched`` the members never share layers (``splits: [0]``): exactly the ensembles whose
accuracy the bed's ensemble ground truth holds (``tiny_matched_mnist5k_ensembles2.json.gz``: every
2-member ensemble of standalone models, logits averaged, 32,896 pairs). Each shrunk space is judged by
the true accuracy of the ensembles left in it — best, mean, and how many of the true top 1 % / 10 %
survive — against **random shrinking** (the same number of pairs dropped at random, never emptying a
layer, ``--random-draws`` draws), and the per-(layer, op) scores are ranked against the op's true
ensemble marginal (mean true accuracy of the ensembles with the op at that layer in a member) by
:func:`nascore.ranking.rank_metrics`.

On ``tiny_chain`` (no ensemble ground truth) the scores are ranked against the op's standalone
marginal and the dropped ops' standalone rank is printed, as before.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def load_ensemble_truth(bed: str) -> dict[frozenset[str] | str, float]:
    """``{frozenset({a, b}) or a (self-pair): true ensemble eval accuracy %}``."""
    res = importlib.resources.files("nascore").joinpath("resources", "testbed", f"{bed}_mnist5k_ensembles2.json.gz")
    with gzip.open(res.open("rb"), "rt", encoding="utf-8") as f:
        pairs = json.load(f)["pairs"]
    out: dict[Any, float] = {}
    for k, v in pairs.items():
        a, b = k.split("+")
        out[frozenset((a, b))] = float(v[0])
    return out


def ensembles_in(allowed: list[set[str]], archs: list[str]) -> list[str]:
    return [a for a in archs if all(op in allowed[i] for i, op in enumerate(a.split("-")))]


def judge(allowed: list[set[str]], archs: list[str], ens: dict[Any, float], top1: set[Any], top10: set[Any]) -> dict[str, float]:
    kept = ensembles_in(allowed, archs)
    pairs = [frozenset(p) for p in itertools.combinations_with_replacement(kept, 2)]
    accs = [ens[p] for p in pairs]
    return {"n_archs": len(kept), "n_ens": len(pairs), "best": max(accs), "mean": statistics.fmean(accs),
            "top1": sum(p in top1 for p in pairs), "top10": sum(p in top10 for p in pairs)}


def random_allowed(options: list[list[str]], drop: int, rng: random.Random) -> list[set[str]]:
    allowed = [set(o) for o in options]
    for _ in range(drop):
        cands = [(i, o) for i, a in enumerate(allowed) if len(a) > 1 for o in sorted(a)]
        if not cands:
            break
        i, o = rng.choice(cands)
        allowed[i].discard(o)
    return allowed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bed", default="tiny_matched", choices=["tiny_matched", "tiny_chain"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--samples-per-op", type=int, default=8)
    ap.add_argument("--drop", type=int, default=None, help="pairs dropped (default: 8 on tiny_matched, 3 on tiny_chain)")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0],
                    help="diversity weights compared (0 = potential only; 0.5 is the selector's default)")
    ap.add_argument("--random-draws", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    drop = args.drop if args.drop is not None else (8 if args.bed == "tiny_matched" else 3)

    import nascore_neas.plugin as neas_plugin
    from nascore.groundtruth.testbed import load_testbed
    from nascore.ranking import rank_metrics
    from nascore.testing import make_registry, run_config
    from nascore_neas.shrink import DiversityShrink, DiversityShrinkConfig

    truth = load_testbed(f"{args.bed}_mnist5k")
    archs = sorted(truth)
    reg = make_registry(neas_plugin)
    matched = args.bed == "tiny_matched"
    ens = load_ensemble_truth(args.bed) if matched else {}
    if matched:
        ranked = sorted(ens, key=lambda p: -ens[p])
        top1, top10 = set(ranked[: round(0.01 * len(ranked))]), set(ranked[: round(0.1 * len(ranked))])
        best = ranked[0]
        print(f"{args.bed}: {len(archs)} archs, {len(ens)} 2-member ensembles (true best {'+'.join(sorted(best))} "
              f"{ens[best]:.2f}%, mean {statistics.fmean(ens.values()):.2f}%); top 1 % = {len(top1)}, top 10 % = {len(top10)}; "
              f"K-path supernet {args.epochs} epochs; drop {drop} of 16 (layer, op) pairs; weights {args.weights}", flush=True)
    space_opts: dict[str, Any] = {"base": args.bed, "members": 2, **({"splits": [0]} if matched else {})}
    rows: dict[str, list[dict[str, Any]]] = {}
    t_all = time.time()
    options: list[list[str]] = []
    marginal: dict[tuple[int, str], float] = {}
    for seed in args.seeds:
        t = time.time()
        cfg = {"name": "neas-shrink", "seed": seed, "device": "cpu", "dataset": {"name": "mnist5k"},
               "data": {"batch_size": 64}, "space": {"name": "neas_ensemble", "options": space_opts},
               "stages": [{"kind": "train", "trainer": {"name": "neas", "options": {"epochs": args.epochs, "lr": 0.1}}}]}
        ctx = run_config(cfg, None, registry=reg)
        space = ctx.space
        base = space.base
        options = [list(space.layer_allowed(j)) for j in range(space.layers)]
        ctx.stage_key = "bench"
        evaluator = reg.get("evaluator", "ensemble_accuracy").build({"recal_batches": 4}, ctx)
        # per-(layer, op) marginals of the ground truth: what an op's score should rank like
        if marginal:
            pass
        elif matched:
            marginal = {(j, o): statistics.fmean(v for p, v in ens.items()
                                                 if any(m.split("-")[j] == o for m in p))
                        for j in range(space.layers) for o in options[j]}
        else:
            marginal = {(j, o): statistics.fmean(v for a, v in truth.items() if base.parse(a)[j] == o)
                        for j in range(space.layers) for o in options[j]}
        for w in args.weights:
            ctx.space = space
            shrink = DiversityShrink(DiversityShrinkConfig(samples_per_op=args.samples_per_op, drop=drop, diversity_weight=w))
            result = shrink.search(ctx, evaluator)
            scores = result.info["scores"]
            keys = sorted(scores)
            m_score = rank_metrics([scores[k]["score"] for k in keys], [marginal[k] for k in keys])
            m_pot = rank_metrics([scores[k]["potential"] for k in keys], [marginal[k] for k in keys])
            allowed = [set(o) for o in options]
            for j, o in result.info["dropped"]:
                allowed[j].discard(o)
            row: dict[str, Any] = {"seed": seed, "dropped": [f"layer{j}:{o}" for j, o in result.info["dropped"]],
                                   "tau_score": m_score["tau"], "tau_potential": m_pot["tau"],
                                   "evaluated": result.info["evaluated"]}
            if matched:
                row.update(judge(allowed, archs, ens, top1, top10))
            else:
                ranks = []
                for j, o in result.info["dropped"]:
                    layer = sorted((marginal[k], k[1]) for k in keys if k[0] == j)
                    ranks.append(f"layer{j}:{o}({[x[1] for x in layer].index(o) + 1}/{len(layer)})")
                row["dropped_rank"] = ranks
            rows.setdefault(f"diversity weight {w:g}", []).append(row)
            print(f"seed {seed} weight {w:g}: τ(score, true marginal) {row['tau_score']:+.2f} (potential alone "
                  f"{row['tau_potential']:+.2f}); dropped {' '.join(row.get('dropped_rank', row['dropped']))}"
                  + (f"; left {row['n_archs']} archs / {row['n_ens']} ensembles: best {row['best']:.2f}%, mean "
                     f"{row['mean']:.2f}%, true top-1 % kept {row['top1']}, top-10 % kept {row['top10']}" if matched else ""),
                  flush=True)
        print(f"  seed {seed}: {time.time() - t:.0f}s", flush=True)
    if matched:
        rng = random.Random(12345)
        draws = [judge(random_allowed(options, drop, rng), archs, ens, top1, top10) for _ in range(args.random_draws)]
        rows["random shrinking"] = [{k: statistics.fmean(d[k] for d in draws) for k in draws[0]}]

    def ms(vals: list[float], fmt: str = ".2f") -> str:
        return f"{statistics.fmean(vals):{fmt}}" + (f" ± {statistics.stdev(vals):{fmt}}" if len(vals) > 1 else "")

    print(f"\nNEAS shrinking on {args.bed}, K = 2, {args.epochs} epochs, {args.samples_per_op} ensembles per (layer, op), "
          f"drop {drop}, seeds {args.seeds} (mean ± sd over seeds), {time.time() - t_all:.0f}s")
    for label, rs in rows.items():
        if label == "random shrinking":
            r = rs[0]
            print(f"{label:<22} best {r['best']:.2f}%  mean {r['mean']:.2f}%  top-1 % kept {r['top1']:.1f}  "
                  f"top-10 % kept {r['top10']:.1f}  ({args.random_draws} draws)")
            continue
        line = f"{label:<22} τ(score, true marginal) {ms([r['tau_score'] for r in rs])}"
        if matched:
            line += (f"  best {ms([r['best'] for r in rs])}%  mean {ms([r['mean'] for r in rs])}%  top-1 % kept "
                     f"{ms([r['top1'] for r in rs], '.1f')}  top-10 % kept {ms([r['top10'] for r in rs], '.1f')}"
                     "  [best per seed: " + " ".join(f"{r['best']:.2f}" for r in rs) + "]")
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"bed": args.bed, "epochs": args.epochs, "drop": drop, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
