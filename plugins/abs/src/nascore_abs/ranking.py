"""ABS on a test bed: shrink the bed's space by angle, then SPOS on the shrunk space.

Shared by the ranking benchmark (``benchmarks/ranking_rows/angle.py``) and the tests. The pipeline
is the paper's: a SPOS supernet on the whole space (E1, 30 epochs: with 5, the angle still favours
``skip`` and ABS keeps the worst layers), ``abs_shrink`` rounds (drop 2 operators, train one
epoch) down to ``target_size`` architectures, a fresh SPOS supernet trained on the shrunk space,
then every surviving path scored by ``accuracy``. Architectures ABS removed get a score below every
survivor (they can never be chosen), so Kendall tau and the top-k hit rates measure the whole
pipeline: what shrinking kept, and how SPOS ranks it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

DEFAULT_FIRST_EPOCHS = 30  # ABS's E1 is long (100 epochs vs 5 between rounds); 5 shrinks badly here
DEFAULT_EPOCHS = 10
DEFAULT_LR = 0.1
DEFAULT_TARGET = 16  # of 81: two ops per layer
#: Shrink target per bed: two ops per layer (tiny_chain 3^4 = 81 -> 16, tiny_matched 4^4 = 256 -> 16).
TARGETS = {"tiny_chain": 16, "tiny_matched": 16}
PRUNED = -1.0  # the score of an architecture ABS removed (accuracies are in [0, 1])


def abs_spos_config(seed: int = 0, *, first_epochs: int = DEFAULT_FIRST_EPOCHS, epochs: int = DEFAULT_EPOCHS,
                    lr: float = DEFAULT_LR, target_size: int | None = None, drop_per_round: int = 2,
                    evaluator: str = "angle", space: str = "tiny_chain") -> dict[str, Any]:
    """The test-bed run config: SPOS (E1) -> abs_shrink -> SPOS on the shrunk space.

    ``target_size`` defaults to the bed's :data:`TARGETS` entry (two ops per layer)."""
    if target_size is None:
        if space not in TARGETS:
            raise ValueError(f"no ABS shrink target for space {space!r}: pass target_size (known: {sorted(TARGETS)})")
        target_size = TARGETS[space]
    spos = {"name": "spos", "options": {"sampler": "uniform", "lr": lr}}
    return {
        "name": f"abs-testbed-{space}-{seed}",
        "seed": seed,
        "device": "cpu",
        "space": {"name": space},
        "dataset": {"name": "mnist5k"},
        "data": {"batch_size": 64},
        "stages": [
            {"kind": "train", "trainer": {**spos, "options": {**spos["options"], "epochs": first_epochs}}},
            {"kind": "shrink", "evaluator": evaluator, "selector": {"name": "abs_shrink", "options": {
                "target_size": target_size, "drop_per_round": drop_per_round, "sample_num": 1000,
                "epochs_between": 1, "trainer": "spos", "trainer_options": {"lr": lr}, "reinit": True}}},
            {"kind": "train", "trainer": {**spos, "options": {**spos["options"], "epochs": epochs}}},
        ],
    }


def run_abs_spos(seed: int = 0, **kw: Any) -> Any:
    """Run the pipeline in memory; returns the RunContext (``ctx.space`` is the shrunk space)."""
    import nascore_abs.plugin as abs_plugin
    from nascore.registry import build_registry
    from nascore.pipeline.run import open_run, run_pipeline

    reg = build_registry(load_entry_points=False, extra=[(abs_plugin, "abs")])
    ctx = open_run(abs_spos_config(seed, **kw), run_dir=None, registry=reg, quiet=True)
    run_pipeline(ctx)
    ctx.stage_key = "rank"
    return ctx


@lru_cache(maxsize=3)
def _run(seed: int, first_epochs: int, epochs: int, lr: float, target_size: int | None, space: str = "tiny_chain") -> Any:
    return run_abs_spos(seed, first_epochs=first_epochs, epochs=epochs, lr=lr, target_size=target_size, space=space)


def abs_spos_scores(seed: int = 0, *, first_epochs: int = DEFAULT_FIRST_EPOCHS, epochs: int = DEFAULT_EPOCHS,
                    lr: float = DEFAULT_LR, target_size: int | None = None, space: str = "tiny_chain") -> dict[str, float]:
    """SPOS accuracy of every architecture ABS kept; :data:`PRUNED` for the ones it removed."""
    ctx = _run(seed, first_epochs, epochs, lr, target_size, space)
    return kept_scores(ctx)


def kept_scores(ctx: Any) -> dict[str, float]:
    """``{arch: score}`` over the whole bed: SPOS accuracy (BN recalibrated) of every architecture
    ABS kept, :data:`PRUNED` for the ones it removed."""
    from nascore.builtin.accuracy import AccuracyConfig, AccuracyEvaluator

    kept = list(ctx.space.enumerate())
    ev = AccuracyEvaluator(AccuracyConfig(recal_batches=20), ctx)
    scores = {ctx.space.format(a): PRUNED for a in ctx.base_space.enumerate()}
    scores.update({ctx.space.format(a): m["acc"] for a, m in zip(kept, ev.score(kept, ctx))})
    return scores
