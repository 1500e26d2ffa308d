"""Train every architecture of a tiny space standalone on mnist5k: the test bed's ground truth.

Writes ``nascore/resources/testbed/<space>_mnist5k.json``: per canonical arch string the accuracy on
a fixed eval split of mnist5k's train part (mean over seeds; per-seed values kept), the held-out
mnist5k test accuracy, MACs/params from the space's cost table, and the run's metadata (budget,
split sizes, versions, wall time, seed-to-seed Kendall tau = the noise ceiling of any ranking).

    python benchmarks/make_testbed.py --space tiny_chain            # ~2-4 min on 1 CPU thread
    python benchmarks/make_testbed.py --space tiny_cell --seeds 0 1 2

The cost-matched bed trains 256 archs for 8 epochs (about 15 min per seed on one thread); run one
process per seed, each writing a part, then merge the parts (the per-seed wall times add up)::

    for s in 0 1 2; do python benchmarks/make_testbed.py --space tiny_matched --epochs 8 --seeds $s \
        --part runs/testbed/part$s.json & done; wait
    python benchmarks/make_testbed.py --space tiny_matched --epochs 8 --merge runs/testbed/part*.json

``--logits`` also keeps every trained model's eval/test logits (float16) beside the fixture, so the
ground truth of ensembles (NEAS: averaged logits of standalone models) is computed without training.

Every child is built with ``space.build_supernet().child(arch, inherit=False)`` (freshly
initialised from the seed), trained with Adam and a cosine schedule, then evaluated in eval mode.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from nascore import __version__ as nascore_version
from nascore.data import DataBundle, split_indices
from nascore.registry import build_registry
from nascore.groundtruth.testbed import kendall_tau, topk_hit_rate

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tiny_chain", help="registered tiny space: tiny_chain | tiny_cell")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--eval-fraction", type=float, default=0.25, help="of the mnist5k train part (4,000)")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the fixed train/eval split")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="only the first N archs (trial runs)")
    ap.add_argument("--out", type=Path, default=None, help="default nascore/resources/testbed/<space>_mnist5k.json")
    ap.add_argument("--part", type=Path, default=None, help="write only this process's per-seed results here (merge later)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, help="merge --part files into the fixture")
    ap.add_argument("--logits", action="store_true", help="also save eval/test logits (<out stem>_logits.pt)")
    return ap.parse_args(argv)


def predict(net: torch.nn.Module, bundle: DataBundle, split: str) -> torch.Tensor:
    """Logits of ``net`` on ``split`` in the bundle's fixed order (eval mode)."""
    net.eval()
    with torch.no_grad():
        return torch.cat([net(x) for x, _ in bundle.batches(split, shuffle=False, batch_size=500, drop_last=False)])


