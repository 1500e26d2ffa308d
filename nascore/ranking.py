"""One ranking protocol: how well a scorer orders architectures against a ground truth.

A *ground truth* is a space whose architectures have known standalone accuracies: the test beds
(``tiny_matched``, ``tiny_chain``, ``tiny_cell``: every architecture trained on mnist5k with several
seeds, :mod:`nascore.groundtruth.testbed`) and the NAS-Bench-201 tables (``nb201``; a seeded sample of its
15,625 cells). A *scorer* is anything that gives each architecture a number, higher = predicted
better: a trained supernet from a run folder (scored with its run's evaluator), a registered
evaluator (a zero-cost proxy, ``params``, ``macs``, a table) or a plain ``{arch: score}`` mapping.

:func:`rank_metrics` is the one place the figures are computed, so every benchmark and method test
reports the same thing the same way:

* ``tau`` (Kendall τ-b) and ``rho`` (Spearman) over all architectures;
* ``tau_top`` — τ among the architectures in the true top ``top_frac`` (10 %): does the scorer order
  the good ones, where a search decides;
* ``p_at_k`` — share of the scorer's k best that are among the true k best (k = 5 and 10 % of n);
* ``tau_bracket`` — τ within cost brackets (equal-count MACs bins, averaged weighted by pairs): the
  ranking a constrained search needs, among candidates of similar cost. When every architecture has
  the same MACs (``tiny_matched``) there is one bracket and it equals ``tau``.

The *noise ceiling* row applies the same metrics to one training seed's accuracies against
another's (every pair of seeds): no scorer can be expected to agree with the ground truth better
than the ground truth agrees with itself. A constant scorer (MACs on a cost-matched bed) has no
ranking: its τ is undefined and shown as ``const``.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from nascore.arch import Architecture
from nascore.errors import ConfigError, NascoreError
from nascore.groundtruth.testbed import kendall_tau, load_testbed_file, topk_hit_rate

BEDS = ("tiny_matched", "tiny_chain", "tiny_cell", "nb201")
"""Ground truths `nascore rank` knows: the shipped test beds and the NAS-Bench-201 table."""

ZERO_COST = ("synflow", "snip", "grad_norm", "jacov", "naswot", "fisher")
"""Zero-cost proxies used as baselines when installed (plugin ``nascore-zerocost``)."""

METRICS = ("tau", "rho", "tau_top", "p_at_5", "p_at_top", "tau_bracket")
HEADERS = {"tau": "Kendall τ", "rho": "Spearman ρ", "tau_top": "τ top 10%", "p_at_5": "P@5",
           "p_at_top": "P@10%", "tau_bracket": "τ in MACs brackets"}


# -- metrics ----------------------------------------------------------------------------------
def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n with ties given their average rank (as scipy's rankdata)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's ρ (Pearson correlation of average ranks); NaN if either side is constant."""
    if len(xs) != len(ys):
        raise ValueError(f"spearman_rho: {len(xs)} x values but {len(ys)} y values")
    if len(xs) < 2:
        return math.nan
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def cost_brackets(costs: Sequence[float], n_brackets: int) -> list[list[int]]:
    """Indices grouped into at most ``n_brackets`` equal-count bins of similar cost.

    Equal costs never straddle a bin edge (a bin ends only where the cost changes), so a bed whose
    architectures all cost the same is one bracket.
    """
    order = sorted(range(len(costs)), key=lambda i: (costs[i], i))
    size = max(2, math.ceil(len(order) / max(1, n_brackets)))
    bins: list[list[int]] = [[]]
    for pos, i in enumerate(order):
        cur = bins[-1]
        if len(cur) >= size and costs[i] != costs[cur[-1]]:
            bins.append([])
        bins[-1].append(i)
    return [b for b in bins if len(b) >= 2]


