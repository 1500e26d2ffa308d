"""Issue 16, validation side: each test reproduces one way a bad config, name, argument, diverging
loss, broken plugin or closed pipe used to end in an internal error, a hang, a silent NaN or files
written before the error; now each ends in one clean error (exit 2) and nothing written."""

import math
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nascore.builtin.tiny import TinyChainSpace
from nascore.cli import main
from nascore.config import validate
from nascore.errors import ConfigError, ConstraintError, NascoreError, PluginError, TrainingDiverged
from nascore.hookspecs import hookimpl
from nascore.io import load_torch
from nascore.registry import NoOptions, plugin_error_of, set_registry
from nascore.roles import SearchResult
from nascore.testing import make_registry, run_config, tiny_config
from nascore.trainer import SupernetTrainer, TrainerConfig

SEARCH = [
    {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
    {"kind": "search", "selector": {"name": "random", "options": {"samples": 3}}, "evaluator": "accuracy"},
    {"kind": "retrain", "epochs": 1},
]


@pytest.fixture(autouse=True)
def _builtins_only(monkeypatch):
    monkeypatch.setenv("NASCORE_LOAD_PLUGINS", "")


def _cli_run(tmp_path, cfg, *args):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return main(["run", str(path), "--out", str(tmp_path / "r"), "--smoke", "--quiet", *args])


def _clean(err: str) -> bool:
    return "nascore: error" in err and "internal error" not in err and "Traceback" not in err


# -- test plugin (an object of hookimpls defined here, so its code lives in this file) ---------------
class _FixedShapeSpace:
    """A space factory that ignores the dataset (always 3x32x32, 10 classes)."""

    @staticmethod
    def make(cfg, ctx=None):
        return TinyChainSpace(layers=2, width=4, input_shape=(3, 32, 32), num_classes=10)


class _BoomSelector:
    def __init__(self, cfg, ctx=None):
        pass

    def search(self, ctx, evaluator):
        return {"best": 1 / 0}  # the plugin's bug


class _CorruptingTrainer(SupernetTrainer):
    """Loss stays finite, but after its 3rd step a weight becomes inf (a diverged update)."""

    def after_step(self, ctx, x, y, arch, logits, loss):
        if self.step == 3:
            with torch.no_grad():
                next(ctx.supernet.parameters()).view(-1)[0] = float("inf")
        return {}


class _H16bPlugin:
    @staticmethod
    @hookimpl
    def register_search_spaces(register):
        register("fixed_shape", _FixedShapeSpace.make, config=NoOptions)

    @staticmethod
    @hookimpl
    def register_selectors(register):
        register("boom", _BoomSelector, config=NoOptions)

    @staticmethod
    @hookimpl
    def register_trainers(register):
        register("corrupting", _CorruptingTrainer, config=TrainerConfig)


class _BrokenPlugin:
    @staticmethod
    @hookimpl
    def register_selectors(register):
        raise RuntimeError("this plugin is broken")


def _registry():
    return make_registry((_H16bPlugin, "h16b-test"), (_BrokenPlugin, "h16b-broken"))


# -- 1. the whole config is checked before anything is written or trained ---------------------------
def test_seed_past_64_bits_is_a_config_error_and_nothing_is_written(tmp_path, capsys):
    # was: "internal error: ValueError: Overflow when unpacking long long", after config.yaml was written
    assert _cli_run(tmp_path, tiny_config(), "--set", f"seed={2**64}") == 2
    err = capsys.readouterr().err
    assert _clean(err) and "seed" in err and "4294967295" in err
    assert not (tmp_path / "r").exists()
    from nascore.pipeline.run import open_run

    ctx = open_run(tiny_config(seed=2**32 - 1, data={"batch_size": 32, "random_labels": True}), run_dir=None,
                   registry=make_registry())  # the largest seed: its derived seeds fit too
    next(iter(ctx.data.batches("train", epoch=10**6)))


def test_device_is_checked_before_anything_is_written(tmp_path, capsys):
    assert _cli_run(tmp_path, tiny_config(device="gpu7")) == 2
    assert "device" in capsys.readouterr().err and not (tmp_path / "r").exists()
    if not torch.cuda.is_available():  # was: error only after config.yaml was written
        assert _cli_run(tmp_path, tiny_config(device="cuda:3")) == 2
        assert "CUDA is not available" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_space_and_dataset_are_cross_checked_before_anything_is_written(tmp_path):
    reg = _registry()
    from nascore.pipeline.run import open_run

    cfg = tiny_config(space={"name": "fixed_shape"})  # synthetic gives 1x16x16 images
    with pytest.raises(ConfigError, match=r"built for input 3x32x32, the dataset's images are 1x16x16"):
        open_run(cfg, run_dir=tmp_path / "r", registry=reg)
    cfg = tiny_config(space={"name": "fixed_shape"}, dataset={"name": "synthetic", "options": {
        "shape": [3, 32, 32], "num_classes": 4}})
    with pytest.raises(ConfigError, match="predicts 10 classes, the dataset has 4"):
        open_run(cfg, run_dir=tmp_path / "r", registry=reg)
    assert not (tmp_path / "r").exists()
    cfg["dataset"]["options"]["num_classes"] = 10
    open_run(cfg, run_dir=None, registry=reg)  # consistent: accepted


def test_infeasible_constraint_fails_at_start_from_the_cost_table(tmp_path, capsys):
    # was: reported when the search stage started, after the whole supernet training
    reg = make_registry()
    from nascore.pipeline.run import open_run

    ctx = open_run(tiny_config(stages=SEARCH), run_dir=None, registry=reg)
    mmin, _, pmin, _ = ctx.cost.bounds()
    open_run(tiny_config(stages=SEARCH, constraint={"macs_max": mmin}), run_dir=None, registry=reg)  # just feasible
    with pytest.raises(ConstraintError, match="smallest architecture"):
        open_run(tiny_config(stages=SEARCH, constraint={"macs_max": mmin - 1}), run_dir=None, registry=reg)
    with pytest.raises(ConstraintError, match="params"):
        open_run(tiny_config(stages=SEARCH, constraint={"params_max": pmin - 1}), run_dir=None, registry=reg)
    assert _cli_run(tmp_path, tiny_config(stages=SEARCH, constraint={"macs_max": mmin - 1})) == 2
    err = capsys.readouterr().err
    assert _clean(err) and "admits no architecture" in err and "1x16x16" in err
    assert not (tmp_path / "r").exists(), "no folder, no checkpoint: nothing was trained"


def test_export_extras_and_finite_numbers_are_checked(tmp_path, monkeypatch, capsys):
    reg = make_registry()
    cfg = tiny_config(stages=[*SEARCH[:2], {"kind": "export", "formats": ["json", "onnx"]}])
    with pytest.raises(ConfigError, match=r"needs the package\(s\) onnx, onnxruntime.*nascore\[onnx\]"):
        validate(cfg, reg, module_available=lambda name: False)
    validate(cfg, reg, module_available=lambda name: True)
    import nascore.config

    monkeypatch.setattr(nascore.config, "_module_available", lambda name: name != "onnxruntime")
    assert _cli_run(tmp_path, cfg) == 2
    assert "onnxruntime" in capsys.readouterr().err and not (tmp_path / "r").exists()
    for path, value in (("stages.0.trainer.options.lr", ".inf"), ("stages.2.lr", ".nan"),
                        ("dataset.options.noise", ".inf"), ("constraint.macs_max", "1e400")):
        assert _cli_run(tmp_path, tiny_config(stages=SEARCH), "--set", f"{path}={value}") == 2, path
        err = capsys.readouterr().err
        assert _clean(err) and "finite" in err, (path, err)
    assert not (tmp_path / "r").exists()


# -- 2. run names and config paths -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../victim", "a/b", "x" * 300, "..", ".hidden"])
def test_unsafe_run_name_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, name):
    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    monkeypatch.chdir(work)
    (work / "c.yaml").write_text(yaml.safe_dump(tiny_config(name=name)))
    # was: runs/../victim was cleared by --overwrite and the run written outside runs/
    assert main(["run", "c.yaml", "--smoke", "--quiet", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert _clean(err) and "name" in err
    assert (victim / "precious.txt").read_text() == "keep me" and sorted(os.listdir(victim)) == ["precious.txt"]
    assert sorted(os.listdir(work)) == ["c.yaml"]


def test_a_folder_as_config_path_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "conf.yaml").mkdir()
    for target in (tmp_path, tmp_path / "conf.yaml"):  # was: internal error: IsADirectoryError
        assert main(["run", str(target)]) == 2
        err = capsys.readouterr().err
        assert _clean(err) and "is a folder" in err


# -- 3. CLI arguments ----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["sample", "tiny_chain", "-n", "-3"], ["sample", "tiny_chain", "-n", str(10**12)],
    ["sample", "tiny_chain", "-n", "1e300"], ["rank", "tiny_chain", "--top", "nan"],
    ["rank", "tiny_chain", "--threads", str(2**70)], ["rank", "tiny_chain", "--seeds", str(2**64)],
    ["export", "runs/x", "--arch", "-1"],
    ["lut", "build", "tiny_chain", "--batch", "0"], ["lut", "build", "tiny_chain", "--repeats", str(2**70)],
    ["lut", "check", "t.json", "-n", "-3"], ["lut", "check", "t.json", "--folds", "1"],
])
def test_out_of_range_numeric_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse: usage line + the flag, exit 2; was a hang or a crash
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["sample", "tiny_chain", "--option", "width=abc"], ["sample", "tiny_chain", "--option", "nosuch=1"],
    ["sample", "tiny_chain", "--option", "width=1e300"], ["cost", "tiny_chain", "conv3-skip-conv5-skip", "--option", "width=-5"],
    ["cost", "tiny_chain", "conv3-skip-conv5-skip", "--input", "1x99999x99999"],
])
def test_bad_space_options_are_clean_errors(argv, capsys):
    assert main(argv) == 2  # was: internal error: ValidationError
    assert _clean(capsys.readouterr().err)


