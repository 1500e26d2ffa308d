"""Search-phase speed: prefix sharing in the ``accuracy`` evaluator vs plain per-candidate evaluation.

    python benchmarks/search.py                      # SPOS recipe search + enumeration, ~15 min, 1 thread
    python benchmarks/search.py --generations 4 --epochs 3     # a quick look

* **evolution** — the SPOS recipe (``plugins/spos/.../spos.yaml``: ``shufflenet`` 10 layers × 4
  blocks on mnist5k, batch 64, MACs ≤ 0.9M) with its supernet trained for ``--epochs`` (the recipe
  trains 30; the search's cost does not depend on it, its candidate stream a little), then the
  recipe's search settings (evolution: population 50, 20 generations, top-k 10, 25 mutations
  p=0.1, 25 crossovers; ``accuracy`` with 4 recalibration batches of 64, the whole archval split in
  batches of 256). First the search runs as a user runs it (sharing on), recording every
  ``score()`` call; then the recorded calls are replayed, call by call interleaved, by
  **plain** — the per-candidate evaluation written by hand: ``set_active``, ``recalibrate_bn`` on
  the whole path, ``accuracy`` on the whole path, over the *same pre-gathered batches* (so it
  spends no time gathering data) — by **nascore** (a fresh evaluator, sharing on) and by
  **nascore unshared** (``share_prefixes: false``).
* **enumeration** — every architecture of ``tiny_matched`` (256) and ``tiny_chain`` (81) in one
  ``score()`` call, plain vs nascore alternating, ``--reps`` times (median).

Printed: candidates/s, the ratio plain time ÷ nascore time (measured in the same process), and
whether every score (accuracy and loss, as floats) is identical to plain's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "spos" / "src"))


def plain_scores(ctx: Any, archs: list, cfg: Any, recal: list, evals: list) -> dict:
    """The hand-written per-candidate evaluation: whole path, recalibrate, measure."""
    from nascore.evaluate import accuracy, bn_state, load_bn_state, recalibrate_bn

    net = ctx.supernet
    saved = bn_state(net)
    out = {}
    try:
        for a in archs:
            if a in out:
                continue
            net.set_active(a)
            recalibrate_bn(net, recal, cfg.bn_momentum)
            acc, loss = accuracy(net, evals)
            out[a] = {"acc": acc, "loss": loss}
    finally:
        load_bn_state(net, saved)
    return out


def gathered(ctx: Any, cfg: Any) -> tuple[list, list]:
    ev = cfg.eval_batches
    recal = list(ctx.data.batches("train", epoch=0, limit=cfg.recal_batches, device=ctx.device, shard=False))
    evals = list(ctx.data.batches(cfg.split, shuffle=False, batch_size=ctx.data.eval_batch_size, drop_last=False,
                                  limit=ev, device=ctx.device, shard=False))
    return recal, evals


def bench_evolution(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from nascore.builtin.accuracy import AccuracyConfig, AccuracyEvaluator
    from nascore.builtin.evolution import EvolutionConfig, EvolutionSearch
    from nascore_spos.ranking import run_in_memory

    recipe = yaml.safe_load((ROOT / "plugins/spos/src/nascore_spos/recipes/spos.yaml").read_text())
    search = recipe["stages"][1]
    recipe["device"] = "cpu"
    train = recipe["stages"][0]
    train["trainer"]["options"]["epochs"] = args.epochs
    recipe["stages"] = [train]
    t0 = time.perf_counter()
    ctx = run_in_memory(recipe)
    print(f"trained the SPOS supernet for {args.epochs} epochs in {time.perf_counter() - t0:.0f} s", flush=True)
    sel_opts = dict(search["selector"]["options"])
    if args.generations is not None:
        sel_opts["generations"] = args.generations
    ev_opts = dict(search["evaluator"]["options"])
    cfg = AccuracyConfig(**ev_opts)

    calls: list[list] = []

    class Recording(AccuracyEvaluator):
        def score(self, archs: Any, c: Any) -> Any:
            calls.append(list(archs))
            return super().score(archs, c)

    ctx.stage_key = "search"
    live = Recording(cfg)
    t = time.perf_counter()
    result = EvolutionSearch(EvolutionConfig(**sel_opts)).search(ctx, live)
    live_s = time.perf_counter() - t
    n = live.evaluations
    print(f"live search (sharing on): {n} candidates in {live_s:.1f} s, best {result.candidates[0].arch_str}",
          flush=True)

    recal, evals = gathered(ctx, cfg)
    shared = AccuracyEvaluator(cfg)
    unshared = AccuracyEvaluator(AccuracyConfig(**ev_opts, share_prefixes=False))
    times = {"plain": 0.0, "nascore": 0.0, "nascore unshared": 0.0}
    plain_all: dict = {}
    same = True
    for i, archs in enumerate(calls):
        todo = [a for a in dict.fromkeys(archs) if a not in plain_all]
        order = ["plain", "nascore", "nascore unshared"] if i % 2 == 0 else ["nascore unshared", "nascore", "plain"]
        got: dict[str, Any] = {}
        for who in order:
            t = time.perf_counter()
            if who == "plain":
                got[who] = plain_scores(ctx, todo, cfg, recal, evals)
            elif who == "nascore":
                got[who] = dict(zip(archs, shared.score(archs, ctx)))
            else:
                got[who] = dict(zip(archs, unshared.score(archs, ctx)))
            times[who] += time.perf_counter() - t
        plain_all.update(got["plain"])
        same &= all(got["nascore"][a] == plain_all[a] == got["nascore unshared"][a] for a in archs)
    live_same = all(live.cache[a] == plain_all[a] for a in plain_all)
    return {"n": len(plain_all), "times": times, "same": same and live_same, "live_s": live_s,
            "stats": shared.sharing.stats, "held_mb": shared.sharing.held / 2**20}


def bench_enumeration(space: str, args: argparse.Namespace) -> dict[str, Any]:
    from nascore.builtin.accuracy import AccuracyConfig, AccuracyEvaluator
    from nascore_spos.ranking import run_in_memory, tiny_bed_config

    cfg_run = tiny_bed_config(epochs=2)
    cfg_run["space"] = {"name": space}
    ctx = run_in_memory(cfg_run)
    cfg = AccuracyConfig(recal_batches=20)
    archs = list(ctx.space.enumerate())
    recal, evals = gathered(ctx, cfg)
    t_plain, t_nas = [], []
    same = True
    for r in range(args.reps):
        for who in (("plain", "nascore") if r % 2 == 0 else ("nascore", "plain")):
            t = time.perf_counter()
            if who == "plain":
                p = plain_scores(ctx, archs, cfg, recal, evals)
                t_plain.append(time.perf_counter() - t)
            else:
                s = AccuracyEvaluator(cfg).score(archs, ctx)
                t_nas.append(time.perf_counter() - t)
        same &= all(p[a] == m for a, m in zip(archs, s))
    return {"n": len(archs), "plain": statistics.median(t_plain), "nascore": statistics.median(t_nas), "same": same}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5, help="supernet training epochs before the search")
    ap.add_argument("--generations", type=int, default=None, help="evolution generations (default: the recipe's 20)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each enumeration")
    ap.add_argument("--only", choices=["evolution", "enumeration"], default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ok = True
    if args.only in (None, "evolution"):
        r = bench_evolution(args)
        t = r["times"]
        print(f"\nevolution (SPOS recipe search), {r['n']} candidates:")
        for who in ("plain", "nascore unshared", "nascore"):
            print(f"  {who:17s} {t[who]:7.1f} s  {r['n'] / t[who]:6.2f} candidates/s")
        print(f"  trie: {r['stats']}, {r['held_mb']:.0f} MiB held at the end")
        print(f"  ratio {t['plain'] / t['nascore']:.2f}  (plain / nascore; unshared: {t['plain'] / t['nascore unshared']:.2f})")
        print(f"  identical scores: {r['same']}")
        ok &= r["same"]
    if args.only in (None, "enumeration"):
        for space in ("tiny_matched", "tiny_chain"):
            r = bench_enumeration(space, args)
            print(f"\nenumeration of {space}, {r['n']} candidates, one score() call (median of {args.reps}):")
            print(f"  plain   {r['plain']:6.2f} s  {r['n'] / r['plain']:6.1f} candidates/s")
            print(f"  nascore {r['nascore']:6.2f} s  {r['n'] / r['nascore']:6.1f} candidates/s")
            print(f"  ratio {r['plain'] / r['nascore']:.2f}")
            print(f"  identical scores: {r['same']}")
            ok &= r["same"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