def rank_metrics(pred: Sequence[float], truth: Sequence[float], costs: Sequence[float] | None = None, *,
                 top_frac: float = 0.1, brackets: int = 5) -> dict[str, float]:
    """The protocol's figures for one scorer (see the module docstring); NaN where undefined."""
    n = len(truth)
    if len(pred) != n:
        raise ValueError(f"rank_metrics: {len(pred)} scores for {n} architectures")
    out: dict[str, float] = {"n": float(n)}
    out["tau"] = kendall_tau(pred, truth)
    out["rho"] = spearman_rho(pred, truth)
    k_top = max(2, round(top_frac * n))
    top = sorted(range(n), key=lambda i: -truth[i])[:k_top]
    out["tau_top"] = kendall_tau([pred[i] for i in top], [truth[i] for i in top])
    constant = len(set(pred)) == 1
    out["p_at_5"] = math.nan if constant else topk_hit_rate(pred, truth, min(5, n))
    out["p_at_top"] = math.nan if constant else topk_hit_rate(pred, truth, k_top)
    if costs is None:
        out["tau_bracket"] = math.nan
    else:
        total, weight = 0.0, 0
        for b in cost_brackets(costs, brackets):
            t = kendall_tau([pred[i] for i in b], [truth[i] for i in b])
            if not math.isnan(t):
                pairs = len(b) * (len(b) - 1) // 2
                total += t * pairs
                weight += pairs
        out["tau_bracket"] = total / weight if weight else math.nan
    return out


# -- ground truth -----------------------------------------------------------------------------
@attrs.define
class GroundTruth:
    """The architectures of a bed, their true accuracy (seed mean) and, where known, per seed."""

    bed: str
    space: Any
    archs: list[Architecture]
    keys: list[str]
    truth: list[float]
    macs: list[float]
    params: list[float]
    per_seed: list[list[float]]
    dataset: str
    description: str

    def noise_rows(self, **kw: Any) -> list[dict[str, float]]:
        """The metrics of each seed's accuracies against each other seed's (the noise ceiling)."""
        out = []
        for i, a in enumerate(self.per_seed):
            for b in self.per_seed[i + 1:]:
                out.append(rank_metrics(a, b, self.macs, **kw))
        return out


def _bed_context_config(space: str, dataset: str, seed: int, space_options: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": f"rank-{space}", "seed": seed, "device": "cpu",
        "space": {"name": space, "options": dict(space_options or {})},
        "dataset": {"name": dataset}, "data": {"batch_size": 64},
        "stages": [{"kind": "search", "selector": {"name": "random"}}],
    }


def bed_context(bed: str, seed: int = 0, registry: Any = None) -> Any:
    """A run context (no folder, nothing run) for the bed's space and data: what evaluators score in."""
    from nascore.pipeline.run import open_run

    space, dataset = ("nb201", "synthetic") if bed == "nb201" else (bed, "mnist5k")
    data = _bed_context_config(space, dataset, seed)
    if bed == "nb201":
        # no CIFAR-10 ships: proxies that read data see CIFAR-shaped synthetic images (said in the output)
        data["dataset"] = {"name": "synthetic", "options": {"size": 256, "shape": [3, 32, 32], "num_classes": 10}}
    ctx = open_run(data, run_dir=None, registry=registry, quiet=True)
    ctx.stage_key = "rank"
    return ctx


def context_cache(bed: str, registry: Any = None) -> Callable[[int], Any]:
    """``ctx_for_seed(seed)``: one :func:`bed_context` per seed, built on first use."""
    contexts: dict[int, Any] = {}

    def ctx_for_seed(seed: int) -> Any:
        if seed not in contexts:
            contexts[seed] = bed_context(bed, seed, registry=registry)
        return contexts[seed]

    return ctx_for_seed


