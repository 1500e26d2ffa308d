"""Every zero-cost proxy (and params/MACs) against the shipped test-bed ground truths, by the
`nascore rank` protocol (:mod:`nascore.ranking`), one bed after another.

Each proxy scores every architecture of the bed in a context of seed ``s`` (a proxy's seed defaults
to the run's: it fixes each network's init and its training minibatch), for each seed.

    python benchmarks/zerocost_tau.py --beds tiny_chain tiny_matched --seeds 0 1 2 [--json out.json]

is ``nascore rank BED --baselines params,macs,synflow,…`` for several beds, with one JSON file.
"""

from __future__ import annotations

import argparse
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    from nascore import ranking
    from nascore.registry import get_registry
    from nascore_zerocost import PROXIES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beds", nargs="+", default=["tiny_chain", "tiny_matched"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--proxies", nargs="+", default=[*PROXIES, "params", "macs"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    reg = get_registry()
    out: dict = {}
    for bed in args.beds:
        ctx_for_seed = ranking.context_cache(bed, reg)
        gt = ranking.load_ground_truth(bed, ctx_for_seed(args.seeds[0]))
        baselines, missing = ranking.default_baselines(reg, ctx_for_seed, args.proxies)
        if missing:
            raise SystemExit(f"not installed: {', '.join(missing)}")
        protocol = ranking.protocol_text(gt, args.seeds, 0.1, 5)
        print(protocol, flush=True)
        rows = ranking.rank(gt, [], baselines, args.seeds,
                            progress=lambda line: print("  " + line, file=sys.stderr, flush=True))
        print(ranking.format_table(rows) + "\n", flush=True)
        out[bed] = ranking.to_json(gt, rows, protocol, args.seeds)
    if args.json:
        ranking.write_json(args.json, {"beds": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
