"""PWKD vs plain KD vs no KD: student test accuracy over seeds at equal epochs (mnist5k).

One slimmable teacher (``slimmable_chain``, widths 0.25/0.5/0.75/1.0 of a 16/32-channel conv chain,
trained jointly with the ``slimmable`` trainer) is trained once; then, for each seed, the student
(default: the 0.25-width network, 1.9K parameters) is trained from scratch three times with the
same initialisation and data order — by the core ``retrain`` stage code itself
(:func:`nascore.pipeline.retrain.retrain_one`), so the learning-rate hooks are the ones a run uses:

* ``none``  — cross-entropy only, one cosine cycle;
* ``kd``    — CE + logit KD (T=4) from the whole teacher (width 1.0), one cosine cycle;
* ``pwkd``  — CE + logit KD (T=4) from teacher width 0.25, 0.5, 0.75, 1.0 in four equal stages,
  the learning rate restarting (cosine) at every stage boundary.

Accuracy is on mnist5k's held-out test split (1,000 digits). The table gives mean ± std over seeds,
the paired difference against ``kd`` and how many seeds PWKD won.

    python benchmarks/pwkd.py                    # 5 seeds, 12 epochs, ~4-5 min on 1 CPU thread
    python benchmarks/pwkd.py --seeds 0 1 --epochs 4 --student w50
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from nascore.config import Ref, RetrainStage
from nascore.data import DataBundle
from nascore.evaluate import accuracy
from nascore.testing import make_registry, run_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=12, help="student epochs (every method)")
    ap.add_argument("--lr", type=float, default=0.05, help="student SGD learning rate")
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--student", default="w25", help="student width (an option of slimmable_chain)")
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--widths", nargs="+", default=None, help="PWKD teacher widths, partial to whole (default: all)")
    ap.add_argument("--stage-schedule", default="cosine", choices=["cosine", "linear", "step", "constant"],
                    help="PWKD learning-rate decay within a stage")
    return ap.parse_args(argv)


def teacher_context(args: argparse.Namespace, reg: Any) -> Any:
    cfg = {"name": "bench-pwkd", "seed": 0, "device": "cpu",
           "space": {"name": "slimmable_chain", "options": {"width": 16, "widths": [0.25, 0.5, 0.75, 1.0]}},
           "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64},
           "stages": [{"kind": "train", "trainer": {"name": "slimmable", "options": {
               "epochs": args.teacher_epochs, "lr": 0.1, "weight_decay": 1e-4}}}]}
    return run_config(cfg, None, registry=reg)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    import nascore_pwkd.plugin as pwkd_plugin

    reg = make_registry(pwkd_plugin)
    t0 = time.time()
    ctx = teacher_context(args, reg)
    teacher_s = time.time() - t0
    net = ctx.supernet
    widths = [ctx.space.format(a) for a in ctx.space.enumerate()]
    teacher_acc = {}
    for a in ctx.space.enumerate():
        net.set_active(a)
        teacher_acc[ctx.space.format(a)] = accuracy(net, ctx.data.batches(
            "test", shuffle=False, batch_size=500, drop_last=False))[0]
    student = ctx.space.parse(args.student)
    ctx.candidates = [ctx.candidate(student, 0.0, origin="benchmark")]
    methods = {
        "none": None,
        "kd": Ref(name="kd", options={"teacher": "supernet", "teacher_arch": widths[-1], "temperature": args.temperature}),
        "pwkd": Ref(name="pwkd", options={"teacher": "supernet", "widths": args.widths,
                                          "stage_schedule": args.stage_schedule,
                                          "base": {"name": "kd", "options": {"temperature": args.temperature}}}),
    }
    from nascore.pipeline.retrain import retrain_one

    base = ctx.data
    results: dict[str, list[float]] = {m: [] for m in methods}
    times: dict[str, float] = {m: 0.0 for m in methods}
    for seed in args.seeds:
        # same splits, a seed-specific batch order; same init per seed (the stage key fixes it)
        ctx.data = DataBundle(base.spec, base.splits, seed=seed, batch_size=base.batch_size,
                              eval_batch_size=base.eval_batch_size)
        for m, ref in methods.items():
            ctx.stage_key = f"bench-seed{seed}"
            stage = RetrainStage(kind="retrain", epochs=args.epochs, lr=args.lr, distiller=ref)
            t1 = time.time()
            out = retrain_one(ctx, stage, 0)
            times[m] += time.time() - t1
            results[m].append(100 * out["test_acc"])
            print(f"seed {seed} {m:>5}: {100 * out['test_acc']:.2f}%", flush=True)
    print(f"\nPWKD on mnist5k: student {args.student} "
          f"({ctx.cost.params(student):,} params, {ctx.cost.macs(student):,} MACs), {args.epochs} epochs, "
          f"SGD lr {args.lr}, T={args.temperature}; PWKD widths {args.widths or widths}, "
          f"{args.stage_schedule} within stages; teacher slimmable_chain trained {args.teacher_epochs} epochs "
          f"({teacher_s:.0f}s)")
    print("teacher test accuracy by width: " + ", ".join(f"{w} {100 * v:.2f}%" for w, v in teacher_acc.items()))
    print()
    hdr = f"{'method':<6} {'mean acc':>9} {'std':>6}  {'vs none':>8} {'vs kd':>7}  {'per seed':<40} {'s/run':>6}"
    print(hdr)
    print("-" * len(hdr))
    n = len(args.seeds)
    for m, accs in results.items():
        mean = statistics.mean(accs)
        std = statistics.stdev(accs) if n > 1 else 0.0
        d_none = mean - statistics.mean(results["none"])
        d_kd = mean - statistics.mean(results["kd"])
        per = " ".join(f"{a:.2f}" for a in accs)
        print(f"{m:<6} {mean:>8.2f}% {std:>6.2f}  {d_none:>+8.2f} {d_kd:>+7.2f}  {per:<40} {times[m] / n:>6.1f}")
    diffs = [p - k for p, k in zip(results["pwkd"], results["kd"])]
    wins = sum(d > 0 for d in diffs)
    sd = statistics.stdev(diffs) if n > 1 else 0.0
    print(f"\npaired PWKD - KD: mean {statistics.mean(diffs):+.2f} pt, std {sd:.2f}, PWKD better on {wins}/{n} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
