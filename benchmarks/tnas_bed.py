"""TNAS with trained sub-supernets on the cost-matched bed vs SPOS + evolution at equal training budget.

For each seed, on ``tiny_matched`` (256 architectures, equal MACs and params, ground truth = their
standalone mnist5k accuracy):

* **TNAS** (the paper's / code's search: sub-spaces scored by *training*, not by a table):
  ``tnas_warmup`` (softmax(α)-mixed supernet, weights and α trained jointly) → ``tnas`` selector,
  ``grouping: alpha`` ([top-2 by α, rest] per layer: 2 levels of 16 children, all 4 layers expanded
  together), each child fine-tuned ``--decision-steps`` from its parent, scored by archval accuracy
  (batch BN statistics), top-2 re-examined up to 2 rounds, the winner stabilised between levels;
* **SPOS + evolution**: a uniform single-path supernet trained for **the same number of optimizer
  steps** (every batch TNAS trained on: warm-up + every child, re-examination and stabilisation),
  then the core ``evolution`` selector (population 16, 6 generations, top-k 5, 8 mutations, 8
  crossovers: ≤ 96 of the 256 candidates) on the ``accuracy`` evaluator (BN recalibrated); also the
  supernet's best of all 256 (what an exhaustive search of the same supernet would return);
* **random**: the expected true accuracy of one random architecture (the bed's mean).

Reported: the true (standalone) accuracy of each method's pick and its rank among the 256, mean ± sd
over seeds; the training steps and CPU seconds each spent. Mixed-op steps cost more than
single-path steps (a warm-up step runs all 4 ops of every layer, a first-level child 2): equal
*steps* favour TNAS in compute.

    python benchmarks/tnas_bed.py                          # seeds 0 1 2
    python benchmarks/tnas_bed.py --seeds 0 --warmup-epochs 1 --decision-steps 4
    python benchmarks/tnas_bed.py --seeds 0 1 2 3 4 --warmup-epochs 5 --decision-steps 24 --stabilize-steps 48 --grouping fixed
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--warmup-epochs", type=int, default=2)
    ap.add_argument("--decision-steps", type=int, default=12)
    ap.add_argument("--stabilize-steps", type=int, default=24)
    ap.add_argument("--eval-batches", type=int, default=2)
    ap.add_argument("--grouping", default="alpha", choices=["alpha", "fixed"],
                    help="operation tree: from the warm-up's α (code default) or the fixed (conv | dil) | (pool | lin)")
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def _context(cfg: dict[str, Any], plugins: list[tuple[Any, str]]) -> Any:
    from nascore.pipeline.run import open_run, run_pipeline
    from nascore.registry import build_registry

    reg = build_registry(load_entry_points=False, extra=plugins)
    ctx = open_run(cfg, run_dir=None, registry=reg, quiet=True)
    run_pipeline(ctx)
    return ctx


def _base(seed: int, name: str, trainer: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "seed": seed, "device": "cpu", "space": {"name": "tiny_matched"},
            "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64, "eval_batch_size": 256},
            "stages": [{"kind": "train", "trainer": trainer}]}


def run_tnas(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import nascore_tnas.plugin as plugin
    import nascore_tnas.selector as sel

    t0 = time.process_time()
    ctx = _context(_base(seed, f"tnas-bed-{seed}", {"name": "tnas_warmup", "options": {
        "epochs": args.warmup_epochs, "lr": 0.025, "weight_decay": 5e-4}}), [(plugin, "tnas")])
    warm_steps = args.warmup_epochs * ctx.data.num_batches("train")
    counted = {"steps": 0}
    real = sel.train_steps

    def counting(ctx_: Any, arch: Any, steps: int, **kw: Any) -> Any:
        counted["steps"] += steps
        return real(ctx_, arch, steps, **kw)

    sel.train_steps = counting
    try:
        ctx.stage_key = "search"
        tree = [["conv", "dil"], ["pool", "lin"]] if args.grouping == "fixed" else None
        cfg = sel.TNASConfig(grouping=args.grouping, tree=tree, d_a=4, top_k=2, repeats=2, child_score="train",
                             decision_steps=args.decision_steps, stabilize_steps=args.stabilize_steps,
                             eval_batches=args.eval_batches, metric="val_acc")
        res = sel.TNASSelector(cfg).search(ctx, None)
    finally:
        sel.train_steps = real
    arch = ctx.space.format(res.candidates[0].arch)
    return {"arch": arch, "steps": warm_steps + counted["steps"], "warmup_steps": warm_steps,
            "cpu_s": time.process_time() - t0, "info": res.info}


def run_evolution(seed: int, steps: int) -> dict[str, Any]:
    import nascore_spos.plugin as plugin
    from nascore.builtin.accuracy import AccuracyConfig, AccuracyEvaluator
    from nascore.builtin.evolution import EvolutionConfig, EvolutionSearch

    t0 = time.process_time()
    probe = _base(seed, "probe", {"name": "spos", "options": {"epochs": 1}})
    from nascore.pipeline.run import open_run

    spe = open_run(probe, run_dir=None, quiet=True).data.num_batches("train")
    epochs = max(1, math.ceil(steps / spe))
    per_epoch = math.ceil(steps / epochs)
    ctx = _context(_base(seed, f"spos-bed-{seed}", {"name": "spos", "options": {
        "sampler": "uniform", "epochs": epochs, "steps_per_epoch": per_epoch, "lr": 0.1}}), [(plugin, "spos")])
    train_cpu = time.process_time() - t0
    ctx.stage_key = "search"
    ev = AccuracyEvaluator(AccuracyConfig(recal_batches=20), ctx)
    evo = EvolutionSearch(EvolutionConfig(population=16, generations=6, top_k=5, mutations=8, crossovers=8), ctx)
    res = evo.search(ctx, ev)
    evo_arch = ctx.space.format(res.candidates[0].arch)
    allarchs = list(ctx.space.enumerate())
    scores = [m["acc"] for m in ev.score(allarchs, ctx)]
    best_all = ctx.space.format(allarchs[max(range(len(scores)), key=lambda i: scores[i])])
    return {"arch": evo_arch, "evaluated": len(res.candidates), "best_all": best_all,
            "steps": epochs * per_epoch, "cpu_s": train_cpu}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    from nascore.groundtruth.testbed import load_testbed

    truth = load_testbed("tiny_matched_mnist5k")
    order = sorted(truth, key=lambda k: -truth[k])
    rank = {k: i + 1 for i, k in enumerate(order)}
    mean_all = statistics.mean(truth.values())
    out: list[dict[str, Any]] = []
    for seed in args.seeds:
        t = run_tnas(seed, args)
        e = run_evolution(seed, t["steps"])
        row = {"seed": seed, "tnas": t, "evolution": e}
        out.append(row)
        print(f"seed {seed}: TNAS {t['arch']} {truth[t['arch']]:.2f}% (rank {rank[t['arch']]}) "
              f"{t['steps']} steps {t['cpu_s']:.0f}s CPU; evolution {e['arch']} {truth[e['arch']]:.2f}% "
              f"(rank {rank[e['arch']]}, {e['evaluated']} evaluated); supernet best of 256 {e['best_all']} "
              f"{truth[e['best_all']]:.2f}% (rank {rank[e['best_all']]}); SPOS {e['steps']} steps "
              f"{e['cpu_s']:.0f}s CPU", flush=True)

    def ms(vals: list[float], f: str = ".2f") -> str:
        return (f"{statistics.mean(vals):{f}} ± {statistics.stdev(vals):{f}}" if len(vals) > 1 else f"{vals[0]:{f}}")

    print(f"\ntiny_matched: true accuracy of the pick (seed mean of 3 standalone trainings), {len(args.seeds)} seeds; "
          f"all 256: mean {mean_all:.2f}%, best {truth[order[0]]:.2f}% ({order[0]})\n")
    print(f"{'method':<34} {'true acc %':>14} {'rank of 256':>14} {'train steps':>12} {'train CPU s':>12}")
    for label, key, field in (("TNAS (trained tree search)", "tnas", "arch"),
                              ("SPOS + evolution (same steps)", "evolution", "arch"),
                              ("SPOS supernet, best of all 256", "evolution", "best_all")):
        archs = [r[key][field] for r in out]
        print(f"{label:<34} {ms([truth[a] for a in archs]):>14} {ms([float(rank[a]) for a in archs], '.0f'):>14} "
              f"{ms([float(r[key]['steps']) for r in out], '.0f'):>12} {ms([r[key]['cpu_s'] for r in out], '.0f'):>12}")
    print(f"{'random architecture (expected)':<34} {mean_all:>14.2f} {'128.5':>14}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
