"""A run killed with SIGKILL mid-training resumes and ends with the same result as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

CONFIG = {
    "name": "resume-test",
    "seed": 3,
    "device": "cpu",
    "space": {"name": "tiny_chain"},
    "dataset": {"name": "mnist5k"},
    "data": {"batch_size": 64, "limit": 2000},
    "constraint": {"macs_max": 1.0e6},
    "checkpoint_every": 5,
    "stages": [
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 3, "lr": 0.1}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 8}},
         "evaluator": {"name": "accuracy", "options": {"recal_batches": 3}}},
    ],
}


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "NASCORE_LOAD_PLUGINS": ""}


def _run(args, cwd):
    return subprocess.run([sys.executable, "-m", "nascore", *args], capture_output=True, text=True, env=_env(),
                          cwd=cwd, timeout=300)


def _results(run_dir: Path):
    data = json.loads((run_dir / "results.json").read_text())
    return [(c["arch"], round(c["score"], 6), c["macs"]) for c in data["candidates"]]


def test_sigkill_mid_training_then_resume_gives_the_same_result(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    ref = _run(["run", str(cfg), "--out", str(tmp_path / "ref"), "--quiet"], tmp_path)
    assert ref.returncode == 0, ref.stderr

    victim = tmp_path / "victim"
    proc = subprocess.Popen([sys.executable, "-m", "nascore", "run", str(cfg), "--out", str(victim), "--quiet"],
                            env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        ckpts = sorted((victim / "checkpoints").glob("stage-0-*.pt")) if (victim / "checkpoints").exists() else []
        if len(ckpts) >= 2:  # a couple of in-stage checkpoints exist: kill in the middle of training
            proc.send_signal(signal.SIGKILL)
            killed_at = [p.name for p in ckpts]
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert killed_at is not None, "the run finished before it could be killed"
    assert not (victim / "results.json").exists()

    resumed = _run(["resume", str(victim), "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in (victim / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "resume" for e in events), "the trainer did not resume from its checkpoint"
    assert _results(victim) == _results(tmp_path / "ref")


SEARCH_CONFIG = dict(CONFIG, stages=[
    {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 6}}},
    {"kind": "search", "selector": {"name": "evolution", "options": {
        "population": 8, "generations": 6, "top_k": 3, "mutations": 4, "crossovers": 4}},
     "evaluator": {"name": "accuracy", "options": {"recal_batches": 2, "eval_batches": 2}}},
])


def _kill_when(cmd, run_dir, ready, tmp_path):
    proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if ready(run_dir):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    return killed


def _in_search(run_dir: Path) -> bool:
    try:
        state = json.loads((run_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    gens = state.get("evolution", {}).get("1", {})
    return "0" in state.get("completed", []) and bool(gens)


def test_sigkill_mid_search_then_resume_gives_the_same_result(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(SEARCH_CONFIG))
    ref = _run(["run", str(cfg), "--out", str(tmp_path / "ref"), "--quiet"], tmp_path)
    assert ref.returncode == 0, ref.stderr
    victim = tmp_path / "victim"
    cmd = [sys.executable, "-m", "nascore", "run", str(cfg), "--out", str(victim), "--quiet"]
    assert _kill_when(cmd, victim, _in_search, tmp_path), "the search finished before it could be killed"
    assert not (victim / "results.json").exists() or "1" not in json.loads((victim / "state.json").read_text())["completed"]
    resumed = _run(["resume", str(victim), "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert _results(victim) == _results(tmp_path / "ref")


def test_resume_of_a_finished_run_is_a_no_op_and_a_second_run_is_refused(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    quick = dict(CONFIG, stages=[{"kind": "train", "trainer": {"name": "single_path",
                                                                "options": {"epochs": 1, "steps_per_epoch": 3}}}])
    cfg.write_text(yaml.safe_dump(quick))
    assert _run(["run", str(cfg), "--out", str(tmp_path / "r"), "--quiet"], tmp_path).returncode == 0
    again = _run(["run", str(cfg), "--out", str(tmp_path / "r"), "--quiet"], tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "nascore resume" in again.stderr
    assert _run(["resume", str(tmp_path / "r"), "--quiet"], tmp_path).returncode == 0


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path):
    from nascore.testing import make_context, tiny_config

    ctx = make_context(tiny_config(), run_dir=tmp_path / "run")
    ctx.stage_key = "0"
    ck = ctx.checkpoints
    ck.save({"step": 1})
    ck.save({"step": 2})
    newest = sorted((tmp_path / "run" / "checkpoints").glob("stage-0-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:20])  # truncated, as after a crash on a full disk
    assert ctx.checkpoints.load_latest() == {"step": 1}
