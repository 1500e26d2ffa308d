"""SETN on the cost-matched bed: are the top-K architectures by α better than K random ones, or
than the top-K of a zero-cost proxy?

For each seed: train ``setn`` on ``tiny_matched`` (256 architectures of equal MACs and params;
per step a uniform single path on the train split, then α on the val split; 10 epochs, the SPOS
rows' budget, α Adam lr 3e-3 as the recipe), then build three candidate sets of K architectures:

* ``alpha``  — the top K by log-probability under softmax(α) (SETN's evaluator; the code's top-K);
* ``random`` — K drawn uniformly (without replacement; 2,000 draws for the expectation);
* ``<proxy>`` — the top K of a zero-cost proxy (``fisher``, ``snip``, ``synflow``; init seed = seed).

and, for each set, the true standalone accuracy (the bed's ground truth, seed mean): the mean of
the K, the best of the K, and the true accuracy of SETN's pick among the K (best template-network
accuracy on one val batch per candidate, the ``setn`` selector's rule). It also gives α's
log-probability ranking of all 256 by the ``nascore rank`` figures (Kendall τ, τ top 10 %, P@10 %).

    python benchmarks/setn_topk.py                       # seeds 0 1 2, K = 10 and 26
    python benchmarks/setn_topk.py --seeds 0 --epochs 2 --k 10
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

PROXIES = ("fisher", "snip", "synflow")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--arch-lr", type=float, default=3e-3)
    ap.add_argument("--k", type=int, nargs="+", default=[10, 26])
    ap.add_argument("--random-draws", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def setn_context(seed: int, epochs: int, arch_lr: float) -> Any:
    import nascore_setn.plugin as plugin
    from nascore.pipeline.run import open_run, run_pipeline
    from nascore.registry import build_registry

    cfg = {"name": f"setn-bed-{seed}", "seed": seed, "device": "cpu", "space": {"name": "tiny_matched"},
           "dataset": {"name": "mnist5k"},
           "data": {"batch_size": 64, "eval_batch_size": 256, "val_fraction": 0.3},
           "stages": [{"kind": "train", "trainer": {"name": "setn", "options": {
               "epochs": epochs, "lr": 0.025, "weight_decay": 5e-4, "arch_lr": arch_lr}}}]}
    reg = build_registry(load_entry_points=False, extra=[(plugin, "setn")])
    ctx = open_run(cfg, run_dir=None, registry=reg, quiet=True)
    run_pipeline(ctx)
    ctx.stage_key = "select"
    return ctx


def template_pick(ctx: Any, archs: list[Any]) -> Any:
    """SETN's selection rule on a given candidate list: best template accuracy, one val batch each."""
    from nascore.methods.mixed import path_accuracy

    bs = ctx.data.eval_batch_size
    n_batches = max(ctx.data.num_batches("val", batch_size=bs, drop_last=False), 1)
    best, best_acc = None, -1.0
    for j, a in enumerate(archs):
        epoch, start = divmod(j, n_batches)
        acc, _ = path_accuracy(ctx, a, split="val", batches=1, bn="batch", shuffle=True, epoch=epoch,
                               start=start, batch_size=bs)
        if acc > best_acc:
            best, best_acc = a, acc
    return best


