"""Fuzz the run folder (issue 16): every file of a small finished run is truncated, zeroed, bit-flipped
or given the wrong structure, and every reading command (resume, export, report, compare) must end
either in the intact run's result or in a clean error naming the file — never an internal error, a
traceback, or a silently different result.

The finished run is built once per module (the smallest config that has every kind of file) and the
CLI's ``main`` is called in-process. The report's PNG rendering is replaced by a no-op (it is
matplotlib's time, and it only ever sees validated metrics records) except when ``metrics.jsonl``
is given the wrong structure; everything the report reads is still read and checked.
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import torch

from nascore import cli, io
from nascore.testing import run_config, tiny_config

CONFIG = tiny_config(checkpoint_every=3, tensorboard=False, data={"batch_size": 16, "limit": 256}, stages=[
    {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1, "steps_per_epoch": 4}}},
    {"kind": "search", "selector": {"name": "random", "options": {"samples": 3}},
     "evaluator": {"name": "accuracy", "options": {"recal_batches": 1}}},
    {"kind": "export", "top": 1, "formats": ["json"]},
    {"kind": "retrain", "epochs": 1, "top": 1},
])

FILES = ["config.yaml", "state.json", "results.json", "metrics.jsonl", "splits.json",
         "checkpoints/supernet.pt", "checkpoints/w0.pt", "checkpoints/stage-0-000001.pt",
         "checkpoints/stage-3-retrain0-000000.pt", "retrain/0/model.pt", "export/0/arch.json", "export/0/model.pt"]
MUTATIONS = ["truncate", "zero", "flip", "structure"]
COMMANDS = ["resume", "export", "report", "compare"]


def _mutate(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "zero":
        path.write_bytes(bytes(len(raw)))
    elif how == "flip":
        b = bytearray(raw)
        for k in (0.3, 0.5, 0.7):
            b[int(len(b) * k)] ^= 0x5A
        path.write_bytes(bytes(b))
    elif path.suffix == ".pt":  # a sound file (valid digest) of the wrong shape
        io.save_torch(path, {"unexpected": torch.ones(2)})
    elif path.suffix == ".json":
        io.write_json(path, {"candidates": "none", "completed": 3})
    elif path.suffix == ".yaml":
        io.write_yaml_text(path, "- just\n- a list\n")
    else:  # metrics.jsonl: records that are not records
        with open(path, "a") as f:
            f.write('[1, 2]\n"text"\n{"kind": "train", "step": "x", "loss": 1}\n{"kind": 3}\n')


def _call(capsys, args: list[str]) -> tuple[int, str, str]:
    rc = cli.main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _observe(run: Path, command: str, out: str):
    """What a command produced that must equal the intact run's (read leniently: it may be damaged)."""
    def load(p: Path):
        try:
            return io.read_json(p)
        except Exception:  # noqa: BLE001
            return None
    if command == "resume":
        return load(run / "state.json"), load(run / "results.json")
    if command == "export":
        weights = io.load_torch(run / "export" / "0" / "model.pt")["model"]
        return load(run / "export" / "0" / "arch.json"), {k: v.tolist() for k, v in weights.items()}
    if command == "report":
        page = (run / "report.html").read_text()
        chosen = re.search(r'<p class="chosen".*?</p>', page, re.S)
        table = re.search(r"<h2>Candidates</h2>.*?</table>", page, re.S)
        return chosen and chosen.group(0), table and table.group(0)
    return out


def _args(command: str, run: Path) -> list[str]:
    return {"resume": ["resume", str(run), "--quiet"], "export": ["export", str(run), "--format", "json"],
            "report": ["report", str(run)], "compare": ["compare", str(run)]}[command]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The finished run and, per command, what it produces on the intact folder."""
    torch.set_num_threads(1)
    env = pytest.MonkeyPatch()  # builtins only while building; undone so later modules see plugins
    env.setenv("NASCORE_LOAD_PLUGINS", "")
    root = tmp_path_factory.mktemp("fuzz")
    run_config(CONFIG, root / "src" / "run")
    src = root / "src" / "run"
    missing = [f for f in FILES if not (src / f).exists()]
    assert not missing, f"the run layout changed: {missing}"
    expected = {}
    for command in COMMANDS:
        run = root / f"ref-{command}" / "run"
        shutil.copytree(src, run)
        buf = StringIO()
        with redirect_stdout(buf):
            rc = cli.main(_args(command, run))
        assert rc == 0
        expected[command] = _observe(run, command, buf.getvalue())
    env.undo()
    return src, expected


@pytest.fixture(autouse=True)
def _fast(monkeypatch, request):
    monkeypatch.setenv("NASCORE_LOAD_PLUGINS", "")
    if "metrics.jsonl-structure" not in request.node.name:
        import nascore.report as report

        real = report.make_plots

        def no_png(run_dir, results=None):
            report.read_metrics(Path(run_dir))  # still read and validated
            return []
        monkeypatch.setattr(report, "make_plots", no_png)
        del real


@pytest.mark.parametrize("how", MUTATIONS)
@pytest.mark.parametrize("name", FILES)
def test_every_command_is_right_or_a_clean_error(pristine, tmp_path, capsys, name, how):
    src, refs = pristine
    capsys.readouterr()
    outcomes = []
    for command in COMMANDS:
        run = tmp_path / command / "run"
        shutil.copytree(src, run)
        _mutate(run / name, how)
        rc, out, err = _call(capsys, _args(command, run))
        assert "internal error" not in err and "Traceback" not in err, (command, err)
        if rc != 0:
            assert rc == 2 and Path(name).name in err, (command, rc, err)
            outcomes.append(f"{command}: error")
            continue
        assert _observe(run, command, out) == refs[command], (command, err)  # a success is the intact run's result
        outcomes.append(f"{command}: ok" + (" (warned)" if "warning" in err else ""))
    with capsys.disabled():  # pytest -s shows the table of outcomes
        print(f"FUZZ {name} {how}: {', '.join(outcomes)}")


def test_the_fuzz_has_teeth(pristine, tmp_path, capsys):
    """The comparison catches a wrong result: a hand-made change that keeps every file sound."""
    src, refs = pristine
    run = tmp_path / "run"
    shutil.copytree(src, run)
    state = io.read_json(run / "state.json")
    state["candidates"][0]["score"] += 1.0
    io.write_json(run / "state.json", state)  # a sound, digest-valid file with another result
    rc, out, err = _call(capsys, _args("resume", run))
    assert rc == 0
    assert _observe(run, "resume", out) != refs["resume"]
