"""RLNAS: fixed uniform random labels, a search that reads no labelled data (checked), real-label
retraining, and the ranking finding on the test bed (angle vs accuracy with random labels)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import nascore_rlnas.plugin as rlnas_plugin
import nascore_spos.plugin as spos_plugin
import pytest
import torch
import yaml
from nascore_rlnas.search import LabelLeak

from nascore.errors import NascoreError
from nascore.registry import hookimpl
from nascore.testing import make_context, make_registry, run_config, tiny_config
from nascore.trainer import SupernetTrainer, TrainerConfig

torch.set_num_threads(1)
PLUGINS = (rlnas_plugin, spos_plugin)


class RecordingTrainer(SupernetTrainer):
    """single_path that notes how much data had been read when training ended."""

    def fit(self, ctx: Any) -> None:
        super().fit(ctx)
        ctx.state["reads_after_training"] = len(ctx.data.access_log)


class RecordingPlugin:
    @staticmethod
    @hookimpl
    def register_trainers(register: Any) -> None:
        register("recording", RecordingTrainer, config=TrainerConfig, summary="single_path + read count")


def _search(evaluator: str = "angle", **options: Any) -> dict[str, Any]:
    evo = {"population": 8, "generations": 2, "top_k": 3, "mutations": 3, "crossovers": 3}
    return {"kind": "search", "evaluator": evaluator,
            "selector": {"name": "rlnas_search", "options": {"selector": "evolution", "options": evo, **options}}}


def _config(*stages: dict[str, Any], random_labels: bool = True, **kw: Any) -> dict[str, Any]:
    train = {"kind": "train", "trainer": {"name": "recording", "options": {"epochs": 1, "lr": 0.1}}}
    return tiny_config(stages=[train, *stages], data={"batch_size": 32, "random_labels": random_labels}, **kw)


# -- random labels --------------------------------------------------------------------------
def test_random_labels_are_fixed_across_epochs_uniform_and_cover_val() -> None:
    ctx = make_context(tiny_config(dataset={"name": "mnist5k"}, data={"batch_size": 50, "random_labels": True}))
    data = ctx.data
    real = data.with_true_labels()

    def labels_by_image(split: str, epoch: int, bundle: Any = data) -> dict[str, int]:
        out = {}
        for x, y in bundle.batches(split, epoch=epoch, drop_last=False):
            for xi, yi in zip(x, y):
                out[hashlib.sha1(xi.numpy().tobytes()).hexdigest()] = int(yi)
        return out

    e0, e1, e7 = (labels_by_image("train", e) for e in (0, 1, 7))
    assert len(e0) > 3000 and e0 == e1 == e7  # drawn once: the same image has the same label every epoch
    # uniform: chi-square over the 10 classes (p-value from the regularised upper incomplete gamma)
    counts = torch.bincount(torch.tensor(list(e0.values())), minlength=10).double()
    expected = counts.sum() / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    p = float(torch.special.gammaincc(torch.tensor(4.5, dtype=torch.float64), torch.tensor(chi2 / 2)))
    assert p > 0.01, (counts.tolist(), chi2, p)
    # random: they agree with the true labels about 1 time in 10
    truth = labels_by_image("train", 0, real)
    agree = sum(e0[k] == truth[k] for k in e0) / len(e0)
    assert 0.06 < agree < 0.14
    # the val split a trainer may read is random too; archval keeps real labels (never read in search)
    v_rand, v_true = labels_by_image("val", 0), labels_by_image("val", 0, real)
    assert sum(v_rand[k] == v_true[k] for k in v_rand) / len(v_rand) < 0.2
    assert labels_by_image("archval", 0) == labels_by_image("archval", 0, real)


# -- the search reads no labelled data --------------------------------------------------------
def test_angle_search_reads_no_data_at_all() -> None:
    reg = make_registry(*PLUGINS, (RecordingPlugin, "recording"))
    ctx = run_config(_config(_search()), None, registry=reg)
    after = ctx.state["reads_after_training"]
    assert ctx.data.access_log[:after] and set(ctx.data.access_log[:after]) == {"train"}
    assert ctx.data.access_log[after:] == []  # the whole search stage read nothing
    record = ctx.state["rlnas"]["1"]
    assert record["splits_read"] == [] and record["labelled_reads"] == 0 and record["evaluator_calls"] >= 3
    assert ctx.candidates and ctx.candidates[0].metrics["angle"] > 0


def test_search_fails_loudly_when_an_evaluator_reads_labelled_data() -> None:
    reg = make_registry(*PLUGINS, (RecordingPlugin, "recording"))
    with pytest.raises(LabelLeak, match="archval"):
        run_config(_config(_search(evaluator="accuracy")), None, registry=reg)


def test_search_refuses_real_labels() -> None:
    reg = make_registry(*PLUGINS, (RecordingPlugin, "recording"))
    with pytest.raises(NascoreError, match="random_labels"):
        run_config(_config(_search(), random_labels=False), None, registry=reg)
    ctx = run_config(_config(_search(require_random_labels=False), random_labels=False), None, registry=reg)
    assert ctx.state["rlnas"]["1"]["labelled_reads"] == 0


def test_retraining_uses_the_real_labels() -> None:
    """On synthetic gratings the retrained winner is far above chance: it did not learn random labels."""
    reg = make_registry(*PLUGINS, (RecordingPlugin, "recording"))
    ctx = run_config(_config(_search(), {"kind": "retrain", "epochs": 4, "lr": 0.05}), None, registry=reg)
    acc = ctx.state["retrain"][ctx.candidates[0].arch_str]["test_acc"]
    assert acc > 0.5, acc


# -- the ranking finding (RLNAS Table 1, rows "random labels + angle" vs "+ val acc") -------------
@pytest.mark.parametrize("seed", [0, 1])
def test_rlnas_ranking_on_the_test_bed(seed: int) -> None:
    """A SPOS supernet trained 10 epochs on random labels (tiny_chain / mnist5k), ranked against the
    shipped standalone ground truth. Measured over seeds 0-4 (README, benchmarks/ranking.py):

    ==============================  =======================================
    tau vs ground truth             seeds 0, 1, 2, 3, 4
    ==============================  =======================================
    angle, random labels            0.22, 0.14, 0.08, 0.19, 0.22  (mean 0.17)
    accuracy, random labels         0.31, -0.14, 0.35, 0.02, -0.06 (mean 0.10)
    accuracy, real labels           0.70, 0.67, 0.79, 0.63, 0.76  (mean 0.71)
    ==============================  =======================================

    What holds in every seed is asserted: the random-label angle ranks positively, the random-label
    accuracy is at chance level and its tau stays far from the real-label accuracy's. The paper's
    gap (Table 1: angle 93.45% vs accuracy 80.60% with random labels) does NOT reproduce at this
    scale: the random-label accuracy's tau is near zero only on average over seeds (its sign flips
    with the seed) and the angle's advantage is small; not asserted, reported in the README.
    """
    from nascore_rlnas.ranking import accuracy_scores, angle_scores, train_supernet

    from nascore.groundtruth.testbed import align, kendall_tau, load_testbed

    truth = load_testbed("tiny_chain_mnist5k")
    ctx = train_supernet(seed, random_labels=True)
    angle = kendall_tau(*align(angle_scores(ctx), truth))
    acc = accuracy_scores(ctx)
    acc_tau = kendall_tau(*align(acc, truth))
    print(f"seed {seed}: tau(angle, random labels) {angle:.3f}  tau(accuracy, random labels) {acc_tau:.3f}")
    assert 0.07 < sum(acc.values()) / len(acc) < 0.14  # the supernet knows nothing of the true labels
    assert angle > 0.05  # measured 0.08-0.22
    assert abs(acc_tau) < 0.4  # measured -0.14..0.35; real labels give 0.63-0.79


# -- the recipe ---------------------------------------------------------------------------------
def test_rlnas_recipe_runs_end_to_end_in_smoke_mode(tmp_path: Path) -> None:
    path = Path(rlnas_plugin.__file__).parent / "recipes" / "rlnas.yaml"
    reg = make_registry(*PLUGINS)
    assert "rlnas" in reg.components["recipe"]
    data = yaml.safe_load(path.read_text())
    assert data["data"]["random_labels"] is True
    ctx = run_config(data, tmp_path / "run", registry=reg, smoke=True)
    assert ctx.state["rlnas"]["1"]["labelled_reads"] == 0
    assert ctx.candidates and all(ctx.feasible(c.arch) for c in ctx.candidates)
    assert ctx.state["retrain"]
