"""Ranking rows of nascore-cream for ``benchmarks/ranking.py`` (tiny_chain on mnist5k).

``ROWS = [(label, fn)]``; ``fn(seed, bed) -> {arch string: proxy score}``: train a supernet with the
row's method at the shared budget, then score every architecture of the test-bed space with the
``accuracy`` evaluator (BN recalibrated per path, arch-validation split). ``train_supernet`` and
``score_all`` are reused by ``benchmarks/cream_vs_spos.py``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

#: The shared budget of the rows (and the default of cream_vs_spos.py): the SPOS rows' budget,
#: 10 epochs of mnist5k = 500 steps of batch 64.
EPOCHS = 10
BATCH = 64
#: Optimiser settings given to every trainer, so rows differ only by the method: the SPOS rows'
#: (SPOS code defaults: linear decay from 0.1, plain momentum 0.9, wd 4e-5, label smoothing 0.1).
COMMON = {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 4e-5, "schedule": "linear",
          "label_smoothing": 0.1}
CREAM = {"warmup_epochs": 2, "update_iter": 20, "board_size": 10}


def registry() -> Any:
    """Built-ins + nascore-cream (+ nascore-spos when installed), no other entry points."""
    from nascore.testing import make_registry

    mods = [importlib.import_module("nascore_cream.plugin")]
    try:
        mods.append(importlib.import_module("nascore_spos.plugin"))
    except ImportError:
        pass
    return make_registry(*mods)


def spos_name(reg: Any) -> str:
    return "spos" if "spos" in reg.components["trainer"] else "single_path"


def train_supernet(train_stage: dict[str, Any], seed: int, *, constraint: dict[str, float] | None = None,
                   extra_stages: list[dict[str, Any]] | None = None, reg: Any = None,
                   run_dir: Path | None = None, space: str = "tiny_chain") -> Any:
    """Run one config (``space`` / mnist5k, the given train stage [+ more]) in-process; the context."""
    from nascore.testing import run_config

    torch.set_num_threads(1)
    cfg = {"name": "bench", "seed": seed, "device": "cpu", "space": {"name": space},
           "dataset": {"name": "mnist5k"}, "data": {"batch_size": BATCH}, "constraint": constraint or {},
           "stages": [train_stage, *(extra_stages or [])]}
    return run_config(cfg, run_dir, registry=reg or registry())


def score_all(ctx: Any, recal_batches: int = 20) -> dict[str, float]:
    """Accuracy (BN recalibrated) of every architecture of the space on the supernet in ``ctx``."""
    from nascore.config import Ref

    ev = ctx.build("evaluator", Ref(name="accuracy", options={"recal_batches": recal_batches}), "bench.evaluator")
    archs = list(ctx.base_space.enumerate())
    return {ctx.base_space.format(a): r["acc"] for a, r in zip(archs, ev.score(archs, ctx))}


def cream_stage(epochs: int = EPOCHS, **options: Any) -> dict[str, Any]:
    return {"kind": "train", "trainer": {"name": "cream", "options": {"epochs": epochs, **COMMON, **CREAM, **options}}}


def spos_stage(reg: Any, epochs: int = EPOCHS, distill: dict[str, Any] | None = None) -> dict[str, Any]:
    stage: dict[str, Any] = {"kind": "train", "trainer": {"name": spos_name(reg), "options": {"epochs": epochs, **COMMON}}}
    if distill is not None:
        stage["distiller"] = {"name": "prioritized_path", "options": {**CREAM, **distill}}
    return stage


def _cream(seed: int, bed: str = "tiny_chain") -> dict[str, float]:
    return score_all(train_supernet(cream_stage(), seed, space=bed))


def _cream_code(seed: int, bed: str = "tiny_chain") -> dict[str, float]:
    return score_all(train_supernet(cream_stage(compat="cream-code"), seed, space=bed))


def _spos_distilled(seed: int, bed: str = "tiny_chain") -> dict[str, float]:
    reg = registry()
    return score_all(train_supernet(spos_stage(reg, distill={}), seed, reg=reg, space=bed))


ROWS = [
    ("cream (paper semantics)", _cream),
    ("cream (compat cream-code)", _cream_code),
    ("spos + prioritized_path", _spos_distilled),
]
