"""Tests that fail when NEAS's own signals are broken (issue 18, "tests with teeth").

* Diversity shrinking where diversity, not potential, decides: a synthetic evaluator makes ``skip``
  the worst op by potential but the only one that makes members disagree. With the diversity term
  the op dropped is ``conv5`` (middling potential, adds no diversity); with ``diversity_weight: 0``
  it is ``skip``. The test of the shipped bed (``skip`` is dropped) passes either way; this one
  fails when the diversity term is switched off, replaced by a constant, or read from the wrong
  metric (``kl`` carries the opposite pattern).
* Ensemble evolution follows its evaluator: a synthetic ensemble score with a unique optimum (a
  diverse pair of members) is found; a noise evaluator finds something else.
* Scoring reads ``archval``: on a dataset whose archval labels are shifted by one class, a trained
  ensemble scores below chance; on ``train`` (the wrong split) far above.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

import nascore_neas.plugin as neas_plugin
from nascore.testing import make_context, make_registry, run_config, tiny_config
from nascore_neas.evolution import EnsembleEvolution, EnsembleEvolutionConfig
from nascore_neas.shrink import DiversityShrink, DiversityShrinkConfig

torch.set_num_threads(1)
REG = make_registry(neas_plugin)
SPACE = {"name": "neas_ensemble", "options": {"base": "tiny_chain", "members": 2}}


def _ctx(seed: int = 0) -> Any:
    ctx = make_context(tiny_config(seed=seed, space=SPACE), plugins=[neas_plugin])
    ctx.stage_key = "1"
    return ctx


class LayerZero:
    """Synthetic ensemble scores from the members' ops at layer 0 only.

    ``acc``: the mean of the members' op potentials ``conv3 0.9 > conv5 0.5 > skip 0.1``.
    ``disagreement``: 1 when the members differ at layer 0 and one of them runs ``skip``, else 0.
    ``kl``: the opposite pattern (1 only for a conv3/conv5 pair), so reading it instead changes the drop.
    """

    metric = "acc"
    higher_is_better = True
    POTENTIAL = {"conv3": 0.9, "conv5": 0.5, "skip": 0.1}

    def score(self, archs: list, ctx: Any) -> list[dict[str, float]]:
        space = ctx.space
        out = []
        for a in archs:
            ops = [space.member_ops(a, k)[0] for k in range(space.members)]
            differ = len(set(ops)) > 1
            out.append({"acc": sum(self.POTENTIAL[o] for o in ops) / len(ops),
                        "disagreement": float(differ and "skip" in ops),
                        "kl": float(differ and "skip" not in ops)})
        return out


@pytest.mark.parametrize("weight,dropped", [(2.0, "conv5"), (0.0, "skip")])
@pytest.mark.parametrize("seed", [0, 1])
def test_diversity_not_potential_decides_the_drop(weight: float, dropped: str, seed: int) -> None:
    ctx = _ctx(seed)
    # only layer 0 competes, in the members' own branches: 6 ensembles, every one of them scored
    ctx.space = ctx.space.restrict_layers({1: ["conv3"], 2: ["conv3"], 3: ["conv3"]}).restrict_splits([0])
    shrink = DiversityShrink(DiversityShrinkConfig(samples_per_op=8, drop=1, diversity_weight=weight))
    result = shrink.search(ctx, LayerZero())
    assert result.info["evaluated"] == ctx.space.size() == 6
    assert result.info["dropped"] == [(0, dropped)], result.info["scores"]
    scores = result.info["scores"]
    # potential alone ranks skip last; the diversity evidence says skip is the only diverse op
    assert scores[(0, "skip")]["potential"] < scores[(0, "conv5")]["potential"] < scores[(0, "conv3")]["potential"]
    assert scores[(0, "skip")]["diversity"] == 1.0
    assert scores[(0, "conv5")]["diversity"] == scores[(0, "conv3")]["diversity"] == 0.5


class DiversePairOptimum:
    """Sum of the members' per-op values at layers 0 and 1, plus 0.5 when the members differ.
    Layers 2-3 are fixed, so the unique best ensemble is split 0 with members conv5-conv5 and
    conv5-conv3 (4.2), ahead of conv5-conv5 + conv3-conv5 (4.1) and two conv5-conv5 members (4.0)."""

    metric = "acc"
    higher_is_better = True
    VALUES = ({"conv5": 1.0, "conv3": 0.6, "skip": 0.0}, {"conv5": 1.0, "conv3": 0.7, "skip": 0.0})

    def value(self, space: Any, a: Any) -> float:
        members = [space.member_ops(a, k) for k in range(space.members)]
        v = sum(self.VALUES[j][m[j]] for m in members for j in (0, 1))
        return v + (0.5 if len({m[:2] for m in members}) > 1 else 0.0)

    def score(self, archs: list, ctx: Any) -> list[dict[str, float]]:
        return [{"acc": self.value(ctx.space, a)} for a in archs]


class Noise(DiversePairOptimum):
    def __init__(self) -> None:
        self.rng = random.Random(0)

    def score(self, archs: list, ctx: Any) -> list[dict[str, float]]:
        return [{"acc": self.rng.random()} for _ in archs]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ensemble_evolution_finds_the_known_optimum(seed: int) -> None:
    ctx = _ctx(seed)
    ctx.space = ctx.space.restrict_layers({2: ["conv3"], 3: ["conv3"]}).restrict_splits([0, 2])  # 54 ensembles
    best = ctx.space.parse("|conv5-conv5-conv3-conv3|conv5-conv3-conv3-conv3")
    ev = DiversePairOptimum()
    assert max(ctx.space.enumerate(), key=lambda a: ev.value(ctx.space, a)) == best
    cfg = EnsembleEvolutionConfig(population=8, generations=4, top_k=3, mutations=4, crossovers=4)
    found = EnsembleEvolution(cfg).search(ctx, ev).candidates
    assert found[0].arch == best and found[0].score == pytest.approx(4.2)
    assert len(found) < ctx.space.size()  # it searched, it did not enumerate
    noisy = EnsembleEvolution(cfg).search(ctx, Noise()).candidates
    assert noisy[0].arch != best  # control: the search follows its evaluator


# -- scoring reads archval ------------------------------------------------------------------------
def test_ensemble_accuracy_scores_on_archval_not_train() -> None:
    cfg = tiny_config(space=SPACE, dataset={"name": "synthetic", "options": {"size": 1024, "noise": 0.3}},
                      data={"batch_size": 32, "archval_fraction": 0.2},
                      stages=[{"kind": "train", "trainer": {"name": "neas", "options": {"epochs": 8, "lr": 0.2}}}])
    ctx = run_config(cfg, None, registry=REG)
    x, y = ctx.data.spec.tensors
    idx = torch.as_tensor(ctx.data.splits["archval"])
    y = y.clone()
    y[idx] = (y[idx] + 1) % ctx.data.num_classes  # archval labels shifted by one class
    ctx.data.spec.tensors = (x, y)
    ctx.stage_key = "search"
    archs = [ctx.space.parse(s) for s in ("|conv3-conv3-conv3-conv3|conv5-conv5-conv5-conv5",
                                          "conv3-conv5-conv3-conv5||", "conv5-conv3|conv3-conv5|conv5-conv3")]
    build = REG.get("evaluator", "ensemble_accuracy").build
    start = len(ctx.data.access_log)
    right = build({"recal_batches": 4}, ctx).score(archs, ctx)
    read = set(ctx.data.access_log[start:])
    wrong = build({"recal_batches": 4, "split": "train"}, ctx).score(archs, ctx)
    print("archval (shifted)", [round(m["acc"], 2) for m in right], "train", [round(m["acc"], 2) for m in wrong])
    assert min(m["acc"] for m in wrong) > 0.5  # trained: the wrong split would score it high
    # measured: ensemble 0.00-0.07, members up to 0.11 (chance 0.10); train split 0.67-0.73
    assert max(m["acc"] for m in right) < 0.15 and max(m["member_acc"] for m in right) < 0.15
    assert read == {"train", "archval"}  # recalibration on train, scoring (and diversity) on archval


# -- the diversity signal itself ---------------------------------------------------------------
# Hand-made logits (4 images, 3 classes, y = 0 1 2 1) with a known answer: member 0 predicts
# 0 1 2 0, member 1 predicts 0 2 2 1 (each 3 of 4 right; they disagree on images 1 and 3), and the
# MEAN of their logits predicts 0 2 2 0 (2 of 4): neither the better member nor a vote.
M0 = [[4.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, 0.0, 0.0]]
M1 = [[3.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 2.0], [0.0, 4.0, 0.0]]
Y = [0, 1, 2, 1]


def _sym_kl_sum(a: torch.Tensor, b: torch.Tensor) -> float:
    """sum over images of (KL(p_a || p_b) + KL(p_b || p_a)) / 2, written out from the softmax."""
    pa, pb = torch.softmax(a, 1), torch.softmax(b, 1)
    return float((0.5 * (pa * (pa / pb).log() + pb * (pb / pa).log())).sum())


def test_member_stats_measure_disagreement_kl_and_the_mean_logit_ensemble_by_hand() -> None:
    from nascore_neas.evaluator import member_stats

    m0, m1, y = torch.tensor(M0), torch.tensor(M1), torch.tensor(Y)
    st = member_stats([m0, m1], y)
    assert st["disagreement"] == 2.0  # images 1 and 3
    assert st["member_correct"] == [3.0, 3.0]
    assert st["correct"] == 2.0  # mean logits: image 1 -> class 2, image 3 -> class 0
    assert st["kl"] == pytest.approx(_sym_kl_sum(m0, m1), rel=1e-5)
    assert st["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy((m0 + m1) / 2, y, reduction="sum")), rel=1e-6)
    # identical members: no disagreement, no divergence (a constant or noise signal would not give 0 here)
    same = member_stats([m0, m0.clone()], y)
    assert same["disagreement"] == 0.0 and same["kl"] == pytest.approx(0.0, abs=1e-6)
    # three members: the mean over the 3 pairs (m0/m1 2, m0/m2 0, m1/m2 2)
    three = member_stats([m0, m1, m0.clone()], y)
    assert three["disagreement"] == pytest.approx(4 / 3)
    assert three["kl"] == pytest.approx(2 * _sym_kl_sum(m0, m1) / 3, rel=1e-5)


class _TwoMembers(torch.nn.Module):
    """Stands for an ensemble supernet: ``forward_members`` returns the hand-made logits of each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.by_batch = {0: (torch.tensor(M0[:2]), torch.tensor(M1[:2])), 1: (torch.tensor(M0[2:]), torch.tensor(M1[2:]))}

    def forward_members(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.by_batch[int(x[0])]


def test_ensemble_accuracy_reports_the_whole_split_figures_over_batches() -> None:
    from nascore_neas.evaluator import EnsembleAccuracy, EnsembleAccuracyConfig

    ev = EnsembleAccuracy(EnsembleAccuracyConfig())
    batches = [(torch.tensor([0.0, 0.0]), torch.tensor(Y[:2])), (torch.tensor([1.0, 1.0]), torch.tensor(Y[2:]))]
    m = ev.measure(_TwoMembers(), iter(batches), "stored")
    assert m["acc"] == 0.5 and m["member_acc"] == 0.75 and m["best_member_acc"] == 0.75
    assert m["disagreement"] == 0.5  # 2 of 4 images
    assert m["kl"] == pytest.approx(_sym_kl_sum(torch.tensor(M0), torch.tensor(M1)) / 4, rel=1e-5)
