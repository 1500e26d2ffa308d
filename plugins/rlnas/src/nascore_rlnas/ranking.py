"""RLNAS on the tiny test bed: a SPOS supernet on real or random labels, scored by angle or accuracy.

Shared by the ranking tests (Kendall tau against the shipped standalone ground truth,
``nascore.groundtruth.testbed``) and ``benchmarks/ranking_rows/angle.py``. Everything is seeded: the same
arguments give the same scores. The supernet budget matches the SPOS rows (``nascore_spos.ranking``, same config, built here so that
nascore-rlnas needs no other plugin):
10 epochs of mnist5k at batch 64, SPOS code defaults (linear decay from lr 0.1, label smoothing 0.1).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

DEFAULT_EPOCHS = 10
DEFAULT_LR = 0.1


def testbed_config(seed: int = 0, random_labels: bool = False, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
                   space: str = "tiny_chain", **trainer_options: Any) -> dict[str, Any]:
    """The SPOS test-bed config (uniform sampler, the core's ``spos`` trainer) on ``space``, on real or random labels."""
    return {
        "name": f"rlnas-testbed-{'random' if random_labels else 'real'}-{seed}",
        "seed": seed,
        "device": "cpu",
        "space": {"name": space},
        "dataset": {"name": "mnist5k"},
        "data": {"batch_size": 64, "random_labels": random_labels},
        "stages": [{"kind": "train", "trainer": {"name": "spos", "options": {
            "sampler": "uniform", "epochs": epochs, "lr": lr, **trainer_options}}}],
    }


def train_supernet(seed: int = 0, random_labels: bool = False, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
                   space: str = "tiny_chain", **trainer_options: Any) -> Any:
    """Train the supernet in memory (no run folder); returns the RunContext (W0 in ``initial_weights``)."""
    from nascore.pipeline.run import open_run, run_pipeline
    from nascore.registry import build_registry

    ctx = open_run(testbed_config(seed, random_labels, epochs, lr, space, **trainer_options), run_dir=None,
                   registry=build_registry(load_entry_points=False), quiet=True)
    run_pipeline(ctx)
    ctx.stage_key = "rank"
    return ctx


@lru_cache(maxsize=8)  # (real, random) x 3 seeds: every row of benchmarks/ranking.py reuses them
def _trained(seed: int, random_labels: bool, epochs: int, lr: float, space: str = "tiny_chain") -> Any:
    return train_supernet(seed, random_labels, epochs, lr, space)


def angle_scores(ctx: Any, **options: Any) -> dict[str, float]:
    """``{arch: angle}`` of every path of ``ctx.space`` (reads no data); ``options``: AngleConfig."""
    from nascore.builtin.angle import AngleConfig, AngleEvaluator

    archs = list(ctx.space.enumerate())
    ev = AngleEvaluator(AngleConfig(**options))
    return {ctx.space.format(a): m["angle"] for a, m in zip(archs, ev.score(archs, ctx))}


def accuracy_scores(ctx: Any, recal_batches: int = 20) -> dict[str, float]:
    """``{arch: accuracy}`` on the archval split (REAL labels) after BN recalibration."""
    from nascore.builtin.accuracy import AccuracyConfig, AccuracyEvaluator

    ev = AccuracyEvaluator(AccuracyConfig(recal_batches=recal_batches), ctx)
    archs = list(ctx.space.enumerate())
    return {ctx.space.format(a): m["acc"] for a, m in zip(archs, ev.score(archs, ctx))}


def proxy_scores(metric: str, seed: int = 0, random_labels: bool = False, *, epochs: int = DEFAULT_EPOCHS,
                 lr: float = DEFAULT_LR, space: str = "tiny_chain") -> dict[str, float]:
    """``metric`` of every test-bed path: ``angle``, ``angle_ops`` (the angle of the chosen ops'
    weights only, fixed layers left out) or ``accuracy``; the supernet is cached per process."""
    ctx = _trained(seed, random_labels, epochs, lr, space)
    if metric == "angle":
        return angle_scores(ctx)
    if metric == "angle_ops":
        return angle_scores(ctx, fixed=False)
    if metric == "accuracy":
        return accuracy_scores(ctx)
    raise ValueError(f"metric must be angle, angle_ops or accuracy, got {metric!r}")
