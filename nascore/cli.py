"""The ``nascore`` command line.

Every verb validates its input first and reports a problem as one readable message (exit 2);
tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from nascore._version import __version__
from nascore.errors import NascoreError

EPILOG = """examples:
  nascore run spos                       run a shipped recipe (see `nascore recipes`)
  nascore run my.yaml --set seed=1 --out runs/a
  nascore run spos --smoke               every stage with a minimal budget (seconds)
  nascore resume runs/a                  continue an interrupted run
  nascore export runs/a --format onnx    standalone model of the chosen architecture
  nascore plugins                        what is installed, and what failed to load
docs: docs/index.md"""


SAMPLE_MAX = 100_000
"""Most architectures ``nascore sample`` prints in one call (a huge ``-n`` would never finish)."""
INPUT_MAX = (64, 2048, 2048)
"""Largest ``--input`` CxHxW ``cost``/``sample`` accept (a space is built and traced at that size)."""


def _int_arg(lo: int | None = None, hi: int | None = None) -> Any:
    """An argparse type: an integer in [lo, hi]; anything else is a usage error naming the flag."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                f"{text[:30]!r} is out of range: use {lo if lo is not None else '…'} to {hi if hi is not None else '…'}")
        return v

    return parse


def _float_arg(lo: float, hi: float, lo_open: bool = False) -> Any:
    """An argparse type: a finite number in [lo, hi] (``(lo, hi]`` with ``lo_open``)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
            raise argparse.ArgumentTypeError(f"{text[:30]!r} is out of range: use {'more than ' if lo_open else ''}{lo:g} to {hi:g}")
        return v

    return parse


def _registry() -> Any:
    from nascore.registry import get_registry

    return get_registry()


# -- run / resume (through nascore.api, which a notebook uses the same way) ------------------------
def _init_distributed() -> None:
    """Join the torch.distributed job when launched by torchrun (no-op otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    from nascore.pipeline.distributed import join_process_group

    join_process_group()


def _set_threads() -> None:
    import torch

    if "OMP_NUM_THREADS" not in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.set_num_threads(1)


def cmd_run(args: argparse.Namespace) -> int:
    from nascore import api
    from nascore.pipeline.run import run_pipeline
    from nascore.report import summary_table

    _set_threads()
    _init_distributed()
    t0 = time.time()
    ctx = api.start(args.config, overrides=args.set or [], out=args.out, smoke=args.smoke, quiet=args.quiet,
                    overwrite=args.overwrite)
    return _finish(ctx, run_pipeline, summary_table, t0, args)


def cmd_resume(args: argparse.Namespace) -> int:
    from nascore import api
    from nascore.pipeline.run import run_pipeline
    from nascore.report import summary_table

    _set_threads()
    _init_distributed()
    t0 = time.time()
    finished = _finished_on_disk(Path(args.run_dir))  # then only read back: no TensorBoard writer, nothing written
    ctx = api.resume_context(Path(args.run_dir), quiet=args.quiet, export_only=finished)
    return _finish(ctx, run_pipeline, summary_table, t0, args)


def _finished_on_disk(run_dir: Path) -> bool:
    """Whether state.json says every stage of config.yaml ran (False when unsure: resume then says why)."""
    try:
        from pydantic import TypeAdapter

        from nascore.config import Stage
        from nascore.pipeline import runfolder
        from nascore.pipeline.stages import iter_stages

        saved = runfolder.read_state(run_dir)
        if saved is None:
            return False
        stages = TypeAdapter(list[Stage]).validate_python(runfolder.load_run_config(run_dir).get("stages", []))
    except Exception:  # noqa: BLE001 - the resume itself reports a damaged folder
        return False
    done, loops = set(saved[0].get("completed", [])), saved[0].get("loop_done", {})
    return bool(done) and all(k in done or bool(loop and loops.get(loop)) for k, _, loop in iter_stages(stages))


def _pending_stages(ctx: Any) -> list[str]:
    """Keys of the stages of ``ctx``'s run that have not run yet (loop rounds a loop skipped count as done)."""
    from nascore.pipeline.stages import iter_stages

    done, loops = set(ctx.state.get("completed", [])), ctx.state.get("loop_done", {})
    return [k for k, _, loop in iter_stages(ctx.cfg.stages) if k not in done and not (loop and loops.get(loop))]


def _finished_earlier(ctx: Any) -> None:
    """What `nascore resume` prints for a run that had already finished: its results and its own times."""
    from nascore.pipeline.stages import iter_stages, stage_name
    from nascore.report import summary_table

    times = ctx.state.get("timings", {})
    names = {k: stage_name(st) for k, st, _ in iter_stages(ctx.cfg.stages)}
    print(f"nascore: {ctx.run_dir} had already finished; nothing to run (the times below are the original run's)",
          file=sys.stderr)
    print(f"run folder: {ctx.run_dir}   (finished earlier; its stages took {sum(times.values()):.1f} s)")
    for k, t in times.items():
        print(f"  [{k}] {names.get(k, '?'):<28} {t:>9.1f} s")
    if (ctx.run_dir / "report.html").exists():
        print(f"report: {ctx.run_dir / 'report.html'}   (nascore report {ctx.run_dir} rewrites it)")
    print(f"space: {ctx.space.describe()}   constraint: {ctx.constraint.describe()}   (MACs counted by fvcore)")
    print(summary_table(ctx) if ctx.candidates else "no candidates (the run had no search stage)")


def _finish(ctx: Any, run_pipeline: Any, summary_table: Any, t0: float, args: argparse.Namespace) -> int:
    if ctx.run_dir is not None and (ctx.state.get("completed") and not _pending_stages(ctx)):
        ctx.close()
        if ctx.dist.is_main:
            _finished_earlier(ctx)
        return 0
    try:
        run_pipeline(ctx)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: nascore resume {ctx.run_dir}", file=sys.stderr)
        return 130
    finally:
        ctx.close()
    report = None
    if ctx.dist.is_main and ctx.run_dir is not None:
        from nascore.report import write_report

        report = write_report(ctx.run_dir)  # plots/*.png and report.html, from the run folder alone
    if ctx.dist.is_main:
        print(f"run folder: {ctx.run_dir}   ({time.time() - t0:.1f} s)")
        if report is not None:
            print(f"report: {report}   (open in a browser; plots in {ctx.run_dir / 'plots'})")
        print(f"space: {ctx.space.describe()}   constraint: {ctx.constraint.describe()}   (MACs counted by fvcore)")
        if ctx.candidates:
            print(summary_table(ctx))
        else:
            print("no candidates (the run had no search stage)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nascore.pipeline.export import export_one, stage_defaults
    from nascore import api

    ctx = api.resume_context(Path(args.run_dir), export_only=True)
    try:  # unless told otherwise, what the run's own export stage writes
        formats = ["json", *args.format] if args.format else stage_defaults(ctx)[0]
        folder = export_one(ctx, args.arch, formats, bake_normalization=args.bake_normalization)
    finally:
        ctx.close()  # the folder is free again for a resume
    meta = json.loads((folder / "arch.json").read_text())
    print(f"exported #{args.arch} {meta['arch']} ({meta['weights']}) to {folder}: {', '.join(meta['files'])}")
    for k, v in meta.get("checks", {}).items():
        print(f"  {k}: {v:.2e}")
    pre = meta.get("preprocessing")
    if pre:
        how = ("normalisation baked into " + ", ".join(pre["baked_into"]) if pre["baked_into"]
               else f"feed (pad(raw) / {pre['scale']:g} - mean {pre['mean']}) / std {pre['std']}")
        print(f"  input {'x'.join(map(str, meta['input_shape']))}: {pre['raw']}; {how} (arch.json: preprocessing)")
    return 0


# -- inspection ----------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from nascore.report import write_report

    out = write_report(Path(args.run_dir))
    print(f"wrote {out} (open it in a browser; it needs no server)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from nascore.report import compare

    print(compare([Path(d) for d in args.run_dirs]))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    reg = _registry()
    rows = []
    for p in reg.plugins:
        rows.append({"plugin": p.name, "distribution": p.dist, "version": p.version, "status": "ok",
                     "builtin": p.builtin, "components": reg.by_plugin(p.name)})
    for f in reg.failures:
        rows.append({"plugin": f.plugin, "distribution": f.dist, "version": f.version, "status": "failed",
                     "phase": f.phase, "error": f.error, "components": {}})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        dists: dict[str, dict[str, Any]] = {}
        for r in rows:
            d = dists.setdefault(r["distribution"], {"version": r["version"], "status": r["status"], "components": {}, "errors": []})
            if r["status"] == "failed":
                d["status"] = "failed"
                d["errors"].append(f"{r['plugin']}: {r['phase']}: {r['error']}")
            for role, names in r["components"].items():
                d["components"].setdefault(role, []).extend(names)
        for dist, d in dists.items():
            print(f"{dist} {d['version']}  [{d['status']}]")
            for role, names in sorted(d["components"].items()):
                print(f"    {role + 's':<11} {', '.join(sorted(names))}")
            for e in d["errors"]:
                print(f"    error: {e}")
        for _, dist, why in reg.skipped:
            print(f"{dist}  [disabled: {why}]")
    if args.strict and reg.failures:
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    reg = _registry()
    role = args.role.rstrip("s") if args.role != "spaces" else "space"
    if role not in reg.components:
        raise NascoreError(f"unknown role {args.role!r}", hint=f"one of: {', '.join(r + 's' for r in reg.components)}")
    for name in reg.names(role):
        c = reg.components[role][name]
        print(f"{name:<20} {c.dist:<16} {c.summary}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    reg = _registry()
    comp = reg.get(args.role, args.name)
    print(json.dumps(comp.config.model_json_schema(), indent=2))
    return 0


def _space(name: str, options: list[str] | None, input_shape: str | None) -> Any:
    """Space ``name`` built with a :class:`nascore.roles.SpaceContext` (mnist5k's shape unless ``--input``)."""
    from nascore import api

    shape = api.parse_shape(input_shape) if input_shape else api.DEFAULT_INPUT_SHAPE
    if any(v > m for v, m in zip(shape, INPUT_MAX)):
        raise NascoreError(f"--input {input_shape!r} is larger than {'x'.join(map(str, INPUT_MAX))}",
                           hint="the space is built and traced at this size; e.g. --input 3x224x224")
    return api.space(name, options or [], input_shape=shape, registry=_registry())


def columns(rows: list[tuple[str, ...]], right: frozenset[int] = frozenset()) -> str:
    """Rows as aligned text columns (widths from every row; columns in ``right`` right-aligned; last one free)."""
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [v.rjust(w) if j in right else v.ljust(w) for j, (v, w) in enumerate(zip(r[:-1], widths))]
        out.append("  ".join([*cells, r[-1]]).rstrip())
    return "\n".join(out)


def cmd_spaces(args: argparse.Namespace) -> int:
    from nascore.roles import SpaceContext

    reg = _registry()
    rows = [("space", "decisions", "architectures", "summary")]
    for name in reg.names("space"):
        c = reg.components["space"][name]
        try:
            space = c.build({}, SpaceContext(registry=reg))  # a factory always gets a context
            size = f"{space.size():,}" if space.size() < 10**12 else f"{float(space.size()):.2e}"
            rows.append((name, str(len(space.decisions)), size, c.summary))
        except Exception as e:  # noqa: BLE001 - one broken space must not hide the others
            rows.append((name, "-", "-", f"failed to build: {type(e).__name__}: {e}"))
    print(columns(rows, right=frozenset({1, 2})))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    space = _space(args.space, args.option, None)
    rng = random.Random(args.seed)
    for _ in range(args.n):
        print(space.format(space.sample(rng)))
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    from nascore.cost import check_table, human

    space = _space(args.space, args.option, args.input)
    arch = space.parse(args.arch)
    table = space.cost_table()
    macs, params = table.cost(arch)
    shape = "x".join(map(str, space.input_shape))
    print(f"{space.format(arch)}  input {shape}")
    print(f"  MACs   {macs:>14,}  ({human(macs)})   [cost table; fvcore counts 1 multiply-add = 1]")
    print(f"  params {params:>14,}  ({human(params)})")
    if args.check:
        row = check_table(space, [arch])[0]
        print(f"  fvcore MACs {row['fvcore_macs']:,}   child params {row['params']:,}   -> {'agree' if row['ok'] else 'DIFFER'}")
        return 0 if row["ok"] else 1
    return 0


def _tqdm_progress(desc: str, quiet: bool) -> Any:
    """A ``progress(done, total, what)`` callback drawing a tqdm bar on stderr."""
    from tqdm.auto import tqdm

    bar: dict[str, Any] = {}

    def progress(done: int, total: int, what: str) -> None:
        if quiet:
            return
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=desc, file=sys.stderr, mininterval=1.0, dynamic_ncols=True)
        b = bar["bar"]
        b.set_postfix_str(what[:40], refresh=False)
        b.update(done - b.n)
        if done >= total:
            b.close()

    return progress


def cmd_lut_build(args: argparse.Namespace) -> int:
    """``nascore lut build SPACE``: time every block of SPACE here and write the table file."""
    import torch
    from pydantic import ValidationError

    from nascore import latency
    from nascore.config import apply_overrides, format_pydantic
    from nascore.errors import ConfigError

    torch.set_num_threads(args.threads)
    comp = _registry().get("space", args.space)
    try:
        resolved = comp.config.model_validate(apply_overrides({}, args.option or [])).model_dump(mode="json")
    except ValidationError as e:
        raise ConfigError(format_pydantic(e, prefix="--option"), source="--option") from None
    space = _space(args.space, args.option, args.input)
    table = latency.build_table(
        space, space_name=args.space, space_options=resolved, backend=args.backend, batch=args.batch,
        threads=args.threads, warmup=args.warmup, repeats=args.repeats, references=args.references,
        device=args.device, progress=_tqdm_progress(f"lut {args.space}", args.quiet), estimator=args.estimator)
    out = Path(args.out or f"luts/{args.space}-{args.backend}-b{args.batch}-t{args.threads}.json")
    table.save(out)
    m = table.meta
    print(f"wrote {out}: {sum(len(b) for b in table.blocks)} blocks + fixed part, {table.describe()}")
    print(f"  fixed part {table.fixed_ms:.4f} ms (median over {len(m['fixed_references'])} reference children); "
          f"built in {m['build_seconds']:.1f} s")
    return 0


def cmd_lut_check(args: argparse.Namespace) -> int:
    """``nascore lut check TABLE``: measure random children end to end against the table."""
    import torch

    from nascore import latency
    from nascore.io import write_json

    table = latency.LatencyTable.load(args.table)
    m = table.meta
    torch.set_num_threads(int(m["threads"]))
    opts = [f"{k}={json.dumps(v)}" for k, v in m["space"].get("options", {}).items()]
    space = _space(m["space"]["name"], opts, "x".join(map(str, m["input_shape"])))
    result = latency.check(space, table, n=args.n, seed=args.seed, folds=args.folds, rounds=args.rounds,
                           progress=_tqdm_progress(f"lut check {m['space']['name']}", args.quiet))
    result["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["command"] = "nascore " + " ".join(sys.argv[1:]) if sys.argv else ""
    out = Path(args.out or Path(args.table).with_suffix(""))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "check.json", result)
    latency.plot_check(result, out / "check.png")
    print(f"{table.describe()}\n{result['n']} random children measured end to end "
          f"({m['backend']}, batch {m['batch']}, {m['threads']} thread(s)); fitted models scored out of fold "
          f"({result['folds']} folds); load average {', '.join(f'{v:.2f}' for v in result['load_average'] or [])}")
    print(latency.check_table_text(result))
    print(f"wrote {out / 'check.json'} and {out / 'check.png'}")
    if args.calibrate and result["calibration"]:
        cal = result["calibration"]
        calibrated = latency.LatencyTable.from_json({**table.to_json(), "calibration": cal}, source=str(args.table))
        calibrated.save(args.table)
        print(f"calibrated {args.table}: predicted = {cal['scale']:.4f} × Σ blocks + {cal['offset']:.4f} ms "
              f"({cal['model']}, fitted on {cal['fitted_on']} children)")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    reg = _registry()
    for name in reg.names("recipe"):
        c = reg.components["recipe"][name]
        print(f"{name:<16} {c.dist:<16} {c.summary}")
    return 0


# -- parser ----------------------------------------------------------------------------------------
def cmd_rank(args: argparse.Namespace) -> int:
    import torch

    from nascore import ranking

    if args.bed not in ranking.BEDS:
        from nascore.errors import UnknownComponent

        raise UnknownComponent(f"no ground truth {args.bed!r}", hint=f"beds: {', '.join(ranking.BEDS)}")
    if args.archs is not None and args.archs < 2:
        raise NascoreError(f"--archs {args.archs}: rank at least 2 architectures")
    if args.threads:
        torch.set_num_threads(args.threads)
    reg = _registry()
    ctx_for_seed = ranking.context_cache(args.bed, reg)

    gt = ranking.load_ground_truth(args.bed, ctx_for_seed(args.seeds[0]), sample=args.archs, seed=args.sample_seed)
    options = ranking.parse_options(args.options, "--options")
    subjects: list[tuple[str, Any, int]] = []
    if args.run:
        fn, labels = ranking.run_scorer([Path(d) for d in args.run], args.evaluator, options)
        what = args.evaluator or "its search evaluator"
        subjects.append((f"supernet ({what}): {', '.join(labels)}", fn, len(labels)))
    elif args.evaluator:
        subjects.append((args.evaluator, ranking.evaluator_scorer(args.evaluator, options, ctx_for_seed=ctx_for_seed),
                         len(args.seeds)))
    names = None if args.baselines is None else [b for b in args.baselines.split(",") if b and b != "none"]
    baselines, missing = ranking.default_baselines(reg, ctx_for_seed, names)
    if missing:
        raise NascoreError(f"--baselines: no evaluator {', '.join(map(repr, missing))}",
                           hint="see `nascore list evaluators`; zero-cost proxies come with pip install nascore-zerocost")
    protocol = ranking.protocol_text(gt, args.seeds, args.top, args.brackets)
    print(protocol, flush=True)
    if args.bed == "nb201":
        print("note: no CIFAR-10 ships; proxies that read data see CIFAR-shaped synthetic images", flush=True)
    progress = None if args.quiet else (lambda line: print("  " + line, file=sys.stderr, flush=True))
    rows = ranking.rank(gt, subjects, baselines, args.seeds, top_frac=args.top, brackets=args.brackets, progress=progress)
    print()
    print(ranking.format_table(rows))
    if args.json:
        ranking.write_json(Path(args.json), ranking.to_json(gt, rows, protocol, args.seeds))
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {ranking.plot(gt, rows, Path(args.plot))}")
    return 1 if any(r.error for r in rows if r.kind == "subject") else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nascore", description="One-shot neural architecture search: train a supernet, search, export, retrain.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"nascore {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    r = sub.add_parser("run", help="run a config or recipe into a run folder",
                       description="Validate the whole config, then run its stages into a run folder.")
    r.add_argument("config", help="a YAML config file or a recipe name (nascore recipes)")
    r.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a field, e.g. stages.0.trainer.options.epochs=3")
    r.add_argument("--out", help="run folder (default runs/<name>)")
    r.add_argument("--smoke", action="store_true", help="every stage with a minimal budget, to check a config in seconds")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    r.add_argument("--quiet", action="store_true", help="no progress bars (the stage headers are still printed)")
    r.set_defaults(fn=cmd_run)

    r = sub.add_parser(
        "resume", help="continue an interrupted run",
        description="Continue the run in RUN_DIR from its last checkpoint, with the config recorded there: finished "
                    "stages are skipped, the interrupted one restarts from its newest checkpoint, and the same seed "
                    "gives the same result as an uninterrupted run. A run that had already finished is not run again: "
                    "its results are printed with the original run's stage times.")
    r.add_argument("run_dir", help="a run folder (`nascore run` wrote it)")
    r.add_argument("--quiet", action="store_true", help="no progress bars (the stage headers are still printed)")
    r.set_defaults(fn=cmd_resume)

    r = sub.add_parser(
        "export", help="write a chosen architecture as a standalone model",
        description="Write export/<N>/ of a run folder: arch.json (architecture, costs, input shape, class names, "
                    "preprocessing), model.pt (state dict) and TorchScript/ONNX models that run without nascore, each "
                    "checked against the child. Every format already in the folder is written again from the same "
                    "weights (the retrained ones when the run retrained). Defaults: the run's own export stage.")
    r.add_argument("run_dir", help="a run folder (`nascore run` wrote it)")
    r.add_argument("--format", choices=["json", "torchscript", "onnx"], action="append",
                   help="format to write (repeatable; default: the run's export stage formats, else torchscript)")
    r.add_argument("--bake-normalization", action=argparse.BooleanOptionalAction, default=None,
                   help="TorchScript/ONNX models take raw pixels and normalise inside (default: the run's export stage)")
    r.add_argument("--arch", type=_int_arg(0), default=0, help="rank of the candidate in results.json (default 0: the best)")
    r.set_defaults(fn=cmd_export)

    r = sub.add_parser(
        "report", help="write RUN_DIR/report.html: plots, chosen architectures, config, timings",
        description="Write RUN_DIR/plots/*.png and RUN_DIR/report.html, one self-contained page (plots inline, no "
                    "server, nothing fetched) with the chosen architecture and its retrained accuracy, every "
                    "candidate, score vs MACs with the Pareto front, search and training curves, stage times and the "
                    "resolved config. Reads only the run folder: works on finished runs and on runs still going.")
    r.add_argument("run_dir", help="a run folder (`nascore run` wrote it)")
    r.set_defaults(fn=cmd_report)

    r = sub.add_parser(
        "compare", help="several runs side by side",
        description="One row per run folder: method (trainers+selectors), best architecture, its score and the "
                    "evaluator that gave it (scores of different evaluators are not comparable), retrained accuracy, "
                    "MACs, params, and the time spent training, searching and in all. Runs are labelled by folder "
                    "(with as much of the path as tells them apart); smoke runs are marked.")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (`nascore run` wrote them)")
    r.set_defaults(fn=cmd_compare)

    r = sub.add_parser(
        "rank", help="rank a space's architectures with a scorer against ground truth, beside the baselines",
        description="Score every architecture of a ground-truth bed (tiny_matched, tiny_chain, tiny_cell; a sample of "
                    "nb201) with a trained supernet (--run) or an evaluator (--evaluator), and print Kendall τ, Spearman "
                    "ρ, τ in the true top 10%%, precision@k and τ within MACs brackets, beside params, MACs, every "
                    "installed zero-cost proxy and the noise ceiling, with the protocol used.")
    r.add_argument("bed", help="ground truth: tiny_matched (cost-matched, 256 archs), tiny_chain, tiny_cell or nb201")
    r.add_argument("--run", action="append", metavar="RUN_DIR", help="a run folder whose trained supernet scores (repeat: one per seed)")
    r.add_argument("--evaluator", help="evaluator to score with (default for --run: the run's search evaluator, else accuracy)")
    r.add_argument("--options", help="the evaluator's options as JSON, e.g. '{\"recal_batches\": 10}'")
    r.add_argument("--baselines", default=None, help="comma-separated evaluators (default: params, macs and every installed zero-cost proxy; 'none' for none)")
    r.add_argument("--seeds", type=_int_arg(0, 2**32 - 1), nargs="+", default=[0, 1, 2], help="seeds of seeded scorers (proxies' init)")
    r.add_argument("--archs", type=_int_arg(2, 10**7), default=None, help="score a seeded random sample of N architectures (nb201 default 500)")
    r.add_argument("--sample-seed", type=_int_arg(0, 2**32 - 1), default=0, help="seed of that sample")
    r.add_argument("--top", type=_float_arg(0.0, 1.0, lo_open=True), default=0.1, help="fraction of the true best for τ top and P@top (default 0.1)")
    r.add_argument("--brackets", type=_int_arg(1, 1000), default=5, help="MACs brackets for τ within brackets (default 5)")
    r.add_argument("--json", help="also write the figures as JSON here")
    r.add_argument("--plot", help="also write a scatter plot PNG (scores vs truth) here")
    r.add_argument("--threads", type=_int_arg(1, 1024), default=1, help="torch threads (default 1)")
    r.add_argument("--quiet", action="store_true", help="no per-scorer progress lines")
    r.set_defaults(fn=cmd_rank)

    r = sub.add_parser("plugins", help="installed plugins, their components, and failures")
    r.add_argument("--json", action="store_true")
    r.add_argument("--strict", action="store_true", help="exit 1 if a plugin failed to load")
    r.set_defaults(fn=cmd_plugins)

    r = sub.add_parser(
        "list", help="components of one role (spaces, trainers, evaluators, selectors, distillers, datasets)",
        description="Name, distribution and summary of every installed component of ROLE (built-ins and plugins); "
                    "`nascore schema ROLE NAME` shows a component's options, `nascore plugins` what failed to load.")
    r.add_argument("role", help="spaces, trainers, evaluators, selectors, distillers, datasets or recipes")
    r.set_defaults(fn=cmd_list)

    r = sub.add_parser("recipes", help="ready-made configs runnable as `nascore run NAME`")
    r.set_defaults(fn=cmd_recipes)

    r = sub.add_parser("schema", help="JSON Schema of a component's options")
    r.add_argument("role", choices=["space", "trainer", "evaluator", "selector", "distiller", "dataset"])
    r.add_argument("name")
    r.set_defaults(fn=cmd_schema)

    r = sub.add_parser("spaces", help="registered search spaces and their sizes")
    r.set_defaults(fn=cmd_spaces)

    r = sub.add_parser("sample", help="print random architecture strings of a space")
    r.add_argument("space")
    r.add_argument("-n", type=_int_arg(0, SAMPLE_MAX), default=5, help=f"how many (at most {SAMPLE_MAX:,})")
    r.add_argument("--seed", type=_int_arg(), default=0)
    r.add_argument("--option", action="append", metavar="KEY=VALUE", help="space option, e.g. width=16")
    r.set_defaults(fn=cmd_sample)

    r = sub.add_parser("cost", help="MACs and params of an architecture (cost table; --check against fvcore)")
    r.add_argument("space")
    r.add_argument("arch")
    r.add_argument("--input", default=None, help="input shape CxHxW, e.g. 3x32x32")
    r.add_argument("--check", action="store_true", help="also count with fvcore on the built child; exit 1 if they differ")
    r.add_argument("--option", action="append", metavar="KEY=VALUE")
    r.set_defaults(fn=cmd_cost)

    r = sub.add_parser("lut", help="measured latency tables: build one for a space here, check it end to end",
                       description="Latency lookup tables (docs/latency.md).")
    lsub = r.add_subparsers(dest="lut_cmd", metavar="ACTION")
    b = lsub.add_parser("build", help="time every (decision, option) block of SPACE on this machine")
    b.add_argument("space", help="search space name (nascore spaces lists them)")
    b.add_argument("--option", action="append", metavar="KEY=VALUE", help="space option, e.g. width=16")
    b.add_argument("--input", default=None, help="input shape CxHxW (default: the space's), e.g. 3x32x32")
    b.add_argument("--backend", default="torchscript", choices=["eager", "torchscript", "onnxruntime"])
    b.add_argument("--batch", type=_int_arg(1, 4096), default=1, help="batch size timed (default 1)")
    b.add_argument("--threads", type=_int_arg(1, 1024), default=1, help="pinned thread count (torch and onnxruntime)")
    b.add_argument("--warmup", type=_int_arg(0, 100000), default=10, help="untimed runs before timing each block (default 10)")
    b.add_argument("--repeats", type=_int_arg(1, 100000), default=30, help="timed samples per block (default 30; --estimator picks the value kept)")
    b.add_argument("--references", type=_int_arg(1, 10000), default=3, help="children timed whole for the fixed part")
    b.add_argument("--estimator", default="median", choices=["median", "p10", "min"],
                   help="per-block value kept from the samples (p10/min resist preemption on a loaded machine)")
    b.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    b.add_argument("--out", default=None, help="table file (default luts/SPACE-BACKEND-bBATCH-tTHREADS.json)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(fn=cmd_lut_build)
    c = lsub.add_parser("check", help="measure random children end to end; predicted vs measured per model")
    c.add_argument("table", help="table file written by nascore lut build")
    c.add_argument("-n", type=_int_arg(2, 100000), default=40, help="random children to measure")
    c.add_argument("--seed", type=_int_arg(0, 2**32 - 1), default=0, help="seed of the random children")
    c.add_argument("--folds", type=_int_arg(2, 1000), default=5, help="cross-validation folds for the fitted models")
    c.add_argument("--rounds", type=_int_arg(1, 1000), default=3, help="interleaved timing passes over all children (load bursts hit all alike)")
    c.add_argument("--out", default=None, help="folder for check.json and check.png (default: next to the table)")
    c.add_argument("--calibrate", action="store_true",
                   help="write the fitted additive calibration into the table (runs then predict with it)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(fn=cmd_lut_check)
    r.set_defaults(fn=lambda a: (r.print_help(), 0)[1])
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 0
    try:
        code = int(args.fn(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except NascoreError as e:
        if args.debug:
            raise
        print(f"nascore: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001
        if args.debug:
            raise
        from nascore import registry as _reg

        blamed = _reg.plugin_error_of(e) or (_reg._REGISTRY.blame(e) if _reg._REGISTRY is not None else None)
        if blamed is not None:
            print(f"nascore: error: {blamed}", file=sys.stderr)
            return 2
        print(f"nascore: internal error: {type(e).__name__}: {e}\n  (run again with --debug for the traceback, "
              "and please report it)", file=sys.stderr)
        return 1


def _closed_pipe() -> int:
    """Output went to a pipe whose reader has gone (``nascore list | head -1``): stop quietly, as
    ``cat`` does (exit status 141 = killed by SIGPIPE), and keep Python's exit-time flush silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # stdout is no file (a captured stream in tests): nothing is flushed at exit
    return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
