"""Ground truth of the NSE test pool space: every architecture trained standalone on mnist5k.

The NSE hypervolume test (plugins/nse/tests) measures each round's Pareto front against the true
accuracy of its architectures. This script trains every architecture of the test space — the
``nse_pool`` space with 2 layers, width 8, pool (avg3, conv1, conv3, conv5), up to 2 ops summed per
layer (11 options per layer: skip, 4 single ops, 6 pairs; 121 architectures) — with the recipe of
``benchmarks/make_testbed.py`` (Adam, cosine, fixed eval split of mnist5k's train part) and writes
``plugins/nse/tests/data/nse_pool_mnist5k.json`` in the same format as the core's test-bed files.

    python benchmarks/nse_groundtruth.py     # 121 archs x 1-8 s: ~3 min on an idle CPU thread (18 min on a loaded box)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_testbed import train_all  # noqa: E402

from nascore.data import split_indices  # noqa: E402
from nascore.registry import build_registry  # noqa: E402
from nascore.groundtruth.testbed import kendall_tau  # noqa: E402

#: The test space (keep in sync with plugins/nse/tests/test_nse.py).
TEST_SPACE = {"layers": 2, "width": 8, "ops": ["avg3", "conv1", "conv3", "conv5"], "active": 2, "max_branches": 2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--eval-fraction", type=float, default=0.25)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, default=ROOT / "plugins" / "nse" / "tests" / "data" / "nse_pool_mnist5k.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import nascore_nse.plugin as nse_plugin

    reg = build_registry(load_entry_points=False, extra=[(nse_plugin, "nascore_nse.plugin")])
    spec = reg.get("dataset", "mnist5k").build({}, None)
    ctx = SimpleNamespace(data=SimpleNamespace(input_shape=spec.input_shape, num_classes=spec.num_classes))
    space = reg.get("space", "nse_pool").build(TEST_SPACE, ctx)
    table = space.cost_table()
    archs = list(space.enumerate())
    splits = split_indices(len(spec.train), {"val": args.eval_fraction}, seed=args.split_seed)
    print(f"{space.describe()}; training {len(archs)} archs x {len(args.seeds)} seed(s)", flush=True)
    t0 = time.time()
    _, out = train_all(space, table, archs, spec, splits, args)
    keys = list(out)
    accs = [out[k]["acc"] for k in keys]
    meta = {
        "space": "nse_pool", "space_options": TEST_SPACE, "dataset": "mnist5k", "num_archs": len(keys),
        "metric": "acc = top-1 % on the eval split (mean over seeds); test_acc = mnist5k test",
        "seeds": args.seeds, "epochs": args.epochs, "optimizer": "Adam", "lr": args.lr,
        "lr_schedule": "cosine to 0", "batch_size": args.batch_size, "split_seed": args.split_seed,
        "acc_range": [min(accs), max(accs)], "macs_acc_tau": kendall_tau([out[k]["macs"] for k in keys], accs),
        "eval_test_tau": kendall_tau(accs, [out[k]["test_acc"] for k in keys]),
        "torch": torch.__version__, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_time_s": round(time.time() - t0, 1), "command": "python benchmarks/nse_groundtruth.py " + " ".join(argv or sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "archs": out}, indent=1) + "\n")
    print(f"wrote {args.out}: acc {min(accs):.1f}..{max(accs):.1f}, wall {meta['wall_time_s']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