def load_ground_truth(bed: str, ctx: Any, sample: int | None = None, seed: int = 0) -> GroundTruth:
    """The ground truth of ``bed`` (one of :data:`BEDS`) over the space of ``ctx``.

    ``sample`` keeps a seeded random subset (NB201 defaults to 500 of 15,625 cells).
    """
    space = ctx.space
    table = ctx.cost
    if bed == "nb201":
        from nascore.groundtruth.nb201_table import load_table

        final = load_table("cifar10_200ep", required=("test_top1",))
        short = load_table("12ep", required=("cifar10-val",))
        archs = list(space.enumerate())
        n = sample or 500
        if n < len(archs):
            archs = random.Random(seed).sample(archs, n)
        keys = [space.format(a) for a in archs]
        truth = [final.row(k)["test_top1"] for k in keys]
        # NB201 ships seed means only: the "noise ceiling" row is the 12-epoch vs 200-epoch agreement
        per_seed = [[short.row(k)["cifar10-val"] for k in keys], truth]
        desc = (f"NAS-Bench-201 CIFAR-10 200-epoch test accuracy (seed mean), {len(keys)} of 15,625 cells "
                f"sampled with seed {seed}; the 'noise' row is the 12-epoch validation table against it")
        dataset = "cifar10 (table)"
    else:
        fixture = load_testbed_file(f"{bed}_mnist5k")
        meta, rows = fixture["meta"], fixture["archs"]
        archs, keys = [], []
        for a in space.enumerate():
            k = space.format(a)
            if k not in rows:
                raise NascoreError(f"test bed {bed}: architecture {k} is missing from the fixture",
                                   hint="regenerate it with benchmarks/make_testbed.py")
            archs.append(a)
            keys.append(k)
        if sample is not None and sample < len(archs):
            idx = sorted(random.Random(seed).sample(range(len(archs)), sample))
            archs, keys = [archs[i] for i in idx], [keys[i] for i in idx]
        truth = [float(rows[k]["acc"]) for k in keys]
        n_seeds = len(rows[keys[0]]["acc_per_seed"])
        per_seed = [[float(rows[k]["acc_per_seed"][s]) for k in keys] for s in range(n_seeds)]
        desc = (f"{meta['space_description']}: every architecture trained standalone on mnist5k, "
                f"{meta['epochs']} epochs, seeds {meta['seeds']}; truth = eval-split top-1, seed mean")
        dataset = "mnist5k"
    costs = [table.cost(a) for a in archs]
    return GroundTruth(bed, space, archs, keys, truth, [float(c[0]) for c in costs], [float(c[1]) for c in costs],
                       per_seed, dataset, desc)


# -- scorers ----------------------------------------------------------------------------------
Scorer = Callable[[GroundTruth, int], list[float]]
"""``fn(ground_truth, seed) -> one score per architecture`` (higher = predicted better)."""


def evaluator_scorer(name: str, options: Mapping[str, Any] | None = None, *, ctx_for_seed: Callable[[int], Any]) -> Scorer:
    """Score with the registered evaluator ``name`` built in the context ``ctx_for_seed(seed)``."""

    def fn(gt: GroundTruth, seed: int) -> list[float]:
        return _score_with(ctx_for_seed(seed), name, dict(options or {}), gt.archs)

    return fn


def _score_with(ctx: Any, name: str, options: dict[str, Any], archs: Sequence[Architecture]) -> list[float]:
    """Scores of ``archs`` by evaluator ``name`` built in ``ctx``, signed so that higher = better."""
    ev = ctx.registry.get("evaluator", name).build(options, ctx)
    sign = 1.0 if getattr(ev, "higher_is_better", True) else -1.0
    return [sign * float(r[ev.metric]) for r in ev.score(archs, ctx)]


