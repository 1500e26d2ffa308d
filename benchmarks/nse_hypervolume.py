"""NSE: true hypervolume of each round's Pareto front, supernet evaluator vs a ground-truth oracle.

Runs the NSE loop (``nse`` trainer + ``nse`` selector, re-initialised supernet every round) on the
2-layer test pool space of ``plugins/nse/tests`` on mnist5k, for several seeds, twice: once scoring
candidates with the supernet (``accuracy``: top-1 after BN recalibration — the real method) and
once with the standalone accuracies of ``plugins/nse/tests/data/nse_pool_mnist5k.json`` (an oracle:
what the loop does when evaluation is exact). For every round it prints the hypervolume of the
front measured with the standalone accuracies, and, for the supernet runs, the Kendall tau between
supernet and standalone accuracy over the architectures evaluated that round (``nascore.ranking``'s
``rank_metrics``, the ``nascore rank`` figures). The supernet runs are repeated for each α estimator
of the ``nse`` trainer (``pair``: the official code's selected/unselected subsets drawn from the joint
combination probability; ``gate``: a straight-through gate per op), on the same seeds.

    python benchmarks/nse_hypervolume.py                   # both estimators, 5 seeds; ~5-10 min on 1 CPU thread
    python benchmarks/nse_hypervolume.py --seeds 0 1 --keep 1 --estimators pair
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "plugins" / "nse" / "tests" / "data" / "nse_pool_mnist5k.json"
SPACE = {"layers": 2, "width": 8, "ops": ["avg3", "conv1", "conv3", "conv5"], "active": 2, "max_branches": 2}


def make_plugin(truth: dict[str, Any], log: list[tuple[int, str, float]]) -> types.ModuleType:
    from nascore import hookimpl
    from nascore.builtin.accuracy import AccuracyConfig, AccuracyEvaluator

    class Oracle:
        metric, higher_is_better = "acc", True

        def __init__(self, cfg: Any = None, ctx: Any = None) -> None:
            pass

        def score(self, archs: Any, ctx: Any) -> list[dict[str, float]]:
            return [{"acc": truth[ctx.space.format(a)]["acc"] / 100} for a in archs]

    class Recording(AccuracyEvaluator):
        def score(self, archs: Any, ctx: Any) -> list[dict[str, float]]:
            out = super().score(archs, ctx)
            r = int(ctx.state["nse"]["round"])
            log.extend((r, ctx.space.format(a), m["acc"]) for a, m in zip(archs, out))
            return out

    mod = types.ModuleType("nse_bench_evaluators")

    @hookimpl
    def register_evaluators(register: Any) -> None:
        register("bench_oracle", Oracle, summary="standalone accuracy")
        register("bench_accuracy", Recording, config=AccuracyConfig, summary="accuracy, recorded")

    mod.register_evaluators = register_evaluators  # type: ignore[attr-defined]
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50, help="weight steps per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--keep", type=int, default=None, help="selector keep (default: K)")
    ap.add_argument("--estimators", nargs="+", default=["pair", "gate"], choices=["pair", "gate"],
                    help="alpha estimators of the nse trainer to run the supernet evaluator with")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import nascore_nse.plugin as nse_plugin
    from nascore.ranking import rank_metrics
    from nascore.testing import make_registry, run_config
    from nascore_nse.pareto import hypervolume, pareto_front

    truth = json.loads(TRUTH.read_text())["archs"]
    ref = max(v["macs"] for v in truth.values())
    log: list[tuple[int, str, float]] = []
    reg = make_registry(nse_plugin, make_plugin(truth, log))

    def config(seed: int, evaluator: str, estimator: str = "pair") -> dict[str, Any]:
        stages: list[dict[str, Any]] = []
        if evaluator == "bench_accuracy":
            stages.append({"kind": "train", "trainer": {"name": "nse", "options": {
                "epochs": args.epochs, "steps_per_epoch": args.steps, "lr": 0.1, "arch_every": 2, "alpha_lr": 0.05,
                "alpha_estimator": estimator}}})
        stages.append({"kind": "search", "keep": 100, "selector": {"name": "nse", "options": {
            "samples": args.samples, "keep": args.keep, "plot": False}},
            "evaluator": {"name": evaluator, "options": {"recal_batches": 4} if evaluator == "bench_accuracy" else {}}})
        return {"name": "nse-hv", "seed": seed, "device": "cpu", "space": {"name": "nse_pool", "options": SPACE},
                "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64},
                "stages": [{"kind": "loop", "rounds": args.rounds, "stages": stages}]}

    def hv(front: list[dict[str, Any]]) -> float:
        pts = [(truth[r["arch"]]["macs"], truth[r["arch"]]["acc"] / 100) for r in front]
        return hypervolume(pareto_front(pts, macs=lambda p: p[0], acc=lambda p: p[1]), ref)

    rows = []
    t0 = time.time()
    runs = [("bench_accuracy", f"sn-{e}", e) for e in args.estimators] + [("bench_oracle", "oracle", "pair")]
    for seed in args.seeds:
        for evaluator, label, estimator in runs:
            log.clear()
            t = time.time()
            ctx = run_config(config(seed, evaluator, estimator), None, registry=reg)
            hist = ctx.state["nse"]["history"]
            hvs = [hv(h["front"]) for h in hist]
            taus = []
            if evaluator == "bench_accuracy":
                for h in hist:
                    pts = [(s, a) for r, s, a in log if r == h["round"]]
                    taus.append(rank_metrics([a for _, a in pts], [truth[s]["acc"] for s, _ in pts])["tau"])
            rows.append((seed, label, hvs, taus, time.time() - t))
            print(f"seed {seed} {label:8s} HV {' '.join(f'{v:.4f}' for v in hvs):34s} "
                  f"tau {' '.join(f'{v:+.2f}' for v in taus):24s} ({time.time() - t:.0f}s)", flush=True)

    print(f"\nNSE true hypervolume per round ({len(args.seeds)} seeds, keep={args.keep or 'K'}, "
          f"{args.epochs}x{args.steps} weight steps/round), {time.time() - t0:.0f}s total; sn-<estimator> = supernet "
          "evaluator with that alpha estimator")
    print(f"{'evaluator':10s} {'monotone seeds':>15s} {'last > first':>13s} {'mean HV per round':>34s} "
          f"{'HV last (mean ± sd)':>20s} {'mean tau':>9s}")
    for label in [r[1] for r in runs]:
        rs = [r for r in rows if r[1] == label]
        mono = sum(all(b >= a - 1e-12 for a, b in zip(r[2], r[2][1:])) for r in rs)
        up = sum(r[2][-1] > r[2][0] for r in rs)
        n_rounds = min(len(r[2]) for r in rs)
        per_round = " ".join(f"{statistics.mean(r[2][i] for r in rs):.4f}" for i in range(n_rounds))
        lasts = [r[2][-1] for r in rs]
        last = f"{statistics.mean(lasts):.4f} ± {statistics.stdev(lasts):.4f}" if len(lasts) > 1 else f"{lasts[0]:.4f}"
        taus = [t for r in rs for t in r[3]]
        tau = f"{sum(taus) / len(taus):+.2f}" if taus else "-"
        print(f"{label:10s} {mono:>9d}/{len(rs):<5d} {up:>7d}/{len(rs):<5d} {per_round:>34s} {last:>20s} {tau:>9s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
