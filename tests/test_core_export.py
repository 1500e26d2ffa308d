"""Exported models (TorchScript, ONNX, state dict) reproduce the supernet path they came from."""

import json

import pytest
import torch

from nascore.evaluate import recalibrate_bn
from nascore.testing import run_config, tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = tiny_config(stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 4}}, "evaluator": "accuracy"},
    ])
    ctx = run_config(cfg, run_dir)
    return ctx, run_dir


def _supernet_path_output(ctx, index, x):
    """The supernet itself, running the candidate's path with BN recalibrated as export does."""
    net = ctx.supernet
    net.set_active(ctx.candidates[index].arch)
    recalibrate_bn(net, ctx.data.batches("train", epoch=0, limit=20))
    net.eval()
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_round_trip_matches_the_supernet_path(finished_run, fmt):
    from nascore.pipeline.export import export_one

    ctx, run_dir = finished_run
    folder = export_one(ctx, 0, ["json", fmt])
    x = torch.randn(3, *ctx.data.input_shape)
    expected = _supernet_path_output(ctx, 0, x)
    if fmt == "torchscript":
        loaded = torch.jit.load(str(folder / "model.ts"))  # plain torch: no nascore class needed
        with torch.no_grad():
            got = loaded(x)
    else:
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    meta = json.loads((folder / "arch.json").read_text())
    assert meta["arch"] == ctx.candidates[0].arch_str and meta["macs"] == ctx.candidates[0].macs


def test_state_dict_export_loads_into_a_fresh_child(finished_run):
    from nascore.pipeline.export import export_one
    from nascore.io import load_torch

    ctx, _ = finished_run
    folder = export_one(ctx, 0, ["json"])
    arch = ctx.space.parse(json.loads((folder / "arch.json").read_text())["arch"])
    child = ctx.base_space.build_supernet().child(arch, inherit=False).eval()
    child.load_state_dict(load_torch(folder / "model.pt")["model"])
    x = torch.randn(2, *ctx.data.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(child(x), _supernet_path_output(ctx, 0, x), rtol=1e-4, atol=1e-5)


def test_export_of_a_missing_candidate_is_a_clear_error(finished_run):
    from nascore.errors import NascoreError
    from nascore.pipeline.export import export_one

    ctx, _ = finished_run
    with pytest.raises(NascoreError, match="--arch 99: the run has 4 candidates"):
        export_one(ctx, 99, ["json"])
