"""Kendall τ of every zero-cost proxy (and params/MACs) against the shipped test-bed ground truth.

Every architecture of the bed's space is scored with each proxy in a run context of seed ``s``
(the proxy's seed defaults to the run's: it fixes each network's init and the one training
minibatch), for each seed; τ-b is computed against the fixture's seed-mean accuracy.

    python benchmarks/zerocost_tau.py --beds tiny_chain tiny_matched --seeds 0 1 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def bed_ctx(space: str, seed: int) -> object:
    import nascore_zerocost.plugin as zp
    from nascore.testing import make_context

    return make_context({
        "name": f"zerocost-{space}", "seed": seed, "device": "cpu", "space": {"name": space},
        "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64},
        "stages": [{"kind": "search", "selector": {"name": "random"}}],
    }, plugins=[zp])


def main(argv: list[str] | None = None) -> int:
    from nascore.groundtruth.testbed import kendall_tau, load_testbed_file
    from nascore_zerocost import PROXIES, score_all

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beds", nargs="+", default=["tiny_chain", "tiny_matched"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--proxies", nargs="+", default=[*PROXIES, "params", "macs"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out: dict = {}
    for bed in args.beds:
        rows = load_testbed_file(f"{bed}_mnist5k")["archs"]
        res: dict = {}
        for seed in args.seeds:
            ctx = bed_ctx(bed, seed)
            archs = list(ctx.space.enumerate())
            keys = [ctx.space.format(a) for a in archs]
            truth = [rows[k]["acc"] for k in keys]
            for name in args.proxies:
                t = time.perf_counter()
                scores = score_all(archs, ctx, names=[name])[name]
                ms = 1000 * (time.perf_counter() - t) / len(archs)
                tau = kendall_tau(scores, truth)
                res.setdefault(name, {"tau": [], "ms_per_arch": []})
                res[name]["tau"].append(tau)
                res[name]["ms_per_arch"].append(ms)
                print(f"{bed:13s} seed {seed} {name:10s} tau {tau:+.3f}  {ms:5.1f} ms/arch", flush=True)
        for name, r in res.items():
            taus = [t for t in r["tau"] if t == t]
            r["mean"] = statistics.mean(taus) if taus else float("nan")
            r["sd"] = statistics.stdev(taus) if len(taus) > 1 else 0.0
            print(f"{bed:13s} {name:10s} tau {r['mean']:+.3f} ± {r['sd']:.3f} over seeds {args.seeds}"
                  f"  ({statistics.mean(r['ms_per_arch']):.1f} ms/arch)", flush=True)
        out[bed] = {"n_archs": len(truth), "seeds": args.seeds, "proxies": res}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