def test_sample_n_at_the_cap_finishes(capsys):
    assert main(["sample", "tiny_chain", "-n", "0"]) == 0 and capsys.readouterr().out == ""
    assert main(["sample", "tiny_chain", "-n", "3", "--seed", str(2**80)]) == 0
    assert len(capsys.readouterr().out.split()) == 3


EXTREME = st.sampled_from([1e300, -1e300, math.inf, -math.inf, math.nan, 2**70, -2**70, 2**64, 10**12, -10**12,
                           1e-300, "1e400", ".inf", ".nan"]) | st.integers(min_value=10**12) | \
    st.integers(max_value=-10**12) | st.floats(min_value=1e12) | st.floats(max_value=-1e12)
NUMERIC_FIELDS = [
    "seed", "checkpoint_every", "log_every", "data.batch_size", "data.eval_batch_size", "data.val_fraction",
    "data.limit", "data.num_workers", "constraint.macs_max", "constraint.params_min",
    "stages.0.trainer.options.lr", "stages.0.trainer.options.epochs", "stages.0.trainer.options.momentum",
    "stages.0.trainer.options.grad_clip", "stages.0.trainer.options.warmup_steps", "stages.1.keep",
    "stages.1.selector.options.samples", "stages.2.epochs", "stages.2.lr", "stages.2.top",
    "space.options.width", "space.options.layers", "dataset.options.size", "dataset.options.test_size",
    "dataset.options.num_classes", "dataset.options.noise",
]
REG = make_registry()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(NUMERIC_FIELDS), value=EXTREME)
def test_extreme_numbers_end_in_a_valid_config_or_a_clean_error(field, value):
    """Numbers far outside ±10^6 through --set: a valid run context (data and space built, costs
    checked) or a NascoreError; never another exception, never a hang."""
    from nascore.config import apply_overrides
    from nascore.pipeline.run import open_run

    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    try:
        data = apply_overrides(tiny_config(stages=SEARCH), [f"{field}={text}"])
        ctx = open_run(data, run_dir=None, registry=REG)
    except NascoreError:
        return
    assert all(math.isfinite(v) for v in _floats(ctx.cfg.model_dump()))  # what was accepted is finite
    assert ctx.cfg.seed <= 2**32 - 1


