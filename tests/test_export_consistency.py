"""Exports are one consistent set and carry their preprocessing (issues 16 and 19).

One small finished run on the shipped MNIST digits (train, search, export of TorchScript + ONNX from
the supernet, retrain) is shared by every test; each test works on its own copy of the folder.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nascore import cli
from nascore.testing import run_config, tiny_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _config() -> dict:
    return tiny_config(name="consistency", dataset={"name": "mnist5k"}, data={"batch_size": 32, "limit": 1500}, stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 3}}, "evaluator": "accuracy"},
        {"kind": "export", "formats": ["json", "torchscript", "onnx"]},
        {"kind": "retrain", "epochs": 2, "lr": 0.1},
    ])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, bytes]:
    """The finished run and the arch.json bytes its own export stage wrote (before the retrain)."""
    pytest.importorskip("onnx")
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("export") / "run"
    run_config(_config(), run)
    return run, (run / "export" / "0" / "arch.json").read_bytes()


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished[0], copy)
    return copy


def _meta(run: Path) -> dict:
    return json.loads((run / "export" / "0" / "arch.json").read_text())


def _test_digits() -> tuple[np.ndarray, np.ndarray]:
    """The raw mnist5k test digits (uint8, 28x28) and labels, as a user holding the raw images has them."""
    from nascore.builtin.datasets import load_mnist5k_arrays, stratified_split

    images, labels = load_mnist5k_arrays()
    _, test = stratified_split(labels, 1000, 0)
    return images[test].reshape(-1, 28, 28), labels[test]


def _snippet(folder: Path) -> dict:
    """The inference snippet of docs/cli.md, run as printed, on ``folder``."""
    text = DOCS.read_text().split("## Using an exported model", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert 'folder = "runs/spos/export/0"' in code
    namespace: dict = {}
    exec(code.replace('folder = "runs/spos/export/0"', f"folder = {str(folder)!r}"), namespace)  # noqa: S102
    return namespace


def _onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])


def _retrained_child(run: Path) -> torch.nn.Module:
    from nascore.io import load_torch
    from nascore.pipeline.run import resume_run

    ctx = resume_run(run, quiet=True)
    ctx.log.close()
    child = ctx.supernet.child(ctx.candidates[0].arch, inherit=False)
    child.load_state_dict(load_torch(run / "retrain" / "0" / "model.pt")["model"])
    return child.eval()


def test_arch_json_records_the_preprocessing_the_run_trained_with(finished):
    run, _ = finished
    meta = _meta(run)
    pre = meta["preprocessing"]
    assert meta["input_shape"] == [1, 28, 28] and meta["class_names"] == [str(d) for d in range(10)]
    assert pre["baked_into"] == [] and pre["scale"] == 255.0 and pre["pad_to"] is None
    # the recorded recipe turns the raw digits into exactly the tensors the network was trained/tested on
    from nascore.builtin.datasets import Mnist5kConfig, make_mnist5k

    raw, labels = _test_digits()
    spec = make_mnist5k(Mnist5kConfig())
    x = (torch.from_numpy(raw).float().unsqueeze(1) / pre["scale"] - pre["mean"][0]) / pre["std"][0]
    torch.testing.assert_close(x, spec.test_tensors[0])
    assert torch.equal(torch.from_numpy(labels), spec.test_tensors[1])


def test_docs_snippet_reaches_the_recorded_accuracy(run, capsys):
    """The standalone snippet (torch.jit.load + arch.json's preprocessing) gives results.json's accuracy."""
    assert cli.main(["export", str(run)]) == 0  # after the retrain: the retrained weights
    assert _meta(run)["weights"] == "retrained"
    raw, labels = _test_digits()
    ns = _snippet(run / "export" / "0")
    correct = sum(p == str(y) for p, y in zip(ns["predict"](raw), labels.tolist()))
    recorded = json.loads((run / "results.json").read_text())["candidates"][0]["retrain"]
    assert recorded["split"] == "test" and recorded["test_acc"] > 0.8
    assert correct == round(recorded["test_acc"] * len(labels))
    # without the preprocessing the same model is worse: the recipe in arch.json is what makes it right
    naive = ns["model"](torch.from_numpy(raw).float().unsqueeze(1) / 255.0).argmax(1)
    naive_acc = float((naive == torch.from_numpy(labels)).float().mean())
    assert naive_acc < recorded["test_acc"] - 0.05
    print(f"snippet {correct / len(labels):.3f} = recorded {recorded['test_acc']:.3f}; raw/255 {naive_acc:.3f}")


def test_export_after_retraining_rewrites_every_format_from_the_same_weights(run):
    before = _meta(run)
    assert before["weights"].startswith("supernet") and before["formats"] == ["json", "onnx", "torchscript"]
    assert cli.main(["export", str(run), "--format", "torchscript"]) == 0
    meta = _meta(run)
    folder = run / "export" / "0"
    assert meta["weights"] == "retrained" and meta["formats"] == ["json", "onnx", "torchscript"]
    assert set(meta["checks"]) == {"torchscript_max_abs_diff", "onnx_max_abs_diff"}  # merged, not replaced
    from nascore.io import load_torch
    from nascore.pipeline.export import weights_digest

    retrained = load_torch(run / "retrain" / "0" / "model.pt")["model"]
    assert meta["weights_digest"] == weights_digest(retrained) != before["weights_digest"]
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _retrained_child(run)(x)
        ts = torch.jit.load(str(folder / "model.ts"))(x)
    torch.testing.assert_close(ts, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_onnx(folder / "model.onnx", x), expected, rtol=1e-4, atol=1e-4)


def test_arch_json_is_byte_identical_whichever_path_wrote_it(finished, tmp_path):
    """The run's export stage, `nascore export` and a resumed run write the same arch.json."""
    run, stage_bytes = finished
    by_cli = tmp_path / "cli"
    shutil.copytree(run, by_cli)
    shutil.rmtree(by_cli / "retrain")  # the weights the export stage saw: the supernet's
    shutil.rmtree(by_cli / "export")
    assert cli.main(["export", str(by_cli)]) == 0  # defaults: the run's own export stage
    assert (by_cli / "export" / "0" / "arch.json").read_bytes() == stage_bytes

    resumed = tmp_path / "resumed"  # the same run killed after its search stage, then resumed
    shutil.copytree(run, resumed)
    from nascore.io import read_json, write_json

    state = read_json(resumed / "state.json")
    state["completed"] = ["0", "1"]
    for k in ("2", "3"):
        state["timings"].pop(k)
    state.pop("retrain")
    write_json(resumed / "state.json", state)
    for sub in ("retrain", "export"):
        shutil.rmtree(resumed / sub)
    for f in (resumed / "checkpoints").glob("stage-3-*"):
        f.unlink()
    assert cli.main(["resume", str(resumed), "--quiet"]) == 0
    assert (resumed / "export" / "0" / "arch.json").read_bytes() == stage_bytes
    assert json.loads(stage_bytes)["space"]["options"] == {"layers": 4, "width": 8}  # resolved, defaults filled in


def test_a_format_that_cannot_be_written_again_is_removed_not_left_stale(run, monkeypatch, capsys):
    from nascore.pipeline import export

    monkeypatch.setattr(export, "_onnx_available", lambda: False)
    (run / "export" / "0" / "arch.json").unlink()  # an interrupted export: the files say what was there
    assert cli.main(["export", str(run), "--format", "torchscript"]) == 0
    meta = _meta(run)
    assert not (run / "export" / "0" / "model.onnx").exists()
    assert meta["formats"] == ["json", "torchscript"] and list(meta["checks"]) == ["torchscript_max_abs_diff"]
    assert "removed stale" in capsys.readouterr().err


def test_baked_normalisation_takes_raw_pixels(run, capsys):
    assert cli.main(["export", str(run), "--bake-normalization"]) == 0
    meta = _meta(run)
    folder = run / "export" / "0"
    assert meta["preprocessing"]["baked_into"] == ["onnx", "torchscript"]
    assert "baked into onnx, torchscript" in capsys.readouterr().out
    raw, labels = _test_digits()
    x_raw = torch.from_numpy(raw[:64]).float().unsqueeze(1)
    pre = meta["preprocessing"]
    with torch.no_grad():
        expected = _retrained_child(run)((x_raw / 255.0 - pre["mean"][0]) / pre["std"][0])
        torch.testing.assert_close(torch.jit.load(str(folder / "model.ts"))(x_raw), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_onnx(folder / "model.onnx", x_raw), expected, rtol=1e-4, atol=1e-4)
    ns = _snippet(folder)  # the snippet reads baked_into and skips its own normalisation
    correct = sum(p == str(y) for p, y in zip(ns["predict"](raw), labels.tolist()))
    recorded = json.loads((run / "results.json").read_text())["candidates"][0]["retrain"]["test_acc"]
    assert correct == round(recorded * len(labels))
    # model.pt stays the plain child's state dict (loads into the nascore child)
    from nascore.io import load_torch

    assert set(load_torch(folder / "model.pt")["model"]) == set(_retrained_child(run).state_dict())


def test_baking_defaults_to_the_run_s_own_export_stage(run):
    """Callers that do not say (the Python API, `nascore export`) bake exactly when the run's export stage does."""
    from nascore.pipeline.export import export_one, stage_defaults
    from nascore.pipeline.run import resume_run

    ctx = resume_run(run, quiet=True, export_only=True)
    ctx.log.close()
    assert stage_defaults(ctx) == (["json", "torchscript", "onnx"], False)
    ctx.cfg.stages[2] = ctx.cfg.stages[2].model_copy(update={"bake_normalization": True})
    export_one(ctx, 0, ["json"])
    assert _meta(run)["preprocessing"]["baked_into"] == ["onnx", "torchscript"]
    export_one(ctx, 0, ["json"], bake_normalization=False)  # an explicit choice wins
    assert _meta(run)["preprocessing"]["baked_into"] == []
