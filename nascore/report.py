"""What a person reads after a run: the summary table, plots, a self-contained HTML report, a comparison.

Everything is derived from the run folder (``metrics.jsonl``, ``results.json``, ``state.json``,
``config.yaml``), so it works for any plugin's run, for a finished run or one still going, and can
be regenerated at any time. Every file is read through the run folder's validated readers: a damaged
``results.json`` is replaced by what ``state.json`` says (with a warning), damaged log lines are
skipped (with a warning), and a damaged ``config.yaml`` or ``state.json`` is an error naming the file.
"""

from __future__ import annotations

import base64
import html
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from nascore.config import SearchStage, TrainStage
from nascore.cost import human
from nascore.errors import CheckpointError
from nascore.io import atomic_write, write_text
from nascore.pipeline import metrics as _metrics
from nascore.pipeline import runfolder
from nascore.pipeline.stages import iter_stages, stage_name


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The valid records of ``metrics.jsonl``; lines cut by a kill or damaged are skipped (with a warning)."""
    return _metrics.read_metrics(Path(run_dir) / "metrics.jsonl")


def read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(config, results, state) of a run folder as the report shows them, each validated.

    A damaged ``config.yaml`` or ``state.json`` is a CheckpointError naming the file (nothing to fall
    back to); a damaged or missing ``results.json`` is rebuilt from ``state.json`` with a warning.
    """
    run_dir = Path(run_dir)
    config = runfolder.load_run_config(run_dir)
    saved = runfolder.read_state(run_dir)
    state = saved[0] if saved is not None else {}
    try:
        results = runfolder.read_results(run_dir)
    except CheckpointError as e:
        if saved is None:
            raise
        print(f"nascore: warning: {str(e).splitlines()[0]}; showing what state.json holds instead", file=sys.stderr)
        results = None
    if results is None:
        results = runfolder.results_from_state(state, config) if saved is not None else {}
    return config, results, state


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (lower cost, higher score), sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_labels(fig: Any) -> list[str]:
    """Every legend entry of ``fig``, as drawn (what a reader can identify each line by)."""
    return [t.get_text() for ax in fig.axes if ax.get_legend() is not None for t in ax.get_legend().get_texts()]