def summarise(keys: list[str], truth: dict[str, float], pick: str | None) -> dict[str, float]:
    accs = [truth[k] for k in keys]
    out = {"mean": statistics.mean(accs), "best": max(accs)}
    if pick is not None:
        out["pick"] = truth[pick]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    from nascore import ranking
    from nascore.methods.mixed import ArchAlpha
    from nascore.registry import get_registry

    reg = get_registry()
    ctx_for_seed = ranking.context_cache("tiny_matched", reg)
    gt = ranking.load_ground_truth("tiny_matched", ctx_for_seed(args.seeds[0]))
    truth = dict(zip(gt.keys, gt.truth))
    all_mean = statistics.mean(gt.truth)
    print(f"tiny_matched: {len(gt.keys)} archs, true accuracy mean {all_mean:.2f}%, best {max(gt.truth):.2f}%", flush=True)
    rows: dict[str, list[dict[str, Any]]] = {}
    taus: list[dict[str, float]] = []
    for seed in args.seeds:
        t0 = time.time()
        ctx = setn_context(seed, args.epochs, args.arch_lr)
        train_s = time.time() - t0
        alpha = ArchAlpha.from_context(ctx, "benchmark")
        table = alpha.log_probs()
        space = ctx.space
        archs = {space.format(a): a for a in space.enumerate()}
        logp = [alpha.log_prob(archs[k], table) for k in gt.keys]
        m = ranking.rank_metrics(logp, gt.truth, gt.macs)
        taus.append(m)
        argmax = space.format(alpha.argmax_arch(space))
        print(f"seed {seed}: setn {train_s:.0f}s; alpha tau {m['tau']:+.3f} tau_top {m['tau_top']:+.3f} "
              f"P@10% {m['p_at_top']:.2f}; argmax {argmax} ({truth[argmax]:.2f}%)", flush=True)
        proxy_scores = {p: ranking._score_with(ctx_for_seed(seed), p, {}, gt.archs) for p in PROXIES}
        rng = random.Random(seed)
        for k in args.k:
            order = sorted(range(len(gt.keys)), key=lambda i: (-logp[i], i))
            sets: dict[str, list[str]] = {"alpha": [gt.keys[i] for i in order[:k]]}
            for p, sc in proxy_scores.items():
                o = sorted(range(len(gt.keys)), key=lambda i: (-sc[i], i))
                sets[p] = [gt.keys[i] for i in o[:k]]
            for name, keys in sets.items():
                pick = space.format(template_pick(ctx, [archs[x] for x in keys]))
                rows.setdefault(f"{name} K={k}", []).append(summarise(keys, truth, pick))
            # random K: the expectation over many draws (mean and best), and SETN's pick on one draw
            draws = [rng.sample(gt.keys, k) for _ in range(args.random_draws)]
            one = draws[0]
            pick = space.format(template_pick(ctx, [archs[x] for x in one]))
            rows.setdefault(f"random K={k}", []).append({
                "mean": statistics.mean(statistics.mean(truth[x] for x in d) for d in draws),
                "best": statistics.mean(max(truth[x] for x in d) for d in draws),
                "pick": truth[pick]})
            line = "  ".join(f"{n} {rows[f'{n} K={k}'][-1]['mean']:.2f}/{rows[f'{n} K={k}'][-1]['best']:.2f}/"
                             f"{rows[f'{n} K={k}'][-1]['pick']:.2f}" for n in ["alpha", "random", *PROXIES])
            print(f"  K={k} (mean/best/pick): {line}", flush=True)

    def ms(vals: list[float]) -> str:
        return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"

    print(f"\nSETN on tiny_matched, {len(args.seeds)} seeds, {args.epochs} epochs; true standalone accuracy (%) "
          f"of the K candidates (all 256: mean {all_mean:.2f}, best {max(gt.truth):.2f})\n")
    print(f"{'candidates':<18} {'mean of K':>14} {'best of K':>14} {'SETN pick of K':>15}")
    for name, rs in rows.items():
        print(f"{name:<18} {ms([r['mean'] for r in rs]):>14} {ms([r['best'] for r in rs]):>14} {ms([r['pick'] for r in rs]):>15}")
    print(f"\nalpha log-prob over all 256: tau {ms([t['tau'] for t in taus])}, tau top 10% "
          f"{ms([t['tau_top'] for t in taus])}, P@10% {ms([t['p_at_top'] for t in taus])}  (noise ceiling tau 0.45)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "alpha_rank": taus, "args": vars(args) | {"json": str(args.json)}},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