def _floats(node):
    if isinstance(node, float):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _floats(v)
    elif isinstance(node, list):
        for v in node:
            yield from _floats(v)


@settings(max_examples=25, deadline=None)
@given(n=st.one_of(st.integers(), st.sampled_from(["1e300", "inf", "nan", str(2**70)])),
       seed=st.one_of(st.integers(min_value=-2**80, max_value=2**80), st.sampled_from(["1e300", "nan"])))
def test_extreme_sample_arguments_end_cleanly(n, seed):
    try:
        code = main(["sample", "tiny_chain", "-n", str(n), "--seed", str(seed)])
    except SystemExit as e:
        assert e.code == 2
        return
    assert code == 0 and 0 <= int(n) <= 100_000


# -- 4. non-finite losses stop every training loop ------------------------------------------------------
def test_retrain_nan_stops_with_stage_step_and_fix(tmp_path, capsys):
    # was: exit 0, test_loss: nan in results.json
    for lr in ("1e6", ".inf"):
        assert _cli_run(tmp_path, tiny_config(stages=SEARCH), "--set", f"stages.2.lr={lr}", "--overwrite") == 2
        err = capsys.readouterr().err
        assert _clean(err), err
        if lr == "1e6":
            assert "stage 2 (retrain #0)" in err and "step" in err and "--set stages.2.lr=" in err
            assert not (tmp_path / "r" / "retrain" / "0" / "model.pt").exists()
        else:
            assert "finite" in err  # refused by the config, before any training


