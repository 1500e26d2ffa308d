"""SPOS on the tiny test bed: train a supernet, score all 81 ``tiny_chain`` paths.

Shared by the ranking test (a Kendall-tau floor against the shipped standalone ground truth,
``nascore.groundtruth.testbed``) and ``benchmarks/ranking_rows/spos.py``. Everything is seeded: the same
``(sampler, seed)`` gives the same scores.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

#: The supernet budget used for ranking: 3,200 mnist5k training images per epoch, batch 64.
DEFAULT_EPOCHS = 10
DEFAULT_LR = 0.1


def tiny_bed_config(sampler: str = "uniform", seed: int = 0, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
                    space: str = "tiny_chain", **trainer_options: Any) -> dict[str, Any]:
    """A run config that trains a SPOS supernet on a test bed (``space`` on mnist5k)."""
    return {
        "name": f"spos-testbed-{sampler}-{seed}",
        "seed": seed,
        "device": "cpu",
        "space": {"name": space},
        "dataset": {"name": "mnist5k"},
        "data": {"batch_size": 64},
        "stages": [{"kind": "train", "trainer": {"name": "spos", "options": {
            "sampler": sampler, "epochs": epochs, "lr": lr, **trainer_options}}}],
    }


def train_supernet(sampler: str = "uniform", seed: int = 0, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
                   space: str = "tiny_chain", **trainer_options: Any) -> Any:
    """Train a SPOS supernet on a test bed in memory (no run folder); returns the RunContext."""
    return run_in_memory(tiny_bed_config(sampler, seed, epochs, lr, space, **trainer_options))


def run_in_memory(cfg: dict[str, Any]) -> Any:
    """Run ``cfg`` with the SPOS trainer registered, no run folder; the context, ready to score paths."""
    import nascore_spos.plugin as plugin
    from nascore.registry import build_registry
    from nascore.pipeline.run import open_run, run_pipeline

    reg = build_registry(load_entry_points=False, extra=[(plugin, "spos")])
    ctx = open_run(cfg, run_dir=None, registry=reg, quiet=True)
    run_pipeline(ctx)
    ctx.stage_key = "rank"
    return ctx


def score_all(ctx: Any, bn_mode: str = "recalibrate", recal_batches: int = 20, **options: Any) -> dict[str, float]:
    """``{arch string: accuracy}`` of every path of ``ctx.space`` with the ``accuracy`` evaluator."""
    from nascore.builtin.accuracy import AccuracyConfig, AccuracyEvaluator

    ev = AccuracyEvaluator(AccuracyConfig(bn_mode=bn_mode, recal_batches=recal_batches, **options), ctx)
    archs = list(ctx.space.enumerate())
    return {ctx.space.format(a): m["acc"] for a, m in zip(archs, ev.score(archs, ctx))}


@lru_cache(maxsize=4)
def _trained(sampler: str, seed: int, epochs: int, lr: float, accumulate: bool, space: str = "tiny_chain") -> Any:
    opts = {"fair_accumulate": True} if accumulate else {}
    return train_supernet(sampler, seed, epochs, lr, space, **opts)


def spos_scores(sampler: str = "uniform", seed: int = 0, *, recal: bool = True, epochs: int = DEFAULT_EPOCHS,
                lr: float = DEFAULT_LR, fair_accumulate: bool = False, space: str = "tiny_chain") -> dict[str, float]:
    """Scores of all test-bed paths after SPOS training (the trained supernet is cached per process)."""
    ctx = _trained(sampler, seed, epochs, lr, fair_accumulate, space)
    return score_all(ctx, bn_mode="recalibrate" if recal else "stored")
