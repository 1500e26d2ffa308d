"""NEAS on the tiny_chain test bed: does diversity shrinking drop the ops that are worst standalone?

For each seed: build K=2 ensembles over ``tiny_chain`` on mnist5k, train the K-path supernet
(``neas`` trainer), score every (layer, op) with ``diversity_shrink`` (ensemble potential +
member diversity), and compare with the test bed (``tiny_chain_mnist5k``: every tiny_chain
architecture trained standalone): Kendall tau between each pair's *potential* / *score* and its
standalone marginal (mean standalone accuracy of the architectures running that op at that layer),
the standalone marginal rank of the dropped ops, and — over the ensembles scored — the mean
ensemble accuracy against the members' mean and best accuracy (the ensemble premise inside the
supernet) with their top-1 disagreement.

    python benchmarks/neas_shrink.py                 # ~2-3 min on 1 CPU thread
    python benchmarks/neas_shrink.py --seeds 0 --epochs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--samples-per-op", type=int, default=8)
    ap.add_argument("--drop", type=int, default=3)
    ap.add_argument("--diversity-weight", type=float, default=0.5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import nascore_neas.plugin as neas_plugin
    from nascore.search import evaluate
    from nascore.groundtruth.testbed import kendall_tau, load_testbed
    from nascore.testing import make_registry, run_config

    truth = load_testbed("tiny_chain_mnist5k")
    reg = make_registry(neas_plugin)
    rows = []
    t0 = time.time()
    for seed in args.seeds:
        t = time.time()
        cfg = {"name": "neas-shrink", "seed": seed, "device": "cpu", "dataset": {"name": "mnist5k"},
               "data": {"batch_size": 64},
               "space": {"name": "neas_ensemble", "options": {"base": "tiny_chain", "members": 2}},
               "stages": [{"kind": "train", "trainer": {"name": "neas", "options": {"epochs": args.epochs, "lr": 0.1}}}]}
        ctx = run_config(cfg, None, registry=reg)
        space = ctx.space
        ctx.stage_key = "bench"
        shrink = reg.get("selector", "diversity_shrink").build(
            {"samples_per_op": args.samples_per_op, "drop": args.drop, "diversity_weight": args.diversity_weight}, ctx)
        evaluator = reg.get("evaluator", "ensemble_accuracy").build({"recal_batches": 4}, ctx)
        result = shrink.search(ctx, evaluator)
        scores: dict[tuple[int, str], dict[str, float]] = result.info["scores"]
        base = space.base
        marginal = {}
        for (j, o) in scores:
            accs = [v for a, v in truth.items() if base.parse(a)[j] == o]
            marginal[(j, o)] = statistics.mean(accs)
        keys = list(scores)
        tau_pot = kendall_tau([scores[k]["potential"] for k in keys], [marginal[k] for k in keys])
        tau_score = kendall_tau([scores[k]["score"] for k in keys], [marginal[k] for k in keys])
        # rank of each dropped op within its layer by standalone marginal (1 = worst)
        ranks = []
        for j, o in result.info["dropped"]:
            layer = sorted((marginal[k], k[1]) for k in keys if k[0] == j)
            ranks.append(f"layer{j}:{o}({[x[1] for x in layer].index(o) + 1}/{len(layer)})")
        cands = evaluate(ctx, evaluator, list(evaluator.cache), origin="bench")
        ens = statistics.mean(c.metrics["acc"] for c in cands)
        mem = statistics.mean(c.metrics["member_acc"] for c in cands)
        best = statistics.mean(c.metrics["best_member_acc"] for c in cands)
        dis = statistics.mean(c.metrics["disagreement"] for c in cands)
        rows.append((seed, tau_pot, tau_score, ranks, ens, mem, best, dis, len(cands), time.time() - t))
        print(f"seed {seed}: tau(potential, standalone marginal) {tau_pot:+.2f}, tau(score, marginal) {tau_score:+.2f}; "
              f"dropped {' '.join(ranks)}; {len(cands)} ensembles: ensemble {100 * ens:.1f}% vs members "
              f"{100 * mem:.1f}% (best {100 * best:.1f}%), disagreement {100 * dis:.1f}% ({time.time() - t:.0f}s)",
              flush=True)

    print(f"\nNEAS diversity shrinking on tiny_chain/mnist5k, K=2, {args.epochs} epochs, "
          f"{args.samples_per_op} ensembles per (layer, op), {time.time() - t0:.0f}s total")
    head = ("seed", "tau pot", "tau score", "ens acc", "member acc", "best member", "disagree", "dropped (rank by standalone, 1=worst)")
    print("  ".join(head))
    for seed, tp, ts, ranks, ens, mem, best, dis, n, _ in rows:
        print(f"{seed:>4d}  {tp:>+7.2f}  {ts:>+9.2f}  {100 * ens:>6.1f}%  {100 * mem:>9.1f}%  {100 * best:>10.1f}%  "
              f"{100 * dis:>7.1f}%  {' '.join(ranks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
