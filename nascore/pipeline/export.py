"""Export chosen architectures as standalone models that run without nascore.

For each exported candidate ``export/<rank>/`` holds ``arch.json`` (the architecture, its costs and
where the weights came from), ``model.pt`` (the child's ``state_dict``), ``model.ts`` (TorchScript,
loadable with plain ``torch.jit.load``) and ``model.onnx`` (with the ``onnx`` extra). Weights are
the retrained ones when the run retrained that architecture, else the supernet's with BN statistics
recalibrated for the path. Every exported file is checked to reproduce the child's outputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from nascore.errors import NascoreError
from nascore.evaluate import recalibrate_bn
from nascore.io import atomic_write, load_torch, save_torch, write_json
from nascore.roles import Context


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
        child.load_state_dict(load_torch(retrained)["model"])
        origin = "retrained"
    else:
        n = 2 if ctx.smoke else 20
        recalibrate_bn(child, ctx.data.batches("train", epoch=0, limit=n, device=ctx.device, shard=False))
        origin = "supernet (BN recalibrated)"
    return child.eval(), origin


def export_candidates(ctx: Context, top: int, formats: list[str]) -> list[Path]:
    """The ``export`` stage: export the ``top`` candidates (rank 0 only)."""
    out: list[Path] = []
    if not ctx.dist.is_main:  # only rank 0 writes the run folder
        return out
    for i in range(min(top, len(ctx.candidates))):
        out.append(export_one(ctx, i, formats))
    return out


def export_one(ctx: Context, index: int, formats: list[str]) -> Path:
    """Write ``export/<index>/`` for candidate ``index`` and check every file against the child."""
    child, origin = child_with_weights(ctx, index)
    cand = ctx.candidates[index]
    folder = ctx.run_dir / "export" / f"{index}"
    child = child.to("cpu").eval()
    probe = torch.randn(2, *ctx.data.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = child(probe)
    checks: dict[str, float] = {}
    save_torch(folder / "model.pt", {"model": child.state_dict()})
    if "torchscript" in formats:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(child, probe, check_trace=False)
            atomic_write(folder / "model.ts", lambda f: torch.jit.save(traced, f))
            loaded = torch.jit.load(str(folder / "model.ts"))
        with torch.no_grad():
            checks["torchscript_max_abs_diff"] = float((loaded(probe) - expected).abs().max())
    if "onnx" in formats:
        checks.update(_export_onnx(child, probe, expected, folder / "model.onnx"))
    write_json(folder / "arch.json", {
        **cand.to_json(), "space": ctx.cfg.space.model_dump(mode="json"),
        "input_shape": list(ctx.data.input_shape), "num_classes": ctx.data.num_classes,
        "weights": origin, "checks": checks,
    })
    ctx.log.event("export", index=index, arch=cand.arch_str, folder=str(folder), **checks)
    return folder


def _export_onnx(child: nn.Module, probe: torch.Tensor, expected: torch.Tensor, path: Path) -> dict[str, float]:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise NascoreError("ONNX export needs the onnx package", hint="pip install 'nascore[onnx]'") from None
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
    return {"onnx_max_abs_diff": float((torch.from_numpy(got) - expected).abs().max())}
