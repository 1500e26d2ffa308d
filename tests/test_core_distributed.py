"""torch.distributed on the CPU (gloo, 2 processes launched by torchrun), as users run it on GPUs.

- after K steps the weights equal a single-process run with the same global batch;
- a search with 2 ranks returns the same result as with 1;
- a rank that dies makes the run stop with an error instead of hanging.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from nascore import hookimpl
from nascore.io import load_torch
from nascore.testing import make_registry, run_config, tiny_config
from nascore.trainer import SupernetTrainer, TrainerConfig

TRAIN = {"epochs": 1, "steps_per_epoch": 4, "lr": 0.1, "weight_decay": 1e-3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(cfg: dict, out: Path, tmp: Path, extra_env: dict | None = None, timeout: int = 240):
    path = tmp / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NASCORE_LOAD_PLUGINS": "", "NASCORE_DIST_TIMEOUT": "60",
           **(extra_env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "nascore", "run", str(path), "--out", str(out), "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=timeout)


class TwoShardTrainer(SupernetTrainer):
    """Single process, emulating 2 ranks: each half-batch normalised on its own, losses averaged."""

    def compute_loss(self, ctx, x, y, arch):
        h = x.shape[0] // 2
        a, b = ctx.supernet(x[:h]), ctx.supernet(x[h:])
        loss = (F.cross_entropy(a, y[:h]) + F.cross_entropy(b, y[h:])) / 2
        return loss, torch.cat([a, b])


class Reference:
    @hookimpl
    def register_trainers(self, register):
        register("two_shard", TwoShardTrainer, config=TrainerConfig)


def test_two_ranks_train_to_the_same_weights_as_one_process_with_the_same_global_batch(tmp_path):
    stages = [{"kind": "train", "trainer": {"name": "single_path", "options": TRAIN}}]
    cfg = tiny_config(stages=stages, data={"batch_size": 32})
    out = _torchrun(cfg, tmp_path / "ddp", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    ddp = load_torch(tmp_path / "ddp" / "checkpoints" / "supernet.pt")["supernet"]

    ref_cfg = tiny_config(stages=[{"kind": "train", "trainer": {"name": "two_shard", "options": TRAIN}}],
                          data={"batch_size": 32})
    ref = run_config(ref_cfg, tmp_path / "ref", registry=make_registry((Reference(), "reference")))
    params = dict(ref.supernet.named_parameters())
    for name, p in params.items():
        torch.testing.assert_close(ddp[name], p.detach(), rtol=1e-5, atol=1e-6, msg=name)
    torch.manual_seed(0)  # the run's seeded initial weights: training must have moved them
    init = dict(ref.base_space.build_supernet().named_parameters())
    assert sum(not torch.allclose(init[n], ddp[n]) for n in params) >= 4


def test_search_with_two_ranks_returns_the_same_result_as_with_one(tmp_path):
    stages = [{"kind": "search", "selector": {"name": "random", "options": {"samples": 7}},
               "evaluator": {"name": "accuracy", "options": {"recal_batches": 2}}}]
    cfg = tiny_config(stages=stages, data={"batch_size": 32})
    out = _torchrun(cfg, tmp_path / "ddp", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    single = run_config(cfg, tmp_path / "one")
    got = json.loads((tmp_path / "ddp" / "results.json").read_text())["candidates"]
    assert [(c["arch"], round(c["score"], 6)) for c in got] == [(c.arch_str, round(c.score, 6)) for c in single.candidates]


DYING = """
import os
from nascore import hookimpl
from nascore.trainer import SupernetTrainer, TrainerConfig

class Dying(SupernetTrainer):
    def after_step(self, ctx, x, y, arch, logits, loss):
        if ctx.dist.rank == 1 and self.step == 2:
            os._exit(17)
        return {}

@hookimpl
def register_trainers(register):
    register("dying", Dying, config=TrainerConfig)
"""


def test_a_rank_that_dies_stops_the_run_instead_of_hanging(tmp_path):
    pkg = tmp_path / "site"
    info = pkg / "nascore_dying-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nascore-dying\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nascore]\ndying = nascore_dying_mod\n")
    (pkg / "nascore_dying_mod.py").write_text(textwrap.dedent(DYING))
    cfg = tiny_config(stages=[{"kind": "train", "trainer": {"name": "dying", "options": {"epochs": 3}}}])
    out = _torchrun(cfg, tmp_path / "dead", tmp_path, timeout=180,
                    extra_env={"PYTHONPATH": str(pkg), "NASCORE_LOAD_PLUGINS": "dying", "NASCORE_DIST_TIMEOUT": "20"})
    assert out.returncode != 0
    assert "exitcode" in out.stderr or "error" in out.stderr.lower()
