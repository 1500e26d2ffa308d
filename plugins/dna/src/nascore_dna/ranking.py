"""DNA on a test bed: train a teacher and the block-wise supernet, score every architecture.

Shared by ``benchmarks/ranking_rows/dna.py`` (the ``nascore rank`` protocol on ``tiny_matched``) and
the tests. Everything is seeded: the same arguments give the same scores. The supernet gets the
SPOS rows' budget (10 epochs of mnist5k); the teacher is trained first, in the run, for
``teacher_epochs`` (an extra cost the single-path baseline does not pay).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from nascore_dna.teacher import NON_MEMBER_TEACHERS

DEFAULT_EPOCHS = 10
DEFAULT_TEACHER_EPOCHS = 6
DEFAULT_LR = 0.005

#: Teachers compared on ``tiny_matched``: its own largest path (a member of the space), and two
#: children of ``tiny_chain`` with the same block shapes that are *not* members (5×5 convs).
TEACHERS: dict[str, tuple[dict[str, Any] | None, str | None]] = {
    "own": (None, None),
    "chain5": NON_MEMBER_TEACHERS["tiny_matched"],  # what `teacher_space: auto` picks there
    "chain5x8": ({"name": "tiny_chain", "options": {"layers": 8}}, "-".join(["conv5"] * 8)),
}


def dna_config(seed: int = 0, space: str = "tiny_matched", teacher: str = "own", epochs: int = DEFAULT_EPOCHS,
               teacher_epochs: int = DEFAULT_TEACHER_EPOCHS, lr: float = DEFAULT_LR) -> dict[str, Any]:
    """A run config that trains a DNA supernet on a test bed, with one of :data:`TEACHERS`."""
    t_space, t_arch = TEACHERS[teacher]
    opts: dict[str, Any] = {"epochs": epochs, "lr": lr, "teacher_epochs": teacher_epochs}
    opts["teacher_space"] = t_space if t_space is not None else "own"
    if t_arch is not None:
        opts["teacher_arch"] = t_arch
    return {"name": f"dna-testbed-{teacher}-{seed}", "seed": seed, "device": "cpu", "space": {"name": space},
            "dataset": {"name": "mnist5k"}, "data": {"batch_size": 64},
            "stages": [{"kind": "train", "trainer": {"name": "dna", "options": opts}}]}


@lru_cache(maxsize=16)
def trained(seed: int, space: str, teacher: str, epochs: int = DEFAULT_EPOCHS,
            teacher_epochs: int = DEFAULT_TEACHER_EPOCHS) -> Any:
    """The run context after DNA training (in memory, cached per process)."""
    import nascore_dna.plugin as plugin
    from nascore.pipeline.run import open_run, run_pipeline
    from nascore.registry import build_registry

    reg = build_registry(load_entry_points=False, extra=[(plugin, "dna")])
    ctx = open_run(dna_config(seed, space, teacher, epochs, teacher_epochs), run_dir=None, registry=reg, quiet=True)
    run_pipeline(ctx)
    ctx.stage_key = "rank"
    return ctx


def dna_scores(seed: int = 0, space: str = "tiny_matched", teacher: str = "own", loss: str = "l1norm",
               epochs: int = DEFAULT_EPOCHS) -> dict[str, float]:
    """``{arch: −(sum of block losses)}`` over every architecture of the bed (higher = better)."""
    from nascore_dna.evaluator import BlockDistillConfig, BlockDistillEvaluator

    ctx = trained(seed, space, teacher, epochs)
    ev = BlockDistillEvaluator(BlockDistillConfig(loss=loss), ctx)
    archs = list(ctx.space.enumerate())
    return {ctx.space.format(a): -m["block_loss"] for a, m in zip(archs, ev.score(archs, ctx))}
