"""Progress bars: live loss/score on a terminal, silent with --quiet or when output is not a terminal.

Deterministic: the CLI runs from this very tree (PYTHONPATH, not whatever nascore is installed: a
copy of the tree used to test the installed one), with no TQDM_* overrides from the environment,
and the bars draw their last numbers when they close, however fast or slow the machine is.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import yaml

from nascore.testing import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path) -> Path:
    cfg = tiny_config(log_every=1, stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 6}}, "evaluator": {"name": "accuracy"}},
        {"kind": "retrain", "epochs": 1},
    ])
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(columns: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_") and k != "COLUMNS"}
    env.update({"OMP_NUM_THREADS": "1", "NASCORE_LOAD_PLUGINS": "",
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    if columns is not None:
        env["COLUMNS"] = columns
    return env


def _run(args: list[str], tmp_path: Path, tty: bool, size: tuple[int, int] = (40, 160),
         columns_env: str | None = "160") -> str:
    """Run the CLI with stderr on a pseudo-terminal of ``size`` (rows, columns) as in a shell, or on a pipe (a job log)."""
    env = _env(columns_env)
    cmd = [sys.executable, "-m", "nascore", *args]
    if not tty:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))  # a new pty is 0 x 0
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=600) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_the_cli_under_test_is_this_tree(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import nascore; print(nascore.__file__)"], cwd=tmp_path,
                         env=_env(None), capture_output=True, text=True, timeout=120).stdout
    assert Path(out.strip()).resolve() == ROOT / "nascore" / "__init__.py"


def test_each_long_stage_shows_a_bar_with_live_numbers_on_a_terminal(tmp_path):
    out = _run(["run", str(_config(tmp_path)), "--out", "a"], tmp_path, tty=True)
    assert "train" in out and "loss=" in out and "acc=" in out  # supernet epochs: running loss and accuracy
    assert "random search" in out and "best=" in out  # search: best score so far (drawn at close at the latest)
    assert "retrain #0" in out  # retraining the chosen architecture
    assert "%|" in out


def test_bars_draw_on_a_terminal_that_reports_no_size(tmp_path):
    """A pty nobody sized (0 rows: docker exec -t, `script`, some CI runners): plain tqdm draws nothing there."""
    out = _run(["run", str(_config(tmp_path)), "--out", "z"], tmp_path, tty=True, size=(0, 0), columns_env=None)
    assert "%|" in out and "loss=" in out and "best=" in out


def test_bars_are_silent_with_quiet_or_when_not_a_terminal(tmp_path):
    cfg = _config(tmp_path)
    quiet = _run(["run", str(cfg), "--out", "b", "--quiet"], tmp_path, tty=True)
    piped = _run(["run", str(cfg), "--out", "c"], tmp_path, tty=False)
    for out in (quiet, piped):
        assert "%|" not in out and "loss=" not in out
        assert "[0] train (single_path)" in out and "[1] search (random)" in out  # headers always printed
    assert (tmp_path / "c" / "report.html").exists() and (tmp_path / "c" / "plots" / "pareto.png").exists()


def test_a_fast_loop_still_shows_its_last_postfix(capsys, monkeypatch):
    """In process: a postfix set with refresh=False right before close is drawn (not left to a timer)."""
    from nascore.pipeline import context

    monkeypatch.setattr(context, "terminal_size", lambda stream=None: (0, 0))  # and an unsized terminal
    bar = context.progress_bar(total=3, desc="fast", disable=False)
    bar.update(3)
    bar.set_postfix({"best": "0.75"}, refresh=False)
    bar.close()
    err = capsys.readouterr().err
    assert "best=0.75" in err and "fast" in err


@pytest.mark.parametrize("disable", [True])
def test_a_disabled_bar_writes_nothing(capsys, disable):
    from nascore.pipeline import context

    bar = context.progress_bar(total=3, desc="quiet", disable=disable)
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == ""
