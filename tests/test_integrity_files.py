"""Run folders you can trust (issue 16): digests, one run per folder, validated readers, strict JSON,
read-only folders, temp files and permissions. One test (or a few) per bullet of the issue."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nascore import cli, io
from nascore.errors import CheckpointError
from nascore.testing import run_config, tiny_config

TRAIN = {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 8}}}
SEARCH = {"kind": "search", "selector": {"name": "random", "options": {"samples": 6}},
          "evaluator": {"name": "accuracy", "options": {"recal_batches": 2}}}
RETRAIN = {"kind": "retrain", "epochs": 1, "top": 1}


def _cfg(*stages: dict, **kw) -> dict:
    return tiny_config(checkpoint_every=3, tensorboard=False, stages=list(stages), **kw)


@pytest.fixture(autouse=True)
def _builtins_only(monkeypatch):
    monkeypatch.setenv("NASCORE_LOAD_PLUGINS", "")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run: train (with stage checkpoints), search, retrain of the best."""
    torch.set_num_threads(1)
    env = pytest.MonkeyPatch()  # builtins only while building; undone so later modules see plugins
    env.setenv("NASCORE_LOAD_PLUGINS", "")
    d = tmp_path_factory.mktemp("fin") / "run"
    run_config(_cfg(TRAIN, SEARCH, RETRAIN), d)
    env.undo()
    return d


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> tuple[Path, Path]:
    """(a run killed during its first stage, the same run uninterrupted).

    The kill is made the way the spos resume test makes it: the stage's end checkpoint, state.json
    and the stage-end supernet are removed, so that the step-6 checkpoint is the newest one left.
    """
    torch.set_num_threads(1)
    env = pytest.MonkeyPatch()  # builtins only while building; undone so later modules see plugins
    env.setenv("NASCORE_LOAD_PLUGINS", "")
    root = tmp_path_factory.mktemp("kill")
    full = root / "full"
    run_config(_cfg(TRAIN), full)
    part = root / "part"
    run_config(_cfg(TRAIN), part)
    for f in ("state.json", "results.json", "checkpoints/supernet.pt"):
        (part / f).unlink()
    ckpts = sorted((part / "checkpoints").glob("stage-0-*.pt"))
    assert len(ckpts) == 2
    ckpts[-1].unlink()  # the step-6 checkpoint is the newest left
    env.undo()
    return part, full


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _flip(path: Path, n: int = 3, at: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    for k in range(n):
        raw[int(len(raw) * at) + 7 * k] ^= 0x5A
    path.write_bytes(bytes(raw))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return io.load_torch(run / "checkpoints" / "supernet.pt")["supernet"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. content digests ------------------------------------------------------------------------------
def test_every_writer_seals_and_a_flip_anywhere_is_detected(tmp_path):
    io.save_torch(tmp_path / "a.pt", {"w": torch.arange(50.0)})
    io.write_json(tmp_path / "a.json", {"a": 1, "b": [0.5, "x"]})
    io.write_yaml_text(tmp_path / "a.yaml", "a: 1\nb: [1, 2]\n")
    line = io.seal_line({"kind": "train", "step": 3, "loss": 0.25})
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], torch.arange(50.0))  # plain torch reads it
    assert io.read_json(tmp_path / "a.json") == {"a": 1, "b": [0.5, "x"]}
    assert yaml.safe_load((tmp_path / "a.yaml").read_text()) == {"a": 1, "b": [1, 2]}  # the digest is a comment
    assert io.parse_line(line) == {"kind": "train", "step": 3, "loss": 0.25}
    readers = {"a.pt": io.load_torch, "a.json": io.read_json, "a.yaml": io.read_text_verified}
    for name, read in readers.items():
        clean = (tmp_path / name).read_bytes()
        for pos in range(0, len(clean), max(1, len(clean) // 40)):  # one flipped byte at 40 places
            raw = bytearray(clean)
            raw[pos] ^= 0x01
            (tmp_path / name).write_bytes(bytes(raw))
            with pytest.raises(CheckpointError, match=name):
                read(tmp_path / name)
        (tmp_path / name).write_bytes(clean)
    for pos in range(len(line)):
        bad = line[:pos] + chr(ord(line[pos]) ^ 0x01) + line[pos + 1:]
        try:
            got = io.parse_line(bad)
        except ValueError:
            continue
        assert got == io.parse_line(line), (pos, bad)  # whatever parses unflagged is the same record
    # a copy written by hand (no digest) is read unverified, as before
    (tmp_path / "h.json").write_text(json.dumps({"a": 2}))
    assert io.read_json(tmp_path / "h.json") == {"a": 2}


def test_a_flipped_newest_stage_checkpoint_falls_back_with_a_warning(killed, tmp_path, capsys):
    part, full = killed
    run = _copy(part, tmp_path)
    newest = sorted((run / "checkpoints").glob("stage-0-*.pt"))[-1]
    _flip(newest)
    rc, _, err = _cli(capsys, "resume", str(run), "--quiet")
    assert rc == 0, err
    assert f"{newest}: content digest mismatch" in err and "falling back to the previous checkpoint" in err
    # nothing older is left: the stage is trained afresh
    for (k, a), b in zip(_weights(full).items(), _weights(run).values()):
        assert torch.equal(a, b), k  # the same weights as the uninterrupted run: the damage was not used


def test_a_flipped_retrained_model_is_an_error_for_export_and_supernet_flip_for_resume(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    _flip(run / "retrain" / "0" / "model.pt")
    rc, _, err = _cli(capsys, "export", str(run), "--format", "json")
    assert rc == 2 and "retrain/0/model.pt: content digest mismatch" in err and "internal error" not in err
    assert not (run / "export").exists()  # nothing shipped
    run2 = _copy(finished, tmp_path / "b")
    _flip(run2 / "checkpoints" / "supernet.pt")
    rc, _, err = _cli(capsys, "export", str(run2), "--format", "json")
    # export of candidate 0 uses the retrained weights; the supernet is still read and checked
    assert rc == 2 and "supernet.pt: content digest mismatch" in err


# -- 2. a run folder belongs to one run ---------------------------------------------------------------
def test_run_onto_a_folder_of_a_run_killed_in_its_first_stage_refuses_and_writes_nothing(killed, tmp_path, capsys):
    part, _ = killed
    run = _copy(part, tmp_path)
    (run / "notes.txt").write_text("mine")
    before = _snapshot(run)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(_cfg(TRAIN, seed=5)))
    rc, _, err = _cli(capsys, "run", str(other), "--out", str(run), "--quiet")
    assert rc == 2 and "already holds a run" in err and "nothing was written" in err and "nascore resume" in err
    assert _snapshot(run) == before  # config.yaml, checkpoints, log: untouched
    rc, _, err = _cli(capsys, "resume", str(run), "--quiet")
    assert rc == 0, err  # the old run is still resumable
    (run / "retrain" / "7").mkdir(parents=True)
    io.save_torch(run / "checkpoints" / "stage-9-000000.pt", {"x": torch.ones(1)})
    rc, _, err = _cli(capsys, "run", str(other), "--out", str(run), "--quiet", "--overwrite")
    assert rc == 0, err
    assert not (run / "retrain").exists() and not (run / "checkpoints" / "stage-9-000000.pt").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 5
    assert (run / "notes.txt").read_text() == "mine"  # not nascore's: kept


def test_a_folder_whose_run_failed_before_its_first_stage_may_be_reused(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    io.write_yaml_text(run / "config.yaml", yaml.safe_dump(_cfg(TRAIN)))
    (run / "metrics.jsonl").write_text("")
    (run / ".config.yaml.x1.tmp").write_text("half")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(TRAIN, seed=4)))
    rc, _, err = _cli(capsys, "run", str(cfg), "--out", str(run), "--quiet")
    assert rc == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 4
    assert not (run / ".config.yaml.x1.tmp").exists()


# -- 3. every reader validates and names the file and the field ----------------------------------------
def _damage(run: Path, damage: str) -> str:
    """Apply ``damage`` to a copy of a finished run; returns what the error must say."""
    state = io.read_json(run / "state.json")
    if damage == "state_list":
        io.write_json(run / "state.json", [])  # a valid digest: only the structure is wrong
        return "state.json: expected a JSON object"
    if damage == "candidate_fields":
        state["candidates"][0] = {"arch": state["candidates"][0]["arch"]}
        io.write_json(run / "state.json", state)
        return "state.json: malformed (candidates.0.ops: Field required"
    if damage == "results_list":
        io.write_json(run / "results.json", [])
        return "results.json: expected a JSON object"
    text = (run / "config.yaml").read_text()
    if damage == "config_truncated":
        (run / "config.yaml").write_text(text[: len(text) // 2])
        return "config.yaml: content digest mismatch"
    body = io.read_text_verified(run / "config.yaml")  # a hand-written copy (no digest line), cut
    (run / "config.yaml").write_text(body[: body.index("stages:") + 30])
    return "config.yaml"


@pytest.mark.parametrize("damage", ["state_list", "candidate_fields", "results_list", "config_truncated",
                                    "config_unsealed_truncated"])
def test_malformed_run_files_give_clean_errors(finished, tmp_path, capsys, damage):
    for name in ("resume", "export", "report", "compare"):
        run = _copy(finished, tmp_path / name)
        where = _damage(run, damage)
        args = {"resume": ["resume", str(run), "--quiet"], "export": ["export", str(run), "--format", "json"],
                "report": ["report", str(run)], "compare": ["compare", str(run), str(finished)]}[name]
        rc, out, err = _cli(capsys, *args)
        assert "internal error" not in err and "Traceback" not in err, (name, err)
        if damage == "results_list":
            # results.json is derived: rebuilt (resume) or replaced by state.json (report, compare);
            # export reads state.json only
            assert rc == 0, (name, err)
            if name != "export":
                assert where in err, (name, err)
            if name == "compare":
                assert out.splitlines()[2].split()[2] == out.splitlines()[3].split()[2]  # same best arch as the intact run
            continue
        assert rc == 2 and where in err, (name, rc, err)


def test_a_damaged_results_json_of_a_finished_run_is_rebuilt_from_state(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    good = io.read_json(run / "results.json")
    _flip(run / "results.json", at=0.6)
    rc, _, err = _cli(capsys, "resume", str(run), "--quiet")
    assert rc == 0 and "rebuilt results.json from state.json" in err
    assert io.read_json(run / "results.json") == good


def test_non_object_metrics_lines_are_skipped_with_a_warning(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('[1, 2]\n"text"\n3\n{"kind": "train", "step": "x", "loss": 1}\n{"no": "kind"}\n{"kind": "tr')
    rc, _, err = _cli(capsys, "report", str(run))
    assert rc == 0 and "metrics.jsonl: skipped 6 bad line(s)" in err and "not an object" in err


# -- 4. strict JSON --------------------------------------------------------------------------------------
def _strict(text: str):
    def no(name):
        raise AssertionError(f"bare {name} written")
    return json.loads(text, parse_constant=no)


def test_non_finite_values_are_written_as_null_never_bare_nan(tmp_path, capsys):
    io.write_json(tmp_path / "s.json", {"score": float("nan"), "deep": {"x": [1.0, float("inf")]}, "t": torch.tensor(-math.inf)})
    data = _strict((tmp_path / "s.json").read_text())
    assert data["score"] is None and data["deep"]["x"] == [1.0, None] and data["t"] is None
    assert "score, deep.x.1, t" in capsys.readouterr().err
    from nascore.pipeline.metrics import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.metric("train", step=1, loss=float("nan"), acc=torch.tensor(0.5))
    log.close()
    line = _strict((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert line["loss"] is None and line["acc"] == 0.5


def test_a_run_with_a_non_finite_score_writes_strict_json_and_resumes(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    state = io.read_json(run / "state.json")
    state["candidates"][-1]["score"] = float("nan")
    io.write_json(run / "state.json", state)
    capsys.readouterr()
    rc, _, err = _cli(capsys, "resume", str(run), "--quiet")
    assert rc == 0, err
    _strict((run / "state.json").read_text())
    for line in (run / "metrics.jsonl").read_text().splitlines():
        _strict(line)


# -- 5. read-only run folders ---------------------------------------------------------------------------
_EACH = """
import contextlib, io, sys
from nascore import cli
for args in ARGS:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli.main(args)
        except BaseException as e:  # a crash is reported, not hidden
            rc, _ = 99, err.write(repr(e))
    print(f"@@{rc}@@{err.getvalue()}@@END")
"""


def _read_only_cli(run: Path, commands: list[list[str]], cwd: Path) -> list[tuple[int, str]]:
    """(exit code, stderr) of each CLI command on ``run`` made read-only, all in one process: chmod for
    a normal user; for root (who ignores file modes) a read-only bind mount in a private mount namespace."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NASCORE_LOAD_PLUGINS": "", "MPLCONFIGDIR": str(cwd / "mpl")}
    cmd = [sys.executable, "-c", _EACH.replace("ARGS", repr(commands))]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("root without unshare: cannot make a folder read-only")
        script = f'mount --bind -o ro "{run}" "{run}" || exit 97; exec "$@"'
        cmd = ["unshare", "-m", "sh", "-c", script, "sh", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    if r.returncode == 97:
        pytest.skip(f"cannot bind-mount read-only here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    return [(int(rc), err) for rc, err in re.findall(r"@@(\d+)@@(.*?)@@END", r.stdout, re.S)]


def test_read_only_run_folder_gives_clean_errors_and_no_files(finished, tmp_path):
    (tmp_path / "mpl").mkdir()
    run = _copy(finished, tmp_path)
    before = _snapshot(run)
    if os.geteuid() != 0:
        for p in [run, *run.rglob("*")]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
    writers = [["resume", str(run), "--quiet"], ["export", str(run)], ["report", str(run)]]
    try:
        results = _read_only_cli(run, [*writers, ["compare", str(run)]], tmp_path)
    finally:
        for p in [run, *run.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    assert len(results) == 4
    for args, (rc, err) in zip(writers, results):
        assert rc == 2, (args, err)
        assert "Traceback" not in err and "internal error" not in err, (args, err)
        assert str(run) in err and "cannot write" in err, (args, err)
    assert results[3][0] == 0 and "Traceback" not in results[3][1], results[3]  # compare only reads
    assert _snapshot(run) == before  # not one file created or changed (no event files)


def test_export_and_report_create_no_event_files(finished, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    run = _copy(finished, tmp_path)
    cfg = io.read_text_verified(run / "config.yaml").replace("tensorboard: false", "tensorboard: true")
    io.write_yaml_text(run / "config.yaml", cfg)
    for args in (["export", str(run), "--format", "json"], ["report", str(run)], ["compare", str(run)]):
        rc, _, err = _cli(capsys, *args)
        assert rc == 0, err
    assert not list(run.glob("events.out.tfevents.*"))


# -- 6. temp files and permissions -----------------------------------------------------------------------
def test_resume_removes_temp_files_of_killed_writes(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    left = [run / ".state.json.k1x.tmp", run / "checkpoints" / ".supernet.pt.zz9.tmp",
            run / "retrain" / "0" / ".model.pt.q.tmp"]
    for p in left:
        p.write_bytes(b"half")
    rc, _, err = _cli(capsys, "report", str(run))
    assert rc == 0 and all(p.exists() for p in left)  # a reader leaves them (the run may be live)
    rc, _, err = _cli(capsys, "resume", str(run), "--quiet")
    assert rc == 0, err
    assert not any(p.exists() for p in left) and "left by a killed write" in err


def test_a_folder_in_use_by_another_process_is_refused_until_that_process_dies(finished, tmp_path, capsys):
    """Two processes writing one folder would replace each other's checkpoints (and a resume deletes
    the other's live temp files): while one holds the folder, resume, export and run --overwrite
    refuse, naming its pid, and change nothing; once it is killed (no clean-up), the OS lock is gone."""
    run = _copy(finished, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from nascore.pipeline.runfolder import "
         "lock_run_dir; held = lock_run_dir(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _snapshot(run)
        cfg = str(run / "config.yaml")
        for args in (["resume", str(run)], ["export", str(run)], ["run", cfg, "--out", str(run), "--overwrite"]):
            rc, _, err = _cli(capsys, *args)
            assert rc == 2 and f"in use by another nascore process (pid {holder.pid})" in err, (args, err)
            assert "Traceback" not in err
        assert _snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    rc, _, err = _cli(capsys, "resume", str(run), "--quiet")
    assert rc == 0, err
    rc, _, err = _cli(capsys, "export", str(run))  # the resume's context released the folder
    assert rc == 0, err


def test_every_file_gets_ordinary_permissions(finished):
    want = 0o666 & ~io._UMASK
    files = [p for p in finished.rglob("*") if p.is_file()]
    assert {"results.json", "state.json", "config.yaml", "supernet.pt", "model.pt"} <= {p.name for p in files}
    wrong = {str(p.relative_to(finished)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != want}
    assert not wrong


def test_stage_end_supernet_is_rewritten_only_when_it_changed(tmp_path, monkeypatch):
    """A search/export/retrain stage leaves the supernet alone: its stage end does not rewrite the
    (at paper scale 100 MB+) supernet.pt. Changed weights, or a file changed on disk, are written."""
    from nascore.pipeline import runfolder

    writes: list[int] = []
    real = runfolder.save_supernet
    monkeypatch.setattr(runfolder, "save_supernet", lambda d, w: (writes.append(1), real(d, w)))
    run = tmp_path / "run"
    ctx = run_config(_cfg(TRAIN, SEARCH), run)
    assert len(writes) == 1  # after train; the search stage's end found the same weights
    ctx.save_supernet()
    assert len(writes) == 1
    with torch.no_grad():
        next(ctx.supernet.parameters()).add_(1.0)
    ctx.save_supernet()
    assert len(writes) == 2
    torch.testing.assert_close(_weights(run), ctx.supernet.state_dict())
    _flip(run / "checkpoints" / "supernet.pt")
    ctx.save_supernet()  # the weights did not change, the file did: it is written again
    assert len(writes) == 3 and torch.equal(next(iter(_weights(run).values())), next(iter(ctx.supernet.state_dict().values())))