def test_supernet_divergence_never_replaces_the_last_good_checkpoint(tmp_path):
    cfg = tiny_config(checkpoint_every=1, stages=[
        {"kind": "train", "trainer": {"name": "corrupting", "options": {"epochs": 3, "steps_per_epoch": 5}}}])
    with pytest.raises(TrainingDiverged, match=r"stage 0 .*weights became non-finite at step 3") as exc:
        run_config(cfg, tmp_path, registry=_registry())
    assert "stages.0.trainer.options.lr" in str(exc.value)
    saved = sorted((tmp_path / "checkpoints").glob("stage-0-*.pt"))
    assert saved, "the checkpoints before the divergence are kept"
    for path in saved:
        state = load_torch(path)
        assert state["step"] < 3
        assert all(torch.isfinite(t).all() for t in state["supernet"].values() if t.is_floating_point())


def test_supernet_nan_loss_names_stage_and_fix():
    cfg = tiny_config(stages=[{"kind": "train", "trainer": {"name": "single_path", "options": {
        "lr": 1e30, "grad_clip": None, "epochs": 3}}}])
    with pytest.raises(TrainingDiverged, match=r"stage 0 \(train.*loss became nan at step \d+") as exc:
        run_config(cfg, None)
    assert "--set stages.0.trainer.options.lr=" in str(exc.value)


# -- 5. plugin exceptions name the plugin and component ---------------------------------------------------
def test_exception_in_plugin_code_names_plugin_and_component(tmp_path, capsys):
    reg = _registry()
    cfg = tiny_config(stages=[SEARCH[0], {"kind": "search", "selector": "boom"}])
    with pytest.raises(ZeroDivisionError) as exc:  # the exception itself propagates (callers catch its type)
        run_config(cfg, tmp_path / "a", registry=reg)
    err = plugin_error_of(exc.value)
    assert isinstance(err, PluginError)
    assert re.search(r"selector 'boom' from plugin 'h16b-test'.*ZeroDivisionError.*"
                     r"test_integrity_validation.py:\d+ in search.*stage 1", str(err)), str(err)
    assert any("selector 'boom' from plugin 'h16b-test'" in n for n in getattr(exc.value, "__notes__", []))
    set_registry(reg)
    assert _cli_run(tmp_path, cfg) == 2  # was: "nascore internal error … please report it"
    err = capsys.readouterr().err
    assert _clean(err) and "'h16b-test'" in err and "not in nascore" in err


def test_a_core_bug_is_still_an_internal_error(capsys, monkeypatch):
    import nascore.cli

    set_registry(_registry())  # plugins loaded, but none of their code is on the traceback
    monkeypatch.setattr(nascore.cli, "cmd_recipes", math.sqrt)  # raises TypeError from no plugin's code
    assert main(["recipes"]) == 1
    assert "internal error: TypeError" in capsys.readouterr().err


def test_one_broken_plugin_never_takes_the_cli_down(capsys):
    set_registry(_registry())
    assert main(["list", "selectors"]) == 0
    assert "boom" in capsys.readouterr().out
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "h16b-broken" in out and "this plugin is broken" in out


# -- 6. a closed pipe -------------------------------------------------------------------------------------
def test_closed_pipe_exits_quietly_in_process(monkeypatch, capsys):
    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["list", "spaces"]) == 141  # was: internal error: BrokenPipeError … please report it
    assert capsys.readouterr().err == ""


def test_closed_pipe_exits_quietly_as_a_process():
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first byte: like `| head -0`
    env = {**os.environ, "NASCORE_LOAD_PLUGINS": ""}
    proc = subprocess.run([sys.executable, "-m", "nascore", "schema", "space", "mobilenet"], stdout=write,
                          stderr=subprocess.PIPE, env=env, timeout=120)
    os.close(write)
    assert proc.returncode in (0, 141)
    assert proc.stderr.decode() == "", proc.stderr.decode()
