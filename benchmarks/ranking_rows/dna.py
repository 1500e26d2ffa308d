"""DNA rows of ``benchmarks/ranking.py``: block-wise distillation loss as the ranking, by teacher.

One DNA supernet per (teacher, seed): the teacher is trained in the run (6 epochs, Adam), then every
block of the supernet learns the teacher's block output from its block input for 10 epochs (the
SPOS rows' budget); every architecture is scored by −(sum of its blocks' normalised L1 losses) on
archval, BN recalibrated per candidate. Teachers: ``own`` — the searched space's largest path (on
``tiny_matched`` all paths tie, so its first: ``conv-conv-conv-conv``, a member of the space);
``chain5`` — ``tiny_chain``'s conv5×4, and ``chain5x8`` — an 8-layer conv5 chain: same block shapes,
not members of ``tiny_matched``.

    python benchmarks/ranking.py --only dna --no-baselines
"""

from __future__ import annotations

from nascore_dna.ranking import dna_scores


def _row(teacher: str, loss: str = "l1norm"):
    def fn(seed: int, bed: str = "tiny_matched") -> dict[str, float]:
        if bed not in ("tiny_matched", "tiny_chain"):
            raise NotImplementedError("DNA rows are set up for the tiny chain beds")
        if bed == "tiny_chain" and teacher == "chain5":
            raise NotImplementedError("on tiny_chain conv5x4 is the space's own largest path (row `own`)")
        return dna_scores(seed, bed, teacher, loss)

    return fn


ROWS = [
    ("dna, teacher = own largest path (member)", _row("own")),
    ("dna, teacher = tiny_chain conv5x4 (not a member)", _row("chain5")),
    ("dna, teacher = 8-layer conv5 chain (not a member)", _row("chain5x8")),
    ("dna mse, teacher = own largest path (member)", _row("own", "mse")),
    ("dna mse, teacher = tiny_chain conv5x4 (not a member)", _row("chain5", "mse")),
    ("dna mse, teacher = 8-layer conv5 chain (not a member)", _row("chain5x8", "mse")),
]