def evaluate(net: torch.nn.Module, bundle: DataBundle, split: str) -> float:
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in bundle.batches(split, shuffle=False, batch_size=500, drop_last=False):
            correct += int((net(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * correct / total


def train_one(space: Any, arch: Any, bundle: DataBundle, args: argparse.Namespace, seed: int,
              logits: dict[str, torch.Tensor] | None = None) -> tuple[float, float]:
    """Train ``arch`` from scratch with ``seed``; (eval-split accuracy, test accuracy) in percent.

    With ``logits`` (a dict), the trained net's ``val``/``test`` logits are stored in it too.
    """
    torch.manual_seed(seed)
    net = space.build_supernet().child(arch, inherit=False)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * bundle.num_batches("train")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for epoch in range(args.epochs):
        net.train()
        for x, y in bundle.batches("train", epoch=epoch):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    if logits is not None:
        for split in ("val", "test"):
            logits[split] = predict(net, bundle, split).half()
    return evaluate(net, bundle, "val"), evaluate(net, bundle, "test")


def train_all(space: Any, table: Any, archs: list[Any], spec: Any, splits: dict[str, Any],
              args: argparse.Namespace, logits: dict | None = None,
              ) -> tuple[dict[int, dict[str, tuple[float, float]]], dict[str, Any]]:
    """Train every arch once per seed; (per-seed (eval, test) accuracies, the test-bed rows by arch string).

    With ``logits`` (a dict), ``logits[seed][arch string]`` receives each net's val/test logits.
    """
    per_seed: dict[int, dict[str, tuple[float, float]]] = {s: {} for s in args.seeds}
    for seed in args.seeds:
        bundle = DataBundle(spec, splits, seed=seed, batch_size=args.batch_size)
        for i, arch in enumerate(archs):
            s = space.format(arch)
            t = time.time()
            keep = None if logits is None else logits.setdefault(seed, {}).setdefault(s, {})
            per_seed[seed][s] = train_one(space, arch, bundle, args, seed, keep)
            print(f"seed {seed} [{i + 1:3d}/{len(archs)}] {s:28s} eval {per_seed[seed][s][0]:5.1f} "
                  f"test {per_seed[seed][s][1]:5.1f}  ({time.time() - t:4.1f}s)", flush=True)
    return per_seed, rows(space, table, archs, per_seed)


def rows(space: Any, table: Any, archs: list[Any], per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The fixture's per-architecture rows from per-seed (eval, test) accuracies."""
    seeds = sorted(per_seed)
    out: dict[str, Any] = {}
    for arch in archs:
        s = space.format(arch)
        evals = [per_seed[sd][s][0] for sd in seeds]
        tests = [per_seed[sd][s][1] for sd in seeds]
        macs, params = table.cost(arch)
        out[s] = {
            "acc": round(sum(evals) / len(evals), 3),
            "test_acc": round(sum(tests) / len(tests), 3),
            "acc_per_seed": evals,
            "test_acc_per_seed": tests,
            "macs": int(macs),
            "params": int(params),
        }
    return out


def logits_path(path: Path) -> Path:
    return path.with_name(path.stem + "_logits.pt")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    reg = build_registry(load_entry_points=False)
    spec = reg.get("dataset", "mnist5k").build({}, None)
    ctx = SimpleNamespace(data=SimpleNamespace(input_shape=spec.input_shape, num_classes=spec.num_classes))
    space = reg.get("space", args.space).build({}, ctx)  # UnknownComponent names the installed spaces
    table = space.cost_table()
    archs = list(space.enumerate())[: args.limit]
    splits = split_indices(len(spec.train), {"val": args.eval_fraction}, seed=args.split_seed)
    path = args.out or ROOT / "nascore" / "resources" / "testbed" / f"{args.space}_mnist5k.json"
    logits: dict | None = {} if args.logits else None

    if args.merge:
        per_seed, wall, commands = {}, 0.0, []
        for part in args.merge:
            data = json.loads(part.read_text())
            if data["space"] != args.space or data["epochs"] != args.epochs:
                raise SystemExit(f"{part}: trained {data['space']} for {data['epochs']} epochs, not "
                                 f"{args.space} for {args.epochs}")
            per_seed.update({int(k): {a: tuple(v) for a, v in d.items()} for k, d in data["per_seed"].items()})
            wall += data["wall_time_s"]
            commands.append(data["command"])
            if logits is not None and logits_path(part).exists():
                logits.update(torch.load(logits_path(part), weights_only=True))
        args.seeds = sorted(per_seed)
        out = rows(space, table, archs, per_seed)
        command = " ; ".join(commands) + " ; python benchmarks/make_testbed.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
    else:
        print(f"{space.describe()}; training {len(archs)} archs x {len(args.seeds)} seeds, "
              f"{len(splits['train'])} train / {len(splits['val'])} eval / {len(spec.test)} test", flush=True)
        t0 = time.time()
        per_seed, out = train_all(space, table, archs, spec, splits, args, logits)
        wall = time.time() - t0
        command = "python benchmarks/make_testbed.py " + " ".join(sys.argv[1:] if argv is None else argv)
        if args.part is not None:
            args.part.parent.mkdir(parents=True, exist_ok=True)
            args.part.write_text(json.dumps({
                "space": args.space, "epochs": args.epochs, "wall_time_s": round(wall, 1), "command": command,
                "per_seed": {str(k): {a: list(v) for a, v in d.items()} for k, d in per_seed.items()}}) + "\n")
            if logits is not None:
                torch.save(logits, logits_path(args.part))
            print(f"wrote part {args.part} ({wall:.0f}s)")
            return 0

    keys = list(out)
    accs = [out[k]["acc"] for k in keys]
    seed_taus = [
        kendall_tau([per_seed[a][k][0] for k in keys], [per_seed[b][k][0] for k in keys])
        for i, a in enumerate(args.seeds) for b in args.seeds[i + 1 :]
    ]
    meta = {
        "space": args.space,
        "space_description": space.describe(),
        "dataset": "mnist5k",
        "num_archs": len(keys),
        "metric": "acc = top-1 % on the eval split, mean over seeds; test_acc = same nets on mnist5k test",
        "seeds": args.seeds,
        "epochs": args.epochs,
        "optimizer": "Adam",
        "lr": args.lr,
        "lr_schedule": "cosine to 0 over all steps",
        "weight_decay": args.weight_decay,
        "batch_size": args.batch_size,
        "split_seed": args.split_seed,
        "split_sizes": {"train": len(splits["train"]), "eval": len(splits["val"]), "test": len(spec.test)},
        "init": "space.build_supernet().child(arch, inherit=False) after torch.manual_seed(seed)",
        "cost_input_shape": list(table.input_shape),
        "acc_range": [min(accs), max(accs)],
        "seed_tau": (sum(seed_taus) / len(seed_taus)) if seed_taus else None,
        "seed_taus": seed_taus,
        "eval_test_tau": kendall_tau(accs, [out[k]["test_acc"] for k in keys]),
        "macs_acc_tau": kendall_tau([out[k]["macs"] for k in keys], accs),
        "params_acc_tau": kendall_tau([out[k]["params"] for k in keys], accs),
        "seed_top5_hit": (
            topk_hit_rate([per_seed[args.seeds[0]][k][0] for k in keys], [per_seed[args.seeds[1]][k][0] for k in keys],
                          min(5, len(keys)))
            if len(args.seeds) > 1 else None
        ),
        "torch": torch.__version__,
        "nascore": nascore_version,
        "python": platform.python_version(),
        "threads": args.threads,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_time_s": round(wall, 1),
        "command": command,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # NaN (a constant cost column has no tau) is written as null: the fixture is strict JSON
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in meta.items()}
    path.write_text(json.dumps({"meta": clean, "archs": out}, indent=1, allow_nan=False) + "\n")
    if logits is not None:
        torch.save(logits, logits_path(path))
    print(f"wrote {path}: acc {min(accs):.1f}..{max(accs):.1f}, seed tau {meta['seed_tau']}, "
          f"eval/test tau {meta['eval_test_tau']:.3f}, wall {wall:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
