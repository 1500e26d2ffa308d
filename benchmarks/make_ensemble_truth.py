"""Ground truth of 2-member ensembles on a test bed, from the standalone models' logits (no training).

NEAS searches ensembles of architectures; its ground truth is the accuracy of the ensemble of the
standalone-trained members. With the logits that ``make_testbed.py --logits`` keeps (every trained
model's eval/test logits), that accuracy is computed for every unordered pair (repeats included) by
averaging the members' logits, per seed (members trained with the same seed), then averaged over
seeds::

    python benchmarks/make_ensemble_truth.py --space tiny_matched runs/testbed/part*_logits.pt

writes ``nascore/resources/testbed/<space>_mnist5k_ensembles2.json.gz``: ``{"meta": ...,
"pairs": {"archA+archB": [eval acc %, test acc %]}}`` with archA <= archB, and the accuracy of each
member alone (the fixture's) for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from nascore.data import DataBundle, split_indices
from nascore.registry import build_registry

ROOT = Path(__file__).resolve().parents[1]


def labels(split: str, spec, splits) -> torch.Tensor:
    bundle = DataBundle(spec, splits, seed=0, batch_size=64)
    return torch.cat([y for _, y in bundle.batches(split, shuffle=False, batch_size=500, drop_last=False)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logits", type=Path, nargs="+", help="the *_logits.pt files of make_testbed.py (one per seed part)")
    ap.add_argument("--space", default="tiny_matched")
    ap.add_argument("--eval-fraction", type=float, default=0.25)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    reg = build_registry(load_entry_points=False)
    spec = reg.get("dataset", "mnist5k").build({}, None)
    ctx = SimpleNamespace(data=SimpleNamespace(input_shape=spec.input_shape, num_classes=spec.num_classes))
    space = reg.get("space", args.space).build({}, ctx)
    keys = [space.format(a) for a in space.enumerate()]
    splits = split_indices(len(spec.train), {"val": args.eval_fraction}, seed=args.split_seed)
    ys = {"val": labels("val", spec, splits), "test": labels("test", spec, splits)}
    per_seed: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    for path in args.logits:
        per_seed.update(torch.load(path, weights_only=True))
    seeds = sorted(per_seed)
    acc: dict[str, list[list[float]]] = {}
    for seed in seeds:
        for split, col in (("val", 0), ("test", 1)):
            stack = torch.stack([per_seed[seed][k][split].float() for k in keys])  # (archs, n, classes)
            y = ys[split]
            for i, a in enumerate(keys):
                pair = (stack[i].unsqueeze(0) + stack[i:]) / 2  # a with every b >= a
                correct = (pair.argmax(-1) == y).float().mean(-1) * 100
                for j, c in enumerate(correct.tolist()):
                    acc.setdefault(f"{a}+{keys[i + j]}", [[0.0, 0.0] for _ in seeds])[seeds.index(seed)][col] = c
    pairs = {k: [round(sum(v[s][0] for s in range(len(seeds))) / len(seeds), 3),
                 round(sum(v[s][1] for s in range(len(seeds))) / len(seeds), 3)] for k, v in acc.items()}
    meta = {
        "space": args.space, "dataset": "mnist5k", "members": 2, "num_pairs": len(pairs), "seeds": seeds,
        "metric": "[eval %, test %]: top-1 of the mean logits of the two standalone models (same seed), mean over seeds",
        "source": "logits of benchmarks/make_testbed.py --logits (the fixture's own trained models)",
        "torch": torch.__version__, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_time_s": round(time.time() - t0, 1),
        "command": "python benchmarks/make_ensemble_truth.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = args.out or ROOT / "nascore" / "resources" / "testbed" / f"{args.space}_mnist5k_ensembles2.json.gz"
    with gzip.open(out, "wt", encoding="utf-8") as f:
        json.dump({"meta": meta, "pairs": pairs}, f, allow_nan=False)
    best = max(pairs, key=lambda k: pairs[k][0])
    print(f"wrote {out}: {len(pairs)} pairs; best {best} {pairs[best][0]:.2f}% ({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
