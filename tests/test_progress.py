"""Progress bars: live loss/score on a terminal, silent with --quiet or when output is not a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import yaml

from nascore.testing import tiny_config


def _config(tmp_path: Path) -> Path:
    cfg = tiny_config(log_every=1, stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 6}}, "evaluator": {"name": "accuracy"}},
        {"kind": "retrain", "epochs": 1},
    ])
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(args: list[str], tmp_path: Path, tty: bool) -> str:
    """Run the CLI with stderr on a pseudo-terminal (as in a shell) or on a pipe (as in a job log)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NASCORE_LOAD_PLUGINS": "", "COLUMNS": "160"}
    cmd = [sys.executable, "-m", "nascore", *args]
    if not tty:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a new pty is 0 columns wide
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
    assert proc.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_each_long_stage_shows_a_bar_with_live_numbers_on_a_terminal(tmp_path):
    out = _run(["run", str(_config(tmp_path)), "--out", "a"], tmp_path, tty=True)
    assert "train" in out and "loss=" in out and "acc=" in out  # supernet epochs: running loss and accuracy
    assert "random search" in out and "best=" in out  # search: best score so far
    assert "retrain #0" in out  # retraining the chosen architecture
    assert "%|" in out


def test_bars_are_silent_with_quiet_or_when_not_a_terminal(tmp_path):
    cfg = _config(tmp_path)
    quiet = _run(["run", str(cfg), "--out", "b", "--quiet"], tmp_path, tty=True)
    piped = _run(["run", str(cfg), "--out", "c"], tmp_path, tty=False)
    for out in (quiet, piped):
        assert "%|" not in out and "loss=" not in out
    assert "[0] train (single_path)" in piped  # stage headers still say where the run is
    assert (tmp_path / "c" / "report.html").exists() and (tmp_path / "c" / "plots" / "pareto.png").exists()
