"""SPOS rows of ``benchmarks/ranking.py``: one supernet per sampler, scored with the ``accuracy``
evaluator (BN recalibration, cumulative average over 20 training batches) and, for the uniform
sampler, also with the supernet's stored BN statistics (no recalibration).

Budget: 10 epochs of mnist5k (500 steps of batch 64) per supernet, SPOS code defaults otherwise
(linear LR decay from 0.1, momentum 0.9, label smoothing 0.1). The trained supernet is cached per
(sampler, seed), so the recal / no-recal rows share one training run. The FairNAS-accumulate row
takes the same 500 optimizer steps but 3 paths (forward/backward passes) per step.
"""

from __future__ import annotations

from nascore_spos.ranking import spos_scores


def _row(sampler: str, recal: bool = True, accumulate: bool = False):
    def fn(seed: int, bed: str = "tiny_chain") -> dict[str, float]:
        return spos_scores(sampler, seed, recal=recal, fair_accumulate=accumulate, space=bed)

    return fn


ROWS = [
    ("spos uniform (BN recal)", _row("uniform")),
    ("spos uniform (no recal)", _row("uniform", recal=False)),
    ("spos flops_binned (BN recal)", _row("flops_binned")),
    ("spos fair (BN recal)", _row("fair")),
    ("spos fair, FairNAS accumulate (BN recal)", _row("fair", accumulate=True)),
]
