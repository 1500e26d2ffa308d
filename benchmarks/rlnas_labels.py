"""RLNAS's Table 1 on the cost-matched bed: τ of the angle under random labels vs τ of accuracy under
random labels vs under real labels, by the ``nascore rank`` protocol.

    python benchmarks/rlnas_labels.py                              # tiny_matched, seeds 0-4, 10 and 30 epochs
    python benchmarks/rlnas_labels.py --epochs 10 --seeds 0 1 2 --json runs/rlnas.json

Per (seed, epochs): two SPOS (uniform) supernets, one on the real labels and one on labels drawn
once from the seed (``data.random_labels``), the budget of the SPOS rows of ``benchmarks/ranking.py``
(lr 0.1 linear, label smoothing 0.1, batch 64; ``nascore_rlnas.ranking``). Each is scored over all
architectures of the bed by ``angle`` (RLNAS/ABS: W0 vs trained weights, reads no data) and by
``accuracy`` (archval, real labels, BN recalibrated). RLNAS (Zhang et al., ICCV 2021) Table 1
claims random labels + angle ≫ random labels + validation accuracy, and close to real labels.
The figures, and the noise ceiling, come from :func:`nascore.ranking.rank`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

METRICS = ("angle", "accuracy")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bed", default="tiny_matched", choices=["tiny_matched", "tiny_chain"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from nascore import ranking
    from nascore_rlnas.ranking import accuracy_scores, angle_scores, train_supernet

    gt = ranking.load_ground_truth(args.bed, ranking.bed_context(args.bed, 0))
    scores: dict[tuple[int, str, bool, int], list[float]] = {}
    for epochs in args.epochs:
        for seed in args.seeds:
            for random_labels in (True, False):
                t0 = time.time()
                ctx = train_supernet(seed, random_labels, epochs, space=args.bed)
                for metric in METRICS:
                    s = angle_scores(ctx) if metric == "angle" else accuracy_scores(ctx)
                    scores[(epochs, metric, random_labels, seed)] = [float(s[k]) for k in gt.keys]
                print(f"  {epochs} epochs, seed {seed}, {'random' if random_labels else 'real'} labels: "
                      f"{time.time() - t0:.0f}s", file=sys.stderr, flush=True)

    def lookup(epochs: int, metric: str, random_labels: bool) -> Any:
        return lambda gt_, seed: scores[(epochs, metric, random_labels, seed)]

    subjects = [(f"{metric}, {'random' if rl else 'real'} labels, {epochs} epochs", lookup(epochs, metric, rl),
                 len(args.seeds))
                for epochs in args.epochs for rl in (True, False) for metric in METRICS]
    protocol = ranking.protocol_text(gt, args.seeds, 0.1, 5)
    rows = ranking.rank(gt, subjects, [], args.seeds)
    print(protocol)
    print(ranking.format_table(rows))
    for epochs in args.epochs:
        a = [r for r in rows if r.label == f"angle, random labels, {epochs} epochs"][0]
        b = [r for r in rows if r.label == f"accuracy, random labels, {epochs} epochs"][0]
        wins = sum(x["tau"] > y["tau"] for x, y in zip(a.per_seed, b.per_seed))
        print(f"{epochs} epochs: per-seed τ angle/random {[round(x['tau'], 2) for x in a.per_seed]} vs "
              f"accuracy/random {[round(y['tau'], 2) for y in b.per_seed]}: angle higher in {wins} of {len(a.per_seed)} seeds")
    if args.json:
        ranking.write_json(args.json, ranking.to_json(gt, rows, protocol, args.seeds))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
