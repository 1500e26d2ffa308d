"""nascore from Python: start, resume, open and export runs — what the ``nascore`` CLI itself calls.

A notebook does what the command line does, with the same validation and the same run folder::

    import nascore.api as nas

    run = nas.run("spos", overrides={"constraint.macs_max": 2e6}, out="runs/a", smoke=True)
    run.best.arch, run.best.score, run.best.macs     # the chosen architecture
    run.table()                                       # rank, arch, score, MACs, params, retrained accuracy
    nas.open("runs/a").export(0, format="onnx")       # a standalone model of the best candidate
    nas.resume("runs/b")                              # continue a killed run

``config`` is a recipe name (``nascore recipes``), a path to a YAML file, or a config dict;
``overrides`` are ``{"dotted.path": value}`` (or ``--set`` strings ``"path=value"``).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nascore.arch import Candidate
from nascore.errors import NascoreError, UnknownComponent
from nascore.roles import SpaceContext, SpaceData

if TYPE_CHECKING:
    from nascore.pipeline.context import RunContext
    from nascore.registry import Registry
    from nascore.space import SearchSpace

#: The input a space is built for outside a run (``nascore spaces``/``sample``/``cost``): mnist5k's.
DEFAULT_INPUT_SHAPE: tuple[int, int, int] = (1, 28, 28)
DEFAULT_NUM_CLASSES = 10


# -- configs ---------------------------------------------------------------------------------------
def _registry(registry: "Registry | None") -> "Registry":
    from nascore.registry import get_registry

    return registry or get_registry()


def _override_strings(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]  # JSON is YAML: --set parses it back
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


def load_config(config: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | Sequence[str] | None = None,
                *, registry: "Registry | None" = None) -> tuple[dict[str, Any], str]:
    """``(config dict, where it came from)`` for a recipe name, a YAML path or a dict, with overrides applied.

    Not validated yet (:func:`start` does that, naming the source). The dict is a copy and always has a ``name``.
    """
    from nascore.config import apply_overrides, load_yaml

    if isinstance(config, Mapping):
        data, source, stem = copy.deepcopy(dict(config)), "config dict", "run"
    else:
        path = Path(config)
        if path.suffix in (".yaml", ".yml") or path.exists():
            data, source, stem = load_yaml(path), str(path), path.stem
        else:
            recipes = _registry(registry).components["recipe"]
            if str(config) not in recipes:
                import difflib

                close = difflib.get_close_matches(str(config), list(recipes), n=1)
                raise UnknownComponent(
                    f"{str(config)!r} is neither a config file nor a recipe" + (f"; did you mean {close[0]!r}?" if close else ""),
                    hint=f"recipes: {', '.join(sorted(recipes)) or '(none installed)'}; or pass a path to a .yaml file",
                )
            data, source, stem = recipe_data(recipes[str(config)]), f"recipe {str(config)!r}", str(config)
    data = apply_overrides(data, _override_strings(overrides))
    data.setdefault("name", stem)
    return data, source


def recipe_data(comp: Any) -> dict[str, Any]:
    """The config dict of a registered recipe (a YAML path or a dict)."""
    from nascore.config import load_yaml

    if isinstance(comp.factory, (str, Path)):
        return load_yaml(comp.factory)
    return copy.deepcopy(comp.factory)


def default_run_dir(data: Mapping[str, Any], smoke: bool = False) -> Path:
    """``runs/<name>`` (``runs/<name>-smoke`` under ``smoke``), as ``nascore run`` without ``--out``."""
    name = str(data.get("name", "run"))
    return Path("runs") / (f"{name}-smoke" if smoke else name)


# -- runs ------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A run folder and what is known of it: the resolved config, the candidates, ``results.json``.

    ``context`` is the live run context when this process ran or resumed the run (``None`` for a run
    opened with :func:`open`); ``seconds`` is how long this process spent on it.
    """

    run_dir: Path | None
    config: dict[str, Any]
    candidates: list[Candidate]
    results: dict[str, Any] = field(default_factory=dict)
    context: Any = None
    seconds: float = 0.0

    @property
    def best(self) -> Candidate:
        """The first-ranked candidate (an error when the run had no search stage)."""
        if not self.candidates:
            raise NascoreError(f"run {self.run_dir} has no candidates", hint="its config has no search stage yet, "
                               "or the run stopped before one finished: nascore.api.resume(run_dir)")
        return self.candidates[0]

    def table(self, top: int = 10) -> list[dict[str, Any]]:
        """One dict per candidate: rank, arch, score, macs, params, origin and, once retrained, ``retrain``
        (the retrain stage's figures from ``results.json``, e.g. its test accuracy)."""
        retrain = {c.get("arch"): c["retrain"] for c in self.results.get("candidates", [])
                   if isinstance(c, dict) and "retrain" in c}
        rows = []
        for i, c in enumerate(self.candidates[:top]):
            row: dict[str, Any] = {"rank": i, "arch": c.arch_str, "score": c.score, "macs": c.macs,
                                   "params": c.params, "origin": c.origin}
            if c.arch_str in retrain:
                row["retrain"] = retrain[c.arch_str]
            rows.append(row)
        return rows

    def export(self, rank: int = 0, format: str = "torchscript", **options: Any) -> Path:
        """Write candidate ``rank`` as a standalone model; returns the export folder (see :func:`export`)."""
        if self.run_dir is None:
            raise NascoreError("an in-memory run (out=None) has no folder to export from", hint="run it with out=PATH")
        return export(self.run_dir, rank, format, **options)


