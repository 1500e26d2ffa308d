"""TensorBoard mirror of metrics.jsonl: tags, x axes, the run-folder layout, resume, the opt-in/out."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from nascore.pipeline import tensorboard as tblog
from nascore.errors import ConfigError
from nascore.testing import run_config, tiny_config


def _need_tensorboard() -> None:
    if not tblog.available():
        if os.environ.get("NASCORE_CI"):
            pytest.fail("tensorboard missing: pip install -e '.[tensorboard]'")
        pytest.skip("tensorboard not installed")


def test_records_map_to_tags_with_their_own_x_axis():
    c: Counter = Counter()
    x, vals = tblog.scalars({"time": 1.0, "kind": "train", "step": 40, "epoch": 2, "stage": "0", "loss": 0.5,
                             "acc": 0.25}, c)
    assert x == 40
    assert dict(vals) == {"train/epoch/stage 0": 2.0, "train/loss/stage 0": 0.5, "train/acc/stage 0": 0.25}
    # no counter field: the x axis counts records of that kind in that stage
    for expected in (1, 2, 3):
        x, vals = tblog.scalars({"kind": "candidate", "stage": "1", "arch": "a-b", "score": 0.1 * expected,
                                 "macs": 10, "flag": True, "bad": float("nan")}, c)
        assert x == expected
    assert dict(vals) == {"candidate/score/stage 1": pytest.approx(0.3), "candidate/macs/stage 1": 10.0}
    # events are named by their event; identity fields split curves (one per retrained candidate)
    x, vals = tblog.scalars({"kind": "event", "event": "nse_round", "stage": "0.2.1", "round": 2,
                             "hypervolume": 0.7}, c)
    assert (x, vals) == (2, [("nse_round/hypervolume/stage 0.2.1", 0.7)])
    x, vals = tblog.scalars({"kind": "retrain", "index": 1, "epoch": 3, "loss": 0.2}, c)
    assert (x, vals) == (3, [("retrain/loss/index 1", 0.2)])


def test_tensorboard_true_without_the_package_names_the_field_and_the_fix(monkeypatch):
    monkeypatch.setattr(tblog, "available", lambda: False)
    assert tblog.resolve(None) is False and tblog.resolve(False) is False
    with pytest.raises(ConfigError) as e:
        run_config(tiny_config(tensorboard=True), None)
    assert "tensorboard: the tensorboard package is not installed" in str(e.value)
    assert "pip install 'nascore[tensorboard]'" in str(e.value)


def _cfg(**kw):
    return tiny_config(stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 6}}, "evaluator": {"name": "accuracy"}},
    ], log_every=2, **kw)


def _scalars(logdir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """What `tensorboard --logdir logdir` shows: run name -> tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    mux.Reload()
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run, tags in mux.Runs().items():
        out[run] = {t: [(e.step, e.value) for e in mux.Scalars(run, t)] for t in tags["scalars"]}
    return out


def test_a_run_folder_is_a_tensorboard_run_named_by_the_folder(tmp_path):
    _need_tensorboard()
    runs = tmp_path / "runs"
    run_config(_cfg(), runs / "alpha")
    run_config(_cfg(seed=1, tensorboard=True), runs / "beta")
    shown = _scalars(runs)
    assert set(shown) == {"alpha", "beta"}  # `tensorboard --logdir runs/` lists runs by folder name
    metrics = [json.loads(line) for line in (runs / "alpha" / "metrics.jsonl").read_text().splitlines()]
    train = [(m["step"], m["loss"]) for m in metrics if m["kind"] == "train"]
    assert shown["alpha"]["train/loss/stage 0"] == [(s, pytest.approx(v, rel=1e-6)) for s, v in train]
    scores = [m["score"] for m in metrics if m["kind"] == "candidate"]
    assert [v for _, v in shown["alpha"]["candidate/score/stage 1"]] == pytest.approx(scores, rel=1e-6)
    assert "best/score/stage 1" in shown["alpha"] and "stage_end/seconds/stage 0" in shown["alpha"]


def test_tensorboard_false_writes_no_event_files(tmp_path):
    run_config(_cfg(tensorboard=False), tmp_path / "run")
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "metrics.jsonl").stat().st_size > 0  # metrics.jsonl is always written


def test_a_resumed_log_continues_the_implicit_x_axis(tmp_path):
    _need_tensorboard()
    from nascore.pipeline.metrics import MetricsLog

    path = tmp_path / "run" / "metrics.jsonl"
    path.parent.mkdir()
    log = MetricsLog(path, tensorboard=True)
    for s in (0.1, 0.2):
        log.metric("candidate", stage="1", score=s)
    log.close()
    log = MetricsLog(path, tensorboard=True)  # as `nascore resume` opens it
    log.metric("candidate", stage="1", score=0.3)
    log.close()
    assert _scalars(tmp_path)["run"]["candidate/score/stage 1"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)),
                                                                     (3, pytest.approx(0.3))]


def test_overwrite_removes_the_old_event_files(tmp_path):
    _need_tensorboard()
    run_config(_cfg(), tmp_path / "run")
    first = set((tmp_path / "run").glob("events.out.tfevents.*"))
    run_config(_cfg(), tmp_path / "run")  # run_config overwrites
    assert first and not first & set((tmp_path / "run").glob("events.out.tfevents.*"))
