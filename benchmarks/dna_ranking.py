"""DNA's ranking quality on the tiny_chain test bed: per-block and whole-network Kendall tau vs ground truth.

For each seed: train a teacher in the run (tiny_chain's largest path, standalone) and the DNA
supernet (every block on the teacher's features), score all 9 candidates of each of the 2 blocks
with ``block_distill``, and compare with the test bed (every one of the 81 architectures trained
standalone on mnist5k, ``nascore/resources/testbed/tiny_chain_mnist5k.json``):

* per block: tau between −(block loss) and the block candidate's ground truth, the mean standalone
  accuracy of the 27 architectures that contain it (the marginal over the other block);
* whole network: tau between −(sum of block losses) and standalone accuracy over all 81, top-5 hit;
* the architecture the ``dna`` selector picks under the recipe's MACs limit, and its true rank
  among the feasible architectures;
* baseline in the same process: a single-path (SPOS-style) supernet trained on the same data for
  the same epochs, every architecture scored by accuracy after BN recalibration.

    python benchmarks/dna_ranking.py                 # 3 seeds, ~3-5 min on 1 CPU thread
    python benchmarks/dna_ranking.py --seeds 0 --no-baseline
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from nascore.arch import Architecture
from nascore.cost import ResourceConstraint
from nascore.ranking import rank_metrics
from nascore.groundtruth.testbed import kendall_tau, load_testbed, load_testbed_file
from nascore.testing import make_registry, run_config

MACS_MAX = 6.0e5  # the dna recipe's constraint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=6, help="DNA supernet epochs (and the baseline's)")
    ap.add_argument("--teacher-epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--no-baseline", action="store_true", help="skip the single-path accuracy baseline")
    return ap.parse_args(argv)


def block_truth(truth: dict[str, float], decisions: list[tuple[int, ...]]) -> list[dict[tuple, float]]:
    """Per block: candidate -> mean standalone accuracy of the architectures containing it."""
    out = []
    for ds in decisions:
        groups: dict[tuple, list[float]] = {}
        for a, acc in truth.items():
            ops = a.split("-")
            groups.setdefault(tuple(ops[d] for d in ds), []).append(acc)
        out.append({k: statistics.mean(v) for k, v in groups.items()})
    return out


def dna_seed(seed: int, args: argparse.Namespace, reg: Any, truth: dict[str, float]) -> dict[str, Any]:
    from nascore_dna.evaluator import BlockDistillConfig, BlockDistillEvaluator
    from nascore_dna.selector import BlockItem, best_combinations

    t0 = time.time()
    cfg = {"name": "bench", "seed": seed, "device": "cpu", "space": {"name": "tiny_chain"},
           "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64},
           "stages": [{"kind": "train", "trainer": {"name": "dna", "options": {
               "epochs": args.epochs, "lr": args.lr, "teacher_epochs": args.teacher_epochs}}}]}
    ctx = run_config(cfg, None, registry=reg)
    train_s = time.time() - t0
    row: dict[str, Any] = {"seed": seed, "teacher_acc": ctx.state["dna"]["teacher_acc"], "train_s": train_s}
    for label, opts in (("l1norm/recal", {}), ("l1norm/batch", {"bn_mode": "batch"}), ("mse/recal", {"loss": "mse"})):
        ev = BlockDistillEvaluator(BlockDistillConfig(**opts), ctx)
        t1 = time.time()
        table = ev.block_table(ctx)
        blocks = ev.prepare(ctx)[0]
        gt = block_truth(truth, blocks.decisions)
        taus = []
        for b, rowb in enumerate(table):
            keys = sorted(rowb)
            taus.append(kendall_tau([-rowb[k] for k in keys], [gt[b][k] for k in keys]))
        archs = sorted(truth)
        scores = [-sum(table[b][tuple(a.split("-")[d] for d in ds)] for b, ds in enumerate(blocks.decisions))
                  for a in archs]
        accs = [truth[a] for a in archs]
        m = rank_metrics(scores, accs)  # the `nascore rank` protocol's figures
        res = {"tau_blocks": taus, "tau_all": m["tau"], "top5": m["p_at_5"], "tau_top": m["tau_top"],
               "score_s": time.time() - t1}
        if label == "l1norm/recal":
            cost = ctx.cost
            items = [[BlockItem(loss, sum(cost.macs_table[d][o] for d, o in zip(blocks.decisions[b], k)),
                                sum(cost.params_table[d][o] for d, o in zip(blocks.decisions[b], k)), k)
                      for k, loss in table[b].items()] for b in range(len(table))]
            (_, idx), = best_combinations(items, ResourceConstraint(macs_max=MACS_MAX), fixed_macs=cost.fixed_macs,
                                          fixed_params=cost.fixed_params)
            ops: list[str] = [""] * 4
            for b, i in enumerate(idx):
                for d, o in zip(blocks.decisions[b], items[b][i].key):
                    ops[d] = o
            chosen = "-".join(ops)
            feasible = sorted((a for a in truth if cost.macs(Architecture(a.split("-"))) <= MACS_MAX),
                              key=lambda a: -truth[a])
            res.update(chosen=chosen, chosen_acc=truth[chosen], chosen_rank=feasible.index(chosen) + 1,
                       n_feasible=len(feasible), best_feasible=feasible[0], best_acc=truth[feasible[0]])
        row[label] = res
    return row


def baseline_seed(seed: int, args: argparse.Namespace, reg: Any, truth: dict[str, float]) -> dict[str, Any]:
    """Single-path supernet + accuracy-after-BN-recalibration over all 81 architectures."""
    from nascore.builtin.accuracy import AccuracyConfig, AccuracyEvaluator

    t0 = time.time()
    cfg = {"name": "bench", "seed": seed, "device": "cpu", "space": {"name": "tiny_chain"},
           "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64},
           "stages": [{"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": args.epochs, "lr": 0.05}}}]}
    ctx = run_config(cfg, None, registry=reg)
    ev = AccuracyEvaluator(AccuracyConfig(recal_batches=10), ctx)
    archs = sorted(truth)
    res = ev.score([ctx.space.parse(a) for a in archs], ctx)
    scores = [r["acc"] for r in res]
    accs = [truth[a] for a in archs]
    m = rank_metrics(scores, accs)
    return {"tau_all": m["tau"], "top5": m["p_at_5"], "tau_top": m["tau_top"], "s": time.time() - t0}


def fmt(v: float) -> str:
    return f"{v:+.3f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    import nascore_dna.plugin as dna_plugin

    reg = make_registry(dna_plugin)
    truth = load_testbed("tiny_chain_mnist5k")
    meta = load_testbed_file("tiny_chain_mnist5k")["meta"]
    rows, base = [], []
    for seed in args.seeds:
        rows.append(dna_seed(seed, args, reg, truth))
        if not args.no_baseline:
            base.append(baseline_seed(seed, args, reg, truth))
    print(f"\nDNA ranking on tiny_chain / mnist5k (ground truth: {meta['num_archs']} archs trained standalone, "
          f"{meta['epochs']} epochs x {len(meta['seeds'])} seeds; seed-to-seed tau = {meta['seed_tau']:.3f})")
    print(f"DNA: teacher trained {args.teacher_epochs} epochs in the run, supernet {args.epochs} epochs; "
          f"per-block tau over 9 candidates vs their marginal accuracy\n")
    hdr = f"{'seed':>4}  {'teacher acc':>11}  {'ranking loss / BN':<14} {'tau block0':>10} {'tau block1':>10} {'tau all 81':>10} {'top-5 hit':>9}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        for label in ("l1norm/recal", "l1norm/batch", "mse/recal"):
            v = r[label]
            print(f"{r['seed']:>4}  {100 * r['teacher_acc']:>10.2f}%  {label:<14} {fmt(v['tau_blocks'][0]):>10} "
                  f"{fmt(v['tau_blocks'][1]):>10} {fmt(v['tau_all']):>10} {v['top5']:>9.2f}")
    print()
    for label in ("l1norm/recal", "l1norm/batch", "mse/recal"):
        vs = [r[label] for r in rows]
        print(f"mean  {label:<14} tau block0 {fmt(statistics.mean(v['tau_blocks'][0] for v in vs))}  "
              f"block1 {fmt(statistics.mean(v['tau_blocks'][1] for v in vs))}  "
              f"all {fmt(statistics.mean(v['tau_all'] for v in vs))}  top-5 {statistics.mean(v['top5'] for v in vs):.2f}")
    if base:
        mean_base = statistics.mean(b["tau_all"] for b in base)
        mean_dna = statistics.mean(r["l1norm/recal"]["tau_all"] for r in rows)
        print(f"mean  single-path accuracy (baseline, same epochs)  all {fmt(mean_base)}  "
              f"top-5 {statistics.mean(b['top5'] for b in base):.2f}   (per seed: "
              + ", ".join(fmt(b["tau_all"]) for b in base) + ")")
        if mean_base > 0:
            print(f"ratio DNA tau / baseline tau (all 81): {mean_dna / mean_base:.2f}")
    print(f"\nchosen by the dna selector under MACs <= {MACS_MAX:.0f} (l1norm/recal):")
    for r in rows:
        v = r["l1norm/recal"]
        print(f"  seed {r['seed']}: {v['chosen']}  true acc {v['chosen_acc']:.2f}%  rank {v['chosen_rank']}/{v['n_feasible']} "
              f"feasible (best {v['best_feasible']} {v['best_acc']:.2f}%)")
    tt = statistics.mean(r["train_s"] for r in rows)
    print(f"\nwall time per seed: DNA teacher+supernet {tt:.1f}s, block scoring "
          f"{statistics.mean(r['l1norm/recal']['score_s'] for r in rows):.1f}s"
          + (f"; baseline {statistics.mean(b['s'] for b in base):.1f}s" if base else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