def run_scorer(run_dirs: Sequence[Path], evaluator: str | None = None,
               options: Mapping[str, Any] | None = None) -> tuple[Scorer, list[str]]:
    """Score with the trained supernet of each run folder (one folder per seed).

    The evaluator is ``evaluator`` if given, else the one the run's first search stage configured,
    else ``accuracy``; the run's space must be the bed's.
    """
    from nascore.pipeline.run import resume_run

    labels: list[str] = []
    ctxs = []
    for d in run_dirs:
        d = Path(d)
        ctx = resume_run(d, quiet=True)
        ctx.stage_key = "rank"
        ctxs.append(ctx)
        labels.append(str(d))

    def pick(ctx: Any) -> tuple[str, dict[str, Any]]:
        if evaluator is not None:
            return evaluator, dict(options or {})
        from nascore.pipeline.stages import iter_stages

        for key, st, _ in iter_stages(ctx.cfg.stages):
            ev = getattr(st, "evaluator", None)
            if ev is not None:
                return ev.name, dict(ctx.options.get(f"stages.{key}.evaluator") or ev.options or {})
        return "accuracy", {}

    def fn(gt: GroundTruth, seed: int) -> list[float]:
        ctx = ctxs[seed % len(ctxs)]
        if ctx.base_space.name != gt.space.name or ctx.base_space.decisions != gt.space.decisions:
            raise NascoreError(f"run {labels[seed % len(ctxs)]} searched space {ctx.base_space.name!r}, "
                               f"not the bed's {gt.space.name!r}", hint=f"rank it against its own bed: nascore rank {ctx.base_space.name} --run DIR")
        name, opts = pick(ctx)
        return _score_with(ctx, name, opts, gt.archs)

    return fn, labels


# -- the protocol -----------------------------------------------------------------------------
@attrs.define
class RankRow:
    label: str
    kind: str  # "subject" | "baseline" | "noise"
    per_seed: list[dict[str, float]]
    seconds: float = 0.0
    error: str | None = None
    first_scores: list[float] | None = None  # the first seed's scores, for the scatter plot

    def mean(self, key: str) -> tuple[float, float, int]:
        vals = [r[key] for r in self.per_seed if not math.isnan(r.get(key, math.nan))]
        if not vals:
            return math.nan, math.nan, 0
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def rank(gt: GroundTruth, subjects: Sequence[tuple[str, Scorer, int]], baselines: Sequence[tuple[str, Scorer]],
         seeds: Sequence[int] = (0, 1, 2), *, top_frac: float = 0.1, brackets: int = 5,
         progress: Callable[[str], None] | None = None) -> list[RankRow]:
    """Score every subject (``(label, scorer, n_seeds)``) and baseline over ``seeds``; one row each,
    then the noise ceiling. Failures are recorded in the row (one broken scorer never hides the rest)."""
    kw = {"top_frac": top_frac, "brackets": brackets}
    out: list[RankRow] = []
    jobs = [(label, fn, list(seeds)[:n], "subject") for label, fn, n in subjects]
    jobs += [(label, fn, list(seeds), "baseline") for label, fn in baselines]
    for label, fn, sds, kind in jobs:
        row = RankRow(label, kind, [])
        t0 = time.perf_counter()
        for s in sds:
            try:
                scores = fn(gt, s)
            except NascoreError as e:
                row.error = str(e.args[0]) if e.args else type(e).__name__
                break
            except Exception as e:  # noqa: BLE001 - a broken scorer is reported in its row
                row.error = f"{type(e).__name__}: {e}"
                break
            if len(scores) != len(gt.archs):
                row.error = f"scored {len(scores)} of {len(gt.archs)} architectures"
                break
            if row.first_scores is None:
                row.first_scores = [float(v) for v in scores]
            row.per_seed.append(rank_metrics(scores, gt.truth, gt.macs, **kw))
        row.seconds = time.perf_counter() - t0
        out.append(row)
        if progress is not None:
            progress(f"{label}: τ {_fmt(row, 'tau')}" + (f"  ERROR {row.error}" if row.error else ""))
    if len(gt.per_seed) > 1:
        label = ("noise ceiling (seed vs seed)" if gt.bed != "nb201" else "12-epoch val table vs truth")
        out.append(RankRow(label, "noise", gt.noise_rows(**kw)))
    return out


def _fmt(row: RankRow, key: str) -> str:
    m, sd, n = row.mean(key)
    if n == 0:
        return "const" if row.per_seed and key not in ("tau_bracket",) else "n/a"
    return f"{m:+.2f}" + (f" ± {sd:.2f}" if n > 1 else "")