def start(config: str | Path | Mapping[str, Any], *, overrides: Mapping[str, Any] | Sequence[str] | None = None,
          out: str | Path | None = None, smoke: bool = False, quiet: bool = True, overwrite: bool = False,
          registry: "Registry | None" = None, in_memory: bool = False) -> "RunContext":
    """Validate ``config`` and open its run folder; the context, no stage run yet (:func:`execute` runs them).

    ``out`` defaults to :func:`default_run_dir`; ``in_memory=True`` writes no folder at all.
    """
    from nascore.pipeline.run import open_run

    data, source = load_config(config, overrides, registry=registry)
    run_dir = None if in_memory else Path(out) if out is not None else default_run_dir(data, smoke)
    return open_run(data, run_dir=run_dir, registry=registry, smoke=smoke, quiet=quiet, overwrite=overwrite,
                    source=source)


def execute(ctx: "RunContext", *, report: bool = True) -> Run:
    """Run (or continue) every stage of ``ctx``, close its log and write ``report.html``; the :class:`Run`."""
    from nascore.config import resolved_dict
    from nascore.pipeline.run import run_pipeline

    t0 = time.time()
    try:
        run_pipeline(ctx)
    finally:
        ctx.close()
    results: dict[str, Any] = {}
    if ctx.run_dir is not None and ctx.dist.is_main:
        if report:
            from nascore.report import write_report

            write_report(ctx.run_dir)
        results = _read_results(ctx.run_dir)
    return Run(ctx.run_dir, resolved_dict(ctx.cfg, ctx.options), list(ctx.candidates), results, ctx,
               time.time() - t0)


def run(config: str | Path | Mapping[str, Any], *, overrides: Mapping[str, Any] | Sequence[str] | None = None,
        out: str | Path | None = None, smoke: bool = False, quiet: bool = True, overwrite: bool = False,
        registry: "Registry | None" = None, in_memory: bool = False) -> Run:
    """Start ``config`` and run all its stages (``nascore run``); the finished :class:`Run`."""
    ctx = start(config, overrides=overrides, out=out, smoke=smoke, quiet=quiet, overwrite=overwrite,
                registry=registry, in_memory=in_memory)
    return execute(ctx, report=not in_memory)


