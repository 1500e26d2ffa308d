"""Angle rows of ``benchmarks/ranking.py`` (ABS, RLNAS): metric x labels, and ABS before SPOS.

* accuracy vs angle, real vs random labels: one SPOS (uniform) supernet per (labels, seed), the same
  budget as the SPOS rows (10 epochs of mnist5k, lr 0.1, label smoothing 0.1); the random-label
  supernet sees labels drawn once from the seed (``data.random_labels``). ``angle`` is the ABS/RLNAS
  angle between W0 and the trained weights (reads no data); ``accuracy`` is top-1 on the archval
  split (real labels) after BN recalibration. RLNAS's Table 1 compares "random labels + angle"
  with "random labels + val acc". The "ops only" rows leave the fixed layers (stem, reduction,
  head) out of the vector (``angle`` option ``fixed: false``, not the papers' construction): those
  layers train at every step, rotate more than any op, and make the angle favour ``skip``.
* with / without ABS before SPOS: "accuracy, real labels" is SPOS without shrinking; the ABS row
  trains 30 epochs (ABS's E1), shrinks by angle (2 ops per round, 1 epoch between rounds) to 16
  architectures (two ops per layer: of 81 on tiny_chain, of 256 on tiny_matched), trains a fresh SPOS supernet 10 epochs on them and ranks them by accuracy;
  architectures ABS removed rank below every survivor.
"""

from __future__ import annotations

from nascore_abs.ranking import TARGETS, abs_spos_scores
from nascore_rlnas.ranking import proxy_scores


def _row(metric: str, random_labels: bool):
    def fn(seed: int, bed: str = "tiny_chain") -> dict[str, float]:
        return proxy_scores(metric, seed, random_labels, space=bed)

    return fn


def _abs_row(seed: int, bed: str = "tiny_chain") -> dict[str, float]:
    if bed not in TARGETS:  # the shrink target (two ops per layer) is sized per bed
        raise NotImplementedError(f"the ABS row has shrink targets for {', '.join(sorted(TARGETS))} only")
    return abs_spos_scores(seed, space=bed)


ROWS = [
    ("angle, real labels (SPOS supernet)", _row("angle", False)),
    ("angle, random labels (RLNAS)", _row("angle", True)),
    ("accuracy, real labels (SPOS, no ABS)", _row("accuracy", False)),
    ("accuracy, random labels", _row("accuracy", True)),
    ("angle of the ops only (fixed: false), real labels", _row("angle_ops", False)),
    ("angle of the ops only (fixed: false), random labels", _row("angle_ops", True)),
    ("ABS shrink (angle) -> SPOS accuracy, real labels", _abs_row),
]