def default_baselines(registry: Any, ctx_for_seed: Callable[[int], Any], names: Sequence[str] | None = None,
                      ) -> tuple[list[tuple[str, Scorer]], list[str]]:
    """``params``, ``macs`` and every installed zero-cost proxy (or exactly ``names``); and the
    names asked for that are not installed."""
    have = registry.components["evaluator"]
    wanted = list(names) if names is not None else ["params", "macs", *ZERO_COST]
    rows, missing = [], []
    for n in wanted:
        if n in have:
            rows.append((f"baseline: {n}", evaluator_scorer(n, ctx_for_seed=ctx_for_seed)))
        elif names is not None or n in ("params", "macs"):
            missing.append(n)
    return rows, missing


def protocol_text(gt: GroundTruth, seeds: Sequence[int], top_frac: float, brackets: int) -> str:
    return (f"protocol: {len(gt.archs)} architectures of {gt.space.name} ({gt.description}); "
            f"scorers higher = better, seeds {list(seeds)} (init/sampling seeds of proxies; one per run folder); "
            f"τ top = among the true top {top_frac:.0%} ({max(2, round(top_frac * len(gt.archs)))} archs); "
            f"P@k = share of the scorer's k best among the true k best; brackets = {brackets} equal-count MACs bins"
            + ("" if len(set(gt.macs)) > 1 else " (all archs cost the same here: one bracket)"))


def format_table(rows: Sequence[RankRow]) -> str:
    header = ("scorer", *(HEADERS[m] for m in METRICS), "seeds", "s")
    table = [header]
    for r in rows:
        if r.error:
            table.append((r.label, f"ERROR: {r.error}", *([""] * (len(header) - 2))))
            continue
        table.append((r.label, *(_fmt(r, m) for m in METRICS), str(len(r.per_seed)),
                      f"{r.seconds:.0f}" if r.kind != "noise" else ""))
    widths = [max(len(t[i]) for t in table if not (t[1].startswith("ERROR") and i > 1)) for i in range(len(header))]
    lines = []
    for i, t in enumerate(table):
        if t[1].startswith("ERROR"):
            lines.append(f"{t[0].ljust(widths[0])}  {t[1]}")
        else:
            lines.append("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def to_json(gt: GroundTruth, rows: Sequence[RankRow], protocol: str, seeds: Sequence[int]) -> dict[str, Any]:
    def clean(v: float) -> float | None:
        return None if isinstance(v, float) and math.isnan(v) else v

    return {
        "bed": gt.bed, "space": gt.space.name, "dataset": gt.dataset, "num_archs": len(gt.archs),
        "protocol": protocol, "seeds": list(seeds),
        "rows": [{
            "label": r.label, "kind": r.kind, "error": r.error, "seconds": round(r.seconds, 2),
            "mean": {m: clean(r.mean(m)[0]) for m in METRICS},
            "sd": {m: clean(r.mean(m)[1]) for m in METRICS},
            "per_seed": [{k: clean(v) for k, v in p.items()} for p in r.per_seed],
        } for r in rows],
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    from nascore.io import write_text

    write_text(Path(path), json.dumps(payload, indent=1, allow_nan=False) + "\n")


def parse_options(text: str | None, what: str) -> dict[str, Any]:
    """``--options '{"k": 1}'`` as a dict, with an error naming the flag."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError([f"{what}: not JSON ({e.msg} at column {e.colno})"], source=what) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{what}: expected a JSON object, got {type(data).__name__}"], source=what)
    return data


def plot(gt: GroundTruth, rows: Sequence[RankRow], path: Path) -> Path:
    """Scatter of each scorer's (first seed) scores against the true accuracy, one panel per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.first_scores is not None]
    if not shown:
        raise NascoreError("nothing to plot: every scorer failed")
    cols = min(4, len(shown))
    nrows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows), squeeze=False)
    for ax, r in zip(axes.flat, shown):
        ax.scatter(r.first_scores, gt.truth, s=8, alpha=0.7)
        ax.set_title(f"{r.label}\nτ {_fmt(r, 'tau')}", fontsize=8)
        ax.set_xlabel("score", fontsize=7)
        ax.set_ylabel("true accuracy (%)", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle(f"{gt.bed}: {len(gt.archs)} architectures", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
