"""Export chosen architectures as standalone models that run without nascore.

For each exported candidate ``export/<rank>/`` holds ``arch.json`` (the architecture, its costs,
where the weights came from, and how to preprocess an input), ``model.pt`` (the child's
``state_dict``), ``model.ts`` (TorchScript, loadable with plain ``torch.jit.load``) and
``model.onnx`` (with the ``onnx`` extra). Weights are the retrained ones when the run retrained that
architecture, else the supernet's with BN statistics recalibrated for the path. Every exported file
is checked to reproduce the child's outputs.

The folder is one consistent set: an export writes every format the folder already held as well as
the requested ones, all from the same weights (``weights_digest`` in ``arch.json``), and
``arch.json`` is written last, so a folder whose ``arch.json`` is missing is an interrupted export.
``arch.json`` depends only on the run (the resolved config and the weights), so the run's own export
stage, a resumed run and ``nascore export`` write the same bytes for the same weights.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nascore.config import resolved_dict
from nascore.errors import NascoreError
from nascore.evaluate import recalibrate_bn
from nascore.io import atomic_write, load_torch, read_json, save_torch, write_json
from nascore.roles import Context

# format -> the file it writes (``json`` is arch.json + model.pt, always written)
FORMAT_FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}
CHECK_KEYS = {"torchscript": "torchscript_max_abs_diff", "onnx": "onnx_max_abs_diff"}


def child_with_weights(ctx: Context, index: int) -> tuple[nn.Module, str]:
    """The standalone child of candidate ``index`` and where its weights come from."""
    if not ctx.candidates:
        raise NascoreError("the run has no chosen architectures yet", hint="run a search stage before exporting")
    if not 0 <= index < len(ctx.candidates):
        raise NascoreError(f"--arch {index}: the run has {len(ctx.candidates)} candidates (0..{len(ctx.candidates) - 1})")
    cand = ctx.candidates[index]
    retrained = ctx.run_dir / "retrain" / f"{index}" / "model.pt" if ctx.run_dir else None
    child = ctx.supernet.child(cand.arch, inherit=True)
    if retrained is not None and retrained.exists():
        from nascore.pipeline.runfolder import load_state_into

        load_state_into(child, load_torch(retrained), retrained, key="model")
        origin = "retrained"
    else:
        n = 2 if ctx.smoke else 20
        recalibrate_bn(child, ctx.data.batches("train", epoch=0, limit=n, device=ctx.device, shard=False))
        origin = "supernet (BN recalibrated)"
    return child.eval(), origin


def export_candidates(ctx: Context, top: int, formats: list[str], bake_normalization: bool = False) -> list[Path]:
    """The ``export`` stage: export the ``top`` candidates (rank 0 only)."""
    out: list[Path] = []
    if not ctx.dist.is_main:  # only rank 0 writes the run folder
        return out
    for i in range(min(top, len(ctx.candidates))):
        out.append(export_one(ctx, i, formats, bake_normalization=bake_normalization))
    return out


class Normalized(nn.Module):
    """``net`` fed ``(x / scale - mean) / std``: an exported model that takes raw pixel values."""

    def __init__(self, net: nn.Module, scale: float, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.scale = float(scale)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x / self.scale - self.mean) / self.std)


def preprocessing_json(ctx: Context, baked: list[str]) -> dict[str, Any] | None:
    """What ``arch.json`` says about feeding the model: the dataset's normalisation, and where it is baked."""
    pre = getattr(ctx.data.spec, "preprocessing", None)
    if pre is None:
        return None
    return {**pre.to_json(), "baked_into": baked}


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a state dict (the same weights, the same digest)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def previous_formats(folder: Path) -> set[str]:
    """The formats an earlier export left in ``folder`` (from its arch.json, else from the files there)."""
    found = {fmt for fmt, name in FORMAT_FILES.items() if (folder / name).exists()}
    try:
        meta = read_json(folder / "arch.json")
        found |= {f for f in meta.get("formats", []) if f in FORMAT_FILES} if isinstance(meta, dict) else set()
    except NascoreError:  # missing or damaged: the files on disk say what was there
        pass
    return found


def stage_defaults(ctx: Context) -> tuple[list[str], bool]:
    """Formats and baking of the run's (first) export stage; json + torchscript, unbaked, when it has none.

    What ``nascore export`` and :func:`nascore.api.export` write unless told otherwise, so that they
    rewrite the folder the run's own export stage wrote with the same bytes.
    """
    from nascore.config import ExportStage
    from nascore.pipeline.stages import iter_stages

    for _, st, _ in iter_stages(ctx.cfg.stages):
        if isinstance(st, ExportStage):
            return list(dict.fromkeys(["json", *st.formats])), st.bake_normalization
    return ["json", "torchscript"], False