def resume_context(run_dir: str | Path, *, quiet: bool = True, registry: "Registry | None" = None,
                   export_only: bool = False) -> "RunContext":
    """The context of the run in ``run_dir``, restored from its files; no stage run yet.

    ``export_only``: the context only exports (no TensorBoard event files are written)."""
    from nascore.pipeline.run import resume_run

    return resume_run(Path(run_dir), quiet=quiet, registry=registry, export_only=export_only)


def resume(run_dir: str | Path, *, quiet: bool = True, registry: "Registry | None" = None) -> Run:
    """Continue the run in ``run_dir`` from its last checkpoint (``nascore resume``); the finished :class:`Run`.

    A finished run is not run again: its stages are all marked complete, so this only reads it back.
    """
    return execute(resume_context(run_dir, quiet=quiet, registry=registry))


def open(run_dir: str | Path) -> Run:  # noqa: A001 - nascore.api.open mirrors the builtin on purpose
    """A finished (or stopped) run, read from its folder without building anything: config, candidates, results."""
    from nascore.pipeline import runfolder

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise NascoreError(f"{run_dir} is not a run folder (no config.yaml)",
                           hint="pass the --out folder of a `nascore run`, e.g. runs/spos")
    config = runfolder.load_run_config(run_dir)
    state = runfolder.read_state(run_dir)
    candidates = state[1] if state is not None else []
    return Run(run_dir, config, candidates, _read_results(run_dir))


def _read_results(run_dir: Path) -> dict[str, Any]:
    """``results.json`` ({} before the first stage has finished)."""
    from nascore.io import read_json
    from nascore.pipeline import runfolder

    reader = getattr(runfolder, "read_results", None)  # the validating reader, where the run folder has one
    if reader is not None:
        return reader(run_dir) or {}
    path = run_dir / "results.json"
    return read_json(path) if path.exists() else {}


def export(run_dir: str | Path, rank: int = 0, format: str = "torchscript", **options: Any) -> Path:
    """Write candidate ``rank`` of a run as a standalone model (``nascore export``); the export folder.

    ``format``: ``json`` (arch.json and weights only), ``torchscript`` or ``onnx``; ``options`` go to
    the exporter (e.g. ``bake_normalization=True`` where supported).
    """
    from nascore.pipeline.export import export_one

    if format not in ("json", "torchscript", "onnx"):
        raise NascoreError(f"export format {format!r} is not one of json, torchscript, onnx")
    ctx = resume_context(run_dir, export_only=True)
    try:
        return export_one(ctx, rank, ["json"] + ([format] if format != "json" else []), **options)
    finally:
        ctx.close()


# -- spaces outside a run --------------------------------------------------------------------------
def parse_shape(text: str) -> tuple[int, int, int]:
    """``"3x32x32"`` -> ``(3, 32, 32)``, or an error naming the flag."""
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
        if len(shape) != 3 or any(v <= 0 for v in shape):
            raise ValueError
    except ValueError:
        raise NascoreError(f"--input {text!r} is not CxHxW", hint="e.g. --input 3x32x32") from None
    return shape  # type: ignore[return-value]


def space(name: str, options: Mapping[str, Any] | Sequence[str] | None = None, *,
          input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE, num_classes: int = DEFAULT_NUM_CLASSES,
          registry: "Registry | None" = None) -> "SearchSpace":
    """The registered space ``name`` built for ``input_shape``/``num_classes`` (options validated by its model)."""
    from nascore.config import apply_overrides

    reg = _registry(registry)
    comp = reg.get("space", name)
    opts = dict(options) if isinstance(options, Mapping) else apply_overrides({}, list(options or []))
    return comp.build(opts, SpaceContext(input_shape, num_classes, registry=reg))


__all__ = ["Run", "SpaceContext", "SpaceData", "default_run_dir", "execute", "export", "load_config", "open",
           "parse_shape", "recipe_data", "resume", "resume_context", "run", "space", "start"]