def _save(fig: Any, path: Path) -> Path:
    """PNG of ``fig``; its legend entries go into the file's Description text chunk too (checked by tests)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight",
                metadata={"Description": "\n".join(_legend_labels(fig))})
    _plt().close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def make_plots(run_dir: Path, results: dict[str, Any] | None = None) -> list[Path]:
    """Write plots/*.png for whatever the run logged; returns the files written."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    if results is None:
        results = read_run(run_dir)[1]
    out_dir = run_dir / "plots"
    plt = _plt()
    written: list[Path] = []

    cands = [m for m in metrics if m.get("kind") == "candidate"
             and isinstance(m.get("macs"), (int, float)) and isinstance(m.get("score"), (int, float))]
    if cands:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        xs = [c["macs"] for c in cands]
        ys = [c["score"] for c in cands]
        ax.scatter(xs, ys, s=12, alpha=0.45, label=f"evaluated ({len(cands)})")
        front = pareto_front(list(zip(xs, ys)))
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "-o", color="C3", ms=4, label="Pareto front")
        chosen = (results.get("candidates") or [None])[0]
        if chosen and isinstance(chosen.get("score"), (int, float)):
            import textwrap

            arch = "\n".join(textwrap.wrap(chosen["arch"], 64, break_on_hyphens=False)) or chosen["arch"]
            ax.scatter([chosen["macs"]], [chosen["score"]], marker="*", s=220, color="gold", edgecolor="k",
                       zorder=5, label=f"chosen: {arch}")  # whole: a truncated string names another architecture
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
        ax.set_xlabel("MACs (fvcore)")
        ax.set_ylabel("score")
        ax.set_title("candidates: score vs MACs")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
        ax.grid(alpha=0.3)
        written.append(_save(fig, out_dir / "pareto.png"))

        by_stage: dict[str, list[float]] = defaultdict(list)
        for c in cands:
            by_stage[str(c.get("stage", "?"))].append(c["score"])
        gens = generation_curves(metrics)
        fig, axes = plt.subplots(1, 2 if gens else 1, figsize=(11 if gens else 6.4, 3.6), squeeze=False)
        ax = axes[0][-1]
        for stage, scores in by_stage.items():
            best, curve = float("-inf"), []
            for s in scores:
                best = max(best, s)
                curve.append(best)
            ax.plot(range(1, len(curve) + 1), curve, label=f"stage {stage} best so far")
            ax.scatter(range(1, len(scores) + 1), scores, s=6, alpha=0.3)
        ax.set_xlabel("candidates evaluated")
        ax.set_ylabel("score")
        ax.set_title("search progress per candidate")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        if gens:
            ax = axes[0][0]
            for (stage, unit), rows in gens.items():
                xs = [r[0] for r in rows]
                line, = ax.plot(xs, [r[1] for r in rows], "-o", ms=3, label=f"stage {stage}: best of the generation")
                if any(r[2] is not None for r in rows):
                    ax.plot([x for x, r in zip(xs, rows) if r[2] is not None], [r[2] for r in rows if r[2] is not None],
                            "--", color=line.get_color(), alpha=0.7, label=f"stage {stage}: mean of the generation")
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(" / ".join(sorted({unit for _, unit in gens})))
            ax.set_ylabel("score")
            ax.set_title("search progress per generation")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        written.append(_save(fig, out_dir / "search.png"))

    train = [m for m in metrics if m.get("kind") == "train" and "loss" in m]
    if train:
        fig, ax = plt.subplots(figsize=(10, 4.6))  # full page width (figure.wide)
        stages: dict[str, list[dict]] = defaultdict(list)
        for m in train:
            stages[str(m.get("stage", "?"))].append(m)
        for stage, ms in stages.items():
            ax.plot([m["step"] for m in ms], [m["loss"] for m in ms], label=f"loss (stage {stage})")
        ax2 = ax.twinx()
        for stage, ms in stages.items():
            accs = [(m["step"], m["acc"]) for m in ms if isinstance(m.get("acc"), (int, float))]
            if accs:
                ax2.plot(*zip(*accs), "--", alpha=0.6, label=f"batch acc (stage {stage})")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax2.set_ylabel("batch accuracy")
        ax.set_title("supernet training")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()  # the accuracy lines live on the twin axis: one legend for all
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")
        ax.grid(alpha=0.3)
        written.append(_save(fig, out_dir / "training.png"))

    if (retrain_png := _retrain_plot(metrics, out_dir)) is not None:
        written.append(retrain_png)

    spaces = [m for m in metrics if m.get("event") == "space" and m.get("allowed")]
    if spaces and (space_png := _space_plot(run_dir, spaces, out_dir)) is not None:
        written.append(space_png)
    return written


def _retrain_plot(metrics: list[dict[str, Any]], out_dir: Path) -> Path | None:
    """Training loss of each retrained architecture (every ``log_every`` steps), with its test accuracy."""
    steps: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for m in metrics:
        if m.get("kind") == "retrain_step" and isinstance(m.get("loss"), (int, float)) and isinstance(m.get("step"), int):
            steps[int(m.get("index", 0))].append((m["step"], float(m["loss"])))
    if not steps:
        return None
    results = {int(m.get("index", 0)): m for m in metrics if m.get("kind") == "retrain_result"}
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.0))
    for index, pts in sorted(steps.items()):
        r = results.get(index, {})
        acc = r.get("test_acc")
        tail = (f" — {r.get('split', 'test')} accuracy {100 * acc:.2f}% after {r.get('epochs')} epoch(s)"
                if isinstance(acc, (int, float)) else " (still training)")
        ax.plot(*zip(*sorted(pts)), "-", marker="o" if len(pts) < 20 else None, ms=3,
                label=f"retrain #{index}: training loss{tail}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (batch)")
    ax.set_title("retraining the chosen architectures")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    return _save(fig, out_dir / "retrain.png")


def generation_curves(metrics: list[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[int, float, float | None]]]:
    """(stage, unit) -> [(generation, best, mean)] from the per-generation records evolution selectors
    log (``generation``, NEAS ``evolution``: per generation; ``rea``: every few cycles)."""
    out: dict[tuple[str, str], list[tuple[int, float, float | None]]] = defaultdict(list)
    for m in metrics:
        unit = "generation" if "generation" in m else "cycle" if "cycle" in m else None
        if m.get("kind") == "event" or unit is None or not isinstance(m.get("best"), (int, float)):
            continue
        mean = m.get("mean")
        out[(str(m.get("stage", "?")), unit)].append(
            (int(m[unit]), float(m["best"]), float(mean) if isinstance(mean, (int, float)) else None))
    return dict(out)


def space_snapshots(metrics: list[dict[str, Any]]) -> list[tuple[str, list[list[str]]]]:
    """(label, allowed ops per decision) for each change of the search space, oldest first.

    The pipeline logs the space at the start and after every stage that changes it; shrinking
    selectors may log each of their rounds (``event: space, round: r``). Repeats are dropped.
    """
    out: list[tuple[str, list[list[str]]]] = []
    for m in metrics:
        if m.get("event") != "space" or not m.get("allowed"):
            continue
        allowed = [sorted(a) for a in m["allowed"]]
        if out and out[-1][1] == allowed:
            continue
        stage = m.get("stage")
        parts = str(stage).split(".")
        label = ("start" if stage == "setup" else f"stage {stage}" + (f", round {m['round']}" if "round" in m else "")
                 + (f" (loop round {parts[-2]})" if len(parts) >= 3 else ""))
        out.append((label, allowed))
    return out


def _space_plot(run_dir: Path, spaces: list[dict], out_dir: Path) -> Path | None:
    """Which ops survived each shrinking round: decisions × ops, coloured by the last space holding them."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    snaps = space_snapshots(spaces)
    if len(snaps) < 2:
        return None  # the space never changed: nothing to show
    plt = _plt()
    config = _config(run_dir)
    n_dec = max(len(a) for _, a in snaps)
    ops = sorted({o for _, allowed in snaps for a in allowed for o in a})
    last = np.full((n_dec, len(ops)), np.nan)
    for k, (_, allowed) in enumerate(snaps):
        for d, a in enumerate(allowed):
            for o in a:
                last[d, ops.index(o)] = k
    n = len(snaps)
    colors = [plt.get_cmap("viridis")(x) for x in np.linspace(0.05, 0.95, n)]
    cmap = ListedColormap(colors).with_extremes(bad="#e8e8e8")
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(ops) + 3), max(3, 0.26 * n_dec + 1.6)))
    im = ax.imshow(np.ma.masked_invalid(last), aspect="auto", cmap=cmap, vmin=-0.5, vmax=n - 0.5,
                   interpolation="nearest")
    ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n_dec), [str(i) for i in range(n_dec)], fontsize=6)
    ax.set_ylabel("decision (layer / edge)")
    ax.set_title(f"ops kept per round ({config.get('space', {}).get('name', '')}; grey: never in the space)",
                 fontsize=9)
    bar = fig.colorbar(im, ax=ax, ticks=range(n))
    bar.ax.set_yticklabels([f"dropped by {label}" for label, _ in snaps[1:]] + ["kept to the end"], fontsize=7)
    return _save(fig, out_dir / "space.png")


def _config(run_dir: Path) -> dict[str, Any]:
    return runfolder.load_run_config(run_dir) if (run_dir / "config.yaml").exists() else {}


def _stages(cfg: dict[str, Any], source: str = "config.yaml") -> list[tuple[str, Any, str | None]]:
    """(key, stage, loop key) of each leaf stage of a config dict, as the pipeline runs them."""
    from pydantic import TypeAdapter, ValidationError

    from nascore.config import Stage

    try:
        return list(iter_stages(TypeAdapter(list[Stage]).validate_python(cfg.get("stages", []))))
    except ValidationError as e:
        raise CheckpointError(f"{source}: malformed stages ({runfolder.problems(e)})",
                              hint="the file is damaged; restore it or start a new run") from None


def stage_names(cfg: dict[str, Any]) -> dict[str, str]:
    """Stage key (as in state.json's timings) -> readable name, loops unrolled like the pipeline does."""
    return {key: stage_name(st) for key, st, _ in _stages(cfg)}


def _g(v: Any) -> str:
    """A score as the tables show it (``nan`` for a non-finite one, stored as null)."""
    return f"{v:.4g}" if isinstance(v, (int, float)) else "nan"


def _img(path: Path) -> str:
    raw = path.read_bytes()
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")  # PNG IHDR
    wide = ' class="wide"' if width > 1.8 * max(height, 1) else ""
    data = base64.b64encode(raw).decode()
    return (f'<figure{wide}><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{html.escape(path.stem)}</figcaption></figure>')


def _retrained_banner(chosen: dict[str, Any]) -> str:
    """The chosen architecture's retrained accuracy for the report's banner (or why there is none)."""
    if not chosen:
        return ""
    r = chosen.get("retrain") or {}
    if isinstance(r.get("test_acc"), (int, float)):
        how = "fine-tuned from the supernet" if r.get("inherit") else "trained from scratch"
        return (f'<br><span id="retrained">retrained: <b>{100 * r["test_acc"]:.2f}%</b> {html.escape(str(r.get("split", "test")))} '
                f'accuracy ({how}, {r.get("epochs")} epoch(s))</span>')
    return '<br><span id="retrained">not retrained (add a retrain stage for its accuracy trained on its own)</span>'


def write_report(run_dir: Path) -> Path:
    """One self-contained HTML page (plots inline) that opens from disk with no server."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml)")
    config, results, state = read_run(run_dir)
    stage_rows = _stages(config, str(run_dir / "config.yaml"))
    core = make_plots(run_dir, results)
    # then whatever plugins drew into plots/ (NSE's per-round fronts, ...), by name
    plots = core + sorted(set((run_dir / "plots").glob("*.png")) - set(core)) if (run_dir / "plots").exists() else core
    from nascore.io import read_text_verified

    config_text = read_text_verified(run_dir / "config.yaml")
    rows = []
    for i, c in enumerate(results.get("candidates", [])):
        r = c.get("retrain") or {}
        acc = f"{100 * r['test_acc']:.2f}%" if isinstance(r.get("test_acc"), (int, float)) else "–"
        rows.append(
            f"<tr><td>{i}</td><td class=arch>{html.escape(c['arch'])}</td><td>{_g(c['score'])}</td>"
            f"<td>{human(c['macs'])}</td><td>{human(c['params'])}</td><td>{_latency_cell(c)}</td><td>{acc}</td>"
            f"<td>{html.escape(c.get('origin', ''))}</td></tr>"
        )
    times, loops_done = state.get("timings", {}), state.get("loop_done", {})

    def when(key: str, loop_key: str | None) -> str:
        if key in times:
            return f"{times[key]:.1f} s"
        return "skipped (loop ended early)" if loop_key is not None and loops_done.get(loop_key) else "pending"

    timings = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(stage_name(st))}</td><td>{when(k, loop)}</td></tr>"
                      for k, st, loop in stage_rows)
    chosen = results.get("candidates", [{}])[0] if results.get("candidates") else {}
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nascore run {html.escape(str(results.get('run', run_dir.name)))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }}
th {{ background: #f3f3f3; }} td.arch {{ font-family: monospace; font-size: .85rem; }}
figure {{ display: inline-block; margin: .5rem; vertical-align: top; }} img {{ max-width: 470px; }}
figure.wide {{ display: block; }} figure.wide img {{ max-width: 100%; }}
pre {{ background: #f7f7f7; padding: 1rem; overflow-x: auto; font-size: .8rem; }}
.chosen {{ font-size: 1.1rem; padding: .8rem; background: #fff8dc; border: 1px solid #e5d28a; }}
</style></head><body>
<h1>nascore run: {html.escape(str(results.get('run', run_dir.name)))}</h1>
<p>space <b>{html.escape(str(results.get('space', '')))}</b> · dataset <b>{html.escape(str(results.get('dataset', '')))}</b> ·
constraint {html.escape(str(results.get('constraint', '')))} · MACs and params counted by fvcore (one multiply-add = 1)</p>
<p class="chosen" id="chosen">Chosen architecture: <code>{html.escape(chosen.get('arch', '(none yet)'))}</code>
{f"— score {_g(chosen['score'])}, {human(chosen['macs'])} MACs, {human(chosen['params'])} params" if chosen else ''}
{_retrained_banner(chosen)}</p>
<h2>Candidates</h2>
<table><tr><th>#</th><th>architecture</th><th>score</th><th>MACs</th><th>params</th><th>latency ms (predicted / measured)</th><th>retrained acc</th><th>origin</th></tr>
{''.join(rows)}</table>
<h2>Plots</h2>
{''.join(_img(p) for p in plots) or '<p>nothing logged yet</p>'}
<h2>Timings</h2><table><tr><th>stage</th><th>what</th><th>time</th></tr>{timings}</table>
<h2>Resolved config</h2>
<details><summary>config.yaml: every option, defaults filled in (<code>nascore run</code> this file to repeat the run)</summary>
<pre>{html.escape(config_text)}</pre></details>
</body></html>
"""
    out = run_dir / "report.html"
    write_text(out, page)
    return out


def compare(run_dirs: list[Path]) -> str:
    """Several runs side by side: method, best architecture, score, retrained accuracy, costs, times.

    "method" is the run's trainers and selectors as configured (``spos+evolution``); "search" is the
    time spent in search/shrink stages, "total" the time of every stage so far.
    """
    rows = [("run", "method", "best architecture", "score", "retrained", "MACs", "params", "latency ms", "train", "search",
             "total")]
    labels, smoke = run_labels(run_dirs), []
    metric_names: set[str] = set()
    for d in run_dirs:
        d = Path(d)
        if not (d / "config.yaml").exists():
            raise CheckpointError(f"{d} is not a run folder (no config.yaml)",
                                  hint="pass folders that `nascore run` wrote, e.g. runs/spos")
        cfg, results, state = read_run(d)
        stages, times = {k: st for k, st, _ in _stages(cfg, str(d / "config.yaml"))}, state.get("timings", {})
        trainers = [st.trainer.name for st in stages.values() if isinstance(st, TrainStage)]
        selectors = [st.selector.name for st in stages.values() if isinstance(st, SearchStage)]
        method = "+".join(dict.fromkeys(trainers + selectors)) or "-"

        def spent(kind: type) -> str:
            return f"{sum(t for k, t in times.items() if isinstance(stages.get(k), kind)):.0f} s"

        best = (results.get("candidates") or [None])[0]
        r = (best or {}).get("retrain") or {}
        if state.get("smoke"):
            smoke.append(labels[str(d)])
        rows.append((
            labels[str(d)] + (" [smoke]" if state.get("smoke") else ""), method, best["arch"] if best else "-",
            _score_cell(best, metric_names) if best else "-",
            f"{100 * r['test_acc']:.2f}%" if isinstance(r.get("test_acc"), (int, float)) else "-",
            human(best["macs"]) if best else "-", human(best["params"]) if best else "-",
            _latency_cell(best, "-") if best else "-",
            spent(TrainStage), spent(SearchStage), f"{sum(times.values()):.0f} s",
        ))
    if all(row[7] == "-" for row in rows[1:]):  # no run has a latency table: keep the MACs-only layout
        rows = [row[:7] + row[8:] for row in rows]
    widths = [max(len(str(row[j])) for row in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(metric_names) > 1:
        lines.append(f"note: the scores come from different metrics ({', '.join(sorted(metric_names))}) and are not "
                     "comparable across those runs; compare the retrained accuracy")
    if smoke:
        lines.append(f"note: [smoke] runs ({', '.join(smoke)}) ran with a minimal budget: their numbers are not results")
    return "\n".join(lines)


def run_labels(run_dirs: list[Path]) -> dict[str, str]:
    """Each run folder's label: its name, with as many parent folders as it takes to tell runs apart."""
    paths = [Path(d).resolve() for d in run_dirs]
    depth = 1
    while True:
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels) or depth >= max(len(p.parts) for p in paths):
            break
        depth += 1
    seen: dict[str, int] = {}
    out = {}
    for d, label in zip(run_dirs, labels):
        seen[label] = seen.get(label, 0) + 1
        out[str(Path(d))] = label if seen[label] == 1 else f"{label} ({seen[label]})"  # the same folder twice
    return out


def _score_cell(cand: dict[str, Any], names: set[str]) -> str:
    """The score with the metric it is (accuracies in %, like the retrained column); adds the metric to ``names``."""
    score, metrics = cand.get("score"), cand.get("metrics") or {}
    if not isinstance(score, (int, float)):
        return "nan"
    name = next((k for k, v in metrics.items() if isinstance(v, (int, float)) and abs(abs(v) - abs(score)) <= 1e-12), None)
    names.add(name or "score")
    if name in ("acc", "accuracy", "top1") and 0 <= score <= 1:
        return f"{100 * score:.2f}% {name}"
    return f"{score:.4g} {name}" if name else f"{score:.4g}"


def summary_table(ctx: Any, top: int = 5) -> str:
    """The final table a person reads: rank, architecture, score, MACs, params, (predicted latency,)
    retrain accuracy."""
    retrain = ctx.state.get("retrain", {})
    lat = getattr(ctx.cost, "latency_ms", None) if getattr(ctx, "latency_table_path", None) else None
    rows = [("#", "architecture", "score", "MACs", "params", *(("latency ms",) if lat else ()), "retrained acc", "origin")]
    for i, c in enumerate(ctx.candidates[:top]):
        r = retrain.get(c.arch_str) or {}
        acc = f"{100 * r['test_acc']:.2f}%" if isinstance(r.get("test_acc"), (int, float)) else "-"
        extra = (f"{lat(c.arch):.3f}",) if lat else ()
        rows.append((str(i), c.arch_str, f"{c.score:.4g}", human(c.macs), human(c.params), *extra, acc, c.origin))
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _latency_cell(c: dict, missing: str = "–") -> str:
    """``predicted / measured`` latency (ms) of a results.json candidate, whichever it has."""
    pred = c.get("latency_ms")
    got = c.get("latency_measured") or {}
    meas = got.get("measured_ms", got.get("median_ms"))
    if pred is None and meas is None:
        return missing
    p = f"{pred:.3f}" if isinstance(pred, (int, float)) else "–"
    return p + (f" / {meas:.3f}" if isinstance(meas, (int, float)) else "")