def export_one(ctx: Context, index: int, formats: list[str], *, bake_normalization: bool | None = None) -> Path:
    """Write ``export/<index>/`` for candidate ``index`` and check every file against the child.

    Every format already in the folder is written again from the same weights (an export never
    leaves a model file from other weights beside the new ones); ``arch.json`` goes last.
    ``bake_normalization=None``: as the run's own export stage does (:func:`stage_defaults`).
    """
    if bake_normalization is None:
        bake_normalization = stage_defaults(ctx)[1]
    pre = getattr(ctx.data.spec, "preprocessing", None)
    if bake_normalization and pre is None:
        raise NascoreError(f"export bake_normalization: dataset {ctx.cfg.dataset.name!r} does not declare its "
                           "normalisation (DatasetSpec.preprocessing)", hint="export without baking, or set "
                           "preprocessing in the dataset component")
    child, origin = child_with_weights(ctx, index)
    cand = ctx.candidates[index]
    folder = ctx.run_dir / "export" / f"{index}"
    wanted = {f for f in formats if f in FORMAT_FILES}
    old = previous_formats(folder)
    wanted |= {f for f in old if f != "onnx" or _onnx_available()}
    for f in sorted(old - wanted):  # a format that cannot be written again here must not stay stale
        (folder / FORMAT_FILES[f]).unlink(missing_ok=True)
        print(f"nascore: warning: removed stale {folder / FORMAT_FILES[f]} ({f} export needs the onnx package "
              "here; pip install 'nascore[onnx]' and export again to get it back)", file=sys.stderr)
    (folder / "arch.json").unlink(missing_ok=True)  # from here until it is written again: an interrupted export

    child = child.to("cpu").eval()
    state = child.state_dict()
    g = torch.Generator().manual_seed(0)
    if bake_normalization and pre is not None:
        shipped: nn.Module = Normalized(child, pre.scale, list(pre.mean), list(pre.std)).eval()
        probe = torch.rand(2, *ctx.data.input_shape, generator=g) * pre.scale  # raw values
    else:
        shipped = child
        probe = torch.randn(2, *ctx.data.input_shape, generator=g)
    with torch.no_grad():
        expected = shipped(probe)
    checks: dict[str, float] = {}
    save_torch(folder / "model.pt", {"model": state})
    if "torchscript" in wanted:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(shipped, probe, check_trace=False)
            atomic_write(folder / "model.ts", lambda f: torch.jit.save(traced, f))
            loaded = torch.jit.load(str(folder / "model.ts"))
        with torch.no_grad():
            checks[CHECK_KEYS["torchscript"]] = float((loaded(probe) - expected).abs().max())
    if "onnx" in wanted:
        checks.update(_export_onnx(shipped, probe, expected, folder / "model.onnx"))
    latency = _measure_latency(ctx, shipped, cand, folder)
    baked = sorted(wanted) if bake_normalization else []
    names = getattr(ctx.data.spec, "class_names", None)
    write_json(folder / "arch.json", {
        **cand.to_json(), "space": resolved_dict(ctx.cfg, ctx.options)["space"],
        "dataset": ctx.cfg.dataset.name,
        "input_shape": list(ctx.data.input_shape), "num_classes": ctx.data.num_classes,
        "class_names": list(names) if names is not None else None,
        "preprocessing": preprocessing_json(ctx, baked),
        "weights": origin, "weights_digest": weights_digest(state),
        "formats": ["json", *sorted(wanted)],
        "files": ["arch.json", "model.pt", *(FORMAT_FILES[f] for f in sorted(wanted))],
        "checks": dict(sorted(checks.items())),
        **({"latency": latency} if latency else {}),
    })
    ctx.log.event("export", index=index, arch=cand.arch_str, folder=str(folder), **checks)
    return folder


def _measure_latency(ctx: Context, shipped: nn.Module, cand: Any, folder: Path) -> dict[str, Any] | None:
    """With a latency table: time the exported model as the table was timed (backend, batch,
    threads) and record it beside the table's prediction (also in state, for results.json)."""
    lut = getattr(ctx, "latency", None)
    if lut is None:
        return None
    from nascore.latency import measure_exported

    got = measure_exported(shipped, folder, lut.meta, tuple(ctx.data.input_shape))
    predicted = ctx.cost.latency_ms(cand.arch)
    got["predicted_ms"] = predicted
    from nascore.latency import estimate

    got["measured_ms"] = estimate(got, lut.meta.get("estimator", "median"))
    got["error_pct"] = 100.0 * (predicted - got["measured_ms"]) / got["measured_ms"] if got["measured_ms"] > 0 else None
    ctx.state.setdefault("export_latency", {})[cand.arch_str] = got
    ctx.log.event("export_latency", arch=cand.arch_str, **{k: v for k, v in got.items() if not isinstance(v, dict)})
    return got


def _onnx_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def _export_onnx(child: nn.Module, probe: torch.Tensor, expected: torch.Tensor, path: Path) -> dict[str, float]:
    if not _onnx_available():
        raise NascoreError("ONNX export needs the onnx package", hint="pip install 'nascore[onnx]'")
    tmp = path.with_suffix(".onnx.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(child, (probe,), str(tmp), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    tmp.replace(path)
    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": probe.numpy()})[0]
    return {CHECK_KEYS["onnx"]: float((torch.from_numpy(got) - expected).abs().max())}
