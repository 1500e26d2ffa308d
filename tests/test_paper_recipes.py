"""Paper-scale recipes: each validates as a config, names its local dataset root, documents its
compute and its differences from the paper, and runs with ``--smoke`` at full resolution on fake data.

The smoke runs replace only the dataset (torchvision FakeData at the recipe's resolution, since CI
has no ImageNet/CIFAR) and the batch size (2); SPOS-ImageNet's supernet is the paper's 20-layer
block + channel (0.2..1.6x) ShuffleNetV2 at 224x224. To keep CI time small the searches are cut further
(population 2; TNAS expands one edge per step) and exports are JSON only. ``cream-imagenet`` runs
its own stages unchanged (board, meta network, EMA, RandAugment, TorchScript export, retrain), and so
does ``nse-imagenet`` (every round, until the 13-op pool is exhausted; TorchScript export, retrain).
Under ``--smoke`` evaluation batches are capped at the training batch (checked below).
``dna-imagenet`` runs its own stages with a random B7 teacher at batch 1: the exhaustive ranking of all
5,226 cell candidates (by the prefix walk, see docs/paper-scale.md) and the dna selector; its space's mixed
cell widths are checked against the teacher's block shapes and fvcore.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from nascore.config import apply_overrides, load_yaml, validate
from nascore.testing import make_registry, run_config

torch.set_num_threads(1)

#: recipe -> (plugin module, dataset, input side)
PAPER = {
    "spos-imagenet": ("nascore_spos.plugin", "imagefolder", 224),
    "tnas-nb201-cifar10": ("nascore_tnas.plugin", "cifar10", 32),
    "setn-nb201-cifar10": ("nascore_setn.plugin", "cifar10", 32),
    "cream-imagenet": ("nascore_cream.plugin", "imagefolder", 224),
    "rlnas-imagenet": ("nascore_rlnas.plugin", "imagefolder", 224),
    "abs-imagenet": ("nascore_abs.plugin", "imagefolder", 224),
    "dna-imagenet": ("nascore_dna.plugin", "imagefolder", 224),
    "nse-imagenet": ("nascore_nse.plugin", "imagefolder", 224),
    "neas-imagenet": ("nascore_neas.plugin", "imagefolder", 224),
}


def _registry(module: str):
    return make_registry(pytest.importorskip(module))


def _recipe(name: str) -> tuple[dict, str, object]:
    module, _, _ = PAPER[name]
    reg = _registry(module)
    path = reg.get("recipe", name).factory
    return load_yaml(path), Path(path).read_text(), reg


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_recipe_validates_and_documents_itself(name):
    data, text, reg = _recipe(name)
    validate(data, reg, source=name)
    _, dataset, _ = PAPER[name]
    assert data["dataset"]["name"] == dataset and "root" in data["dataset"]["options"]
    lower = text.lower()
    assert "expected compute" in lower and "differences from the" in lower
    assert "--smoke" in text and "dataset.options.root=" in text


def test_cream_imagenet_uses_ema_and_randaugment():
    data, _, _ = _recipe("cream-imagenet")
    train = data["stages"][0]["trainer"]["options"]
    assert train["ema_decay"] == 0.9998 and train["ema_for_search"] is True
    assert data["dataset"]["options"]["auto_augment"] == "randaugment"


def test_spos_imagenet_is_the_papers_space():
    data, _, _ = _recipe("spos-imagenet")
    from nascore.builtin.shufflenet import SPOS_IMAGENET

    opts = data["space"]["options"]
    assert {k: opts[k] for k in SPOS_IMAGENET} == {k: (list(v) if isinstance(v, tuple) else v)
                                                     for k, v in SPOS_IMAGENET.items()}
    assert opts["channel_scales"] == [round(0.2 * i, 1) for i in range(1, 9)]  # 0.2..1.6, the paper's
    train = data["stages"][0]["trainer"]["options"]
    assert (train["lr"], train["schedule"], train["weight_decay"], train["label_smoothing"]) == (0.5, "linear", 4e-5, 0.1)
    assert data["data"]["batch_size"] == 1024 and data["constraint"]["macs_max"] == 330e6


def _smoke(name: str, tmp_path: Path, extra: list[str]) -> object:
    data, _, reg = _recipe(name)
    side = PAPER[name][2]
    data = apply_overrides(data, [
        f"dataset={{name: fake, options: {{shape: [3, {side}, {side}], size: 48, test_size: 8}}}}",
        "data.batch_size=2", "data.eval_batch_size=2", "data.num_workers=0", *extra])
    return run_config(data, tmp_path / name, registry=reg, smoke=True)


def test_spos_imagenet_smoke_at_224(tmp_path):
    ctx = _smoke("spos-imagenet", tmp_path, [
        "stages.1.selector.options.smoke_population=2", "stages.2.formats=[json]"])
    assert ctx.data.input_shape == (3, 224, 224)
    best = ctx.candidates[0]
    assert best.macs <= 330e6
    # the exported child is the plain network of its channels: its MACs are fvcore's on that child
    from nascore.cost import fvcore_macs

    child = ctx.supernet.child(best.arch)
    assert fvcore_macs(child, (3, 224, 224)) == best.macs


def test_cream_imagenet_smoke_at_224(tmp_path):
    """The whole recipe at 224 (no option of it overridden): the smoke cuts the board's image slice
    to the batch, so the meta network runs, and the EMA replaces the weights before the search."""
    import json

    ctx = _smoke("cream-imagenet", tmp_path, [])
    assert ctx.data.input_shape == (3, 224, 224)
    events = [json.loads(line) for line in (tmp_path / "cream-imagenet" / "metrics.jsonl").read_text().splitlines()]
    board = next(e for e in events if e.get("event") == "cream_board")
    assert board["meta_updates"] == 1 and len(board["entries"]) == 2  # smoke: update_iter 1, warm-up 0
    assert any(e.get("event") == "ema" for e in events)
    assert any("meta_val_loss" in e and "rho" in e for e in events if e.get("kind") == "train")
    best = ctx.candidates[0]
    assert best.arch_str in {e["arch"] for e in board["entries"]} and best.macs <= 600e6
    assert (tmp_path / "cream-imagenet" / "export" / "0" / "model.ts").is_file()


def test_setn_nb201_cifar10_smoke(tmp_path):
    ctx = _smoke("setn-nb201-cifar10", tmp_path, ["stages.1.selector.options.select_num=2"])
    assert ctx.candidates and ctx.space.name == "nb201"


def test_tnas_nb201_cifar10_smoke(tmp_path):
    ctx = _smoke("tnas-nb201-cifar10", tmp_path, [
        "stages.1.selector.options.d_a=1", "stages.1.selector.options.top_k=1",
        "stages.1.selector.options.subspace_samples=1"])
    assert ctx.candidates


def test_spos_channel_recipe_runs_end_to_end(tmp_path):
    reg = _registry("nascore_spos.plugin")
    data = load_yaml(reg.get("recipe", "spos-channel").factory)
    data = apply_overrides(data, ["stages.1.selector.options.smoke_population=4", "stages.2.formats=[json]"])
    ctx = run_config(data, tmp_path / "run", registry=reg, smoke=True)
    widths = [d for d in ctx.space.decisions if d.name.endswith("_mid")]
    assert len(widths) == 10
    assert all(c.macs <= data["constraint"]["macs_max"] for c in ctx.candidates)
    import json

    meta = json.loads((tmp_path / "run" / "export" / "0" / "arch.json").read_text())
    assert meta["arch"] == ctx.candidates[0].arch_str and meta["macs"] == ctx.candidates[0].macs


def test_recipe_modules_import():
    for module, _, _ in PAPER.values():
        pytest.importorskip(module)
        importlib.import_module(module)


def test_rlnas_imagenet_smoke_at_224(tmp_path):
    ctx = _smoke("rlnas-imagenet", tmp_path, [
        "stages.1.selector.options.options.smoke_population=2", "stages.2.formats=[json]"])
    assert ctx.data.input_shape == (3, 224, 224) and ctx.space.name == "shufflenet"
    assert ctx.candidates and ctx.candidates[0].macs <= 330e6
    assert ctx.data.train_labels is not None  # the supernet trained on random labels


def test_abs_imagenet_smoke_at_224(tmp_path):
    ctx = _smoke("abs-imagenet", tmp_path, [
        "stages.1.selector.options.epochs_between=0", "stages.3.selector.options.smoke_population=2",
        "stages.4.formats=[json]"])
    assert ctx.data.input_shape == (3, 224, 224)
    assert ctx.space.size() < 4 ** 20  # the shrink stage dropped operators
    assert ctx.candidates and ctx.candidates[0].macs <= 330e6


def test_dna_imagenet_student_matches_the_teachers_blocks():
    """The student's cells end at the B7 teacher's block shapes (what the MSE needs); inside a cell the
    code's hidden widths; the cost table is exact against fvcore with those mixed widths."""
    data, _, _ = _recipe("dna-imagenet")
    from nascore.builtin.mobilenet import MobileNetSpace
    from nascore.cost import check_table

    space = MobileNetSpace(**data["space"]["options"], input_shape=(3, 224, 224), num_classes=1000)
    ends = [spec for i, spec in enumerate(space.layers)
            if i + 1 == len(space.layers) or space.layers[i + 1].stage != spec.stage]
    assert [s.cout for s in ends] == [48, 80, 160, 224, 384, 640]
    assert [s.cout for s in space.layers if s.index == 0][:2] == [24, 40]
    assert all(len(d.options) == 6 for d in space.decisions)  # 6 MBConv ops, no skip
    # ... and the recipe's torchvision B7 (random weights, nothing downloaded) cuts at exactly those shapes
    import torchvision

    from nascore_dna.blocks import cut_by_shape, torchvision_units, unit_shapes

    units, names = torchvision_units(torchvision.models.efficientnet_b7(), "efficientnet_b7")
    shapes = unit_shapes(units, (3, 224, 224), None)
    from nascore_dna.blocks import block_output_shapes, student_blocks

    targets = block_output_shapes(student_blocks(space.build_supernet()), (3, 224, 224))
    assert [tuple(t) for t in targets] == [(48, 56, 56), (80, 28, 28), (160, 14, 14), (224, 14, 14), (384, 7, 7), (640, 7, 7)]
    assert cut_by_shape(shapes, targets, names=names) == [2, 3, 4, 5, 6, 7]
    import random

    rng = random.Random(0)
    rows = check_table(space, [space.sample(rng)])
    assert all(r["ok"] for r in rows), rows


def test_dna_imagenet_smoke_at_224(tmp_path):
    """The recipe's own stages at 224 with a random B7 teacher (teacher_weights: null): block_distill
    scores every candidate of every cell (36 + 4 x 1,296 + 6 = 5,226), the dna selector's winner is the
    best combination of the logged per-cell losses under 600M MACs (found here independently, by merging
    the cells' Pareto fronts of MACs and loss), and its MACs are fvcore's on the exported child."""
    import itertools
    import json

    from nascore_dna.blocks import student_blocks

    # batch 1 (so evaluation batches of 1 too): the ranking's cost is one layer pass per candidate and batch,
    # 5,226 leaves at 224; batch 2 took 64 s on the loaded box, batch 1 41 s
    ctx = _smoke("dna-imagenet", tmp_path, ["stages.0.trainer.options.teacher_weights=null", "data.batch_size=1"])
    assert ctx.data.eval_batch_size == 1
    assert ctx.data.input_shape == (3, 224, 224)
    events = [json.loads(line) for line in (tmp_path / "dna-imagenet" / "metrics.jsonl").read_text().splitlines()]
    rows = [e for e in events if e.get("kind") == "dna_block"]
    cells = student_blocks(ctx.supernet).decisions
    ops = ctx.space.decisions[0].options
    table = []
    for b, ds in enumerate(cells):
        mine = {tuple(r["ops"]): (r["loss"], r["macs"]) for r in rows if r["block"] == b}
        assert sorted(mine) == sorted(itertools.product(ops, repeat=len(ds)))  # every candidate, once
        table.append(mine)
    assert [len(t) for t in table] == [36, 1296, 1296, 1296, 1296, 6]
    limit = 600e6

    def pareto(items):
        out = []
        for m, v, keys in sorted(items):
            if not out or v < out[-1][1]:
                out.append((m, v, keys))
        return out

    front = [(ctx.cost.fixed_macs, 0.0, ())]  # (MACs, summed loss, per-cell keys): the feasible Pareto front
    for cell in table:
        own = pareto((cm, cl, k) for k, (cl, cm) in cell.items())
        front = pareto((m + cm, v + cl, keys + (k,)) for m, v, keys in front for cm, cl, k in own if m + cm <= limit)
    macs, loss, keys = min(front, key=lambda t: t[1])
    best = ctx.candidates[0]
    assert best.origin == "dna" and best.metrics["block_loss"] == pytest.approx(loss, rel=1e-12)
    assert [tuple(best.arch.ops[d] for d in ds) for ds in cells] == list(keys)
    assert best.macs == macs <= limit
    from nascore.cost import fvcore_macs

    assert fvcore_macs(ctx.supernet.child(best.arch), (3, 224, 224)) == best.macs
    assert (tmp_path / "dna-imagenet" / "export" / "0" / "model.ts").is_file()



def test_nse_imagenet_skeleton_and_multibranch_costs():
    """The staged nse_pool skeleton at 224: 16 choice layers at the config's widths; the additive
    multi-branch cost table is exact against fvcore on a 2-op-per-layer child."""
    data, _, _ = _recipe("nse-imagenet")
    from nascore_nse.pool import NSEPoolSpace

    from nascore.arch import Architecture
    from nascore.cost import check_table

    space = NSEPoolSpace(**data["space"]["options"], input_shape=(3, 224, 224), num_classes=1000)
    assert len(space.decisions) == 16
    net = space.build_supernet()
    assert sorted(int(k) for k in net.transitions) == [0, 1, 4, 7, 10, 13]  # a fixed strided conv enters each stage
    arch = Architecture([space.option(["mb5e6", "sep3"])] * 8 + ["skip", "mb3"] * 4)
    rows = check_table(space, [arch])
    assert rows[0]["ok"], rows


def test_nse_imagenet_smoke_at_224(tmp_path):
    """The whole recipe at 224 (no option of it overridden): every round re-initialises the
    multi-branch supernet, and the rounds go on until every op of the 13-op pool has been in some
    layer's active set; the front's architectures meet 300M, and the exported winner's MACs are
    fvcore's on its standalone multi-branch child."""
    import json

    ctx = _smoke("nse-imagenet", tmp_path, [])
    assert ctx.data.input_shape == (3, 224, 224)
    events = [json.loads(line) for line in (tmp_path / "nse-imagenet" / "metrics.jsonl").read_text().splitlines()]
    init = next(e for e in events if e.get("event") == "nse_init")
    rounds = [e for e in events if e.get("event") == "nse_round"]
    assert [r["round"] for r in rounds] == list(range(len(rounds))) and rounds[-1]["done"]
    assert not any(r["done"] for r in rounds[:-1])
    assert [e["round"] for e in events if e.get("event") == "nse_reinit"] == list(range(1, len(rounds)))
    pool = set(ctx.cfg.space.options["ops"])
    for layer, ops in enumerate(init["active"]):
        seen = set(ops).union(*(r["added"][layer] for r in rounds))
        assert seen == pool, f"layer {layer} never trained {sorted(pool - seen)}"
    front = [f for r in rounds for f in r["front"]]
    assert front and all(f["macs"] <= 300e6 for f in front)
    best = ctx.candidates[0]
    assert best.macs <= 300e6 and best.arch_str in {f["arch"] for f in front}
    from nascore.cost import fvcore_macs

    assert fvcore_macs(ctx.supernet.child(best.arch), (3, 224, 224)) == best.macs


def test_smoke_caps_the_eval_batch_at_the_train_batch():
    """A recipe's eval batch (200 at 224 for nse-imagenet) would make every candidate's evaluation
    the slowest step of a CPU smoke; a full run keeps the config's."""
    from nascore.testing import make_context

    data, _, reg = _recipe("nse-imagenet")
    data = apply_overrides(data, ["dataset={name: fake, options: {shape: [3, 32, 32], size: 64}}",
                                  "data.batch_size=4", "data.num_workers=0"])
    assert make_context(data, registry=reg, smoke=True).data.eval_batch_size == 4
    assert make_context(data, registry=reg, smoke=False).data.eval_batch_size == 200


def test_neas_imagenet_smoke_at_224(tmp_path):
    """The whole recipe at 224 (no option of it overridden): K=2 ensembles over NEAS's released-model
    space; every shrink round removes (layer, op) pairs from every member alike, the evolution's
    winner is an ensemble under 472M whose exported standalone module has fvcore's MACs."""
    import json

    ctx = _smoke("neas-imagenet", tmp_path, [])
    assert ctx.data.input_shape == (3, 224, 224) and ctx.space.name == "neas_ensemble"
    base = ctx.space.base
    assert [d.name for d in base.decisions][:1] and len(base.decisions) == 20
    assert sum("skip" in d.options for d in base.decisions) == 15  # never the first layer of a stage
    events = [json.loads(line) for line in (tmp_path / "neas-imagenet" / "metrics.jsonl").read_text().splitlines()]
    shrinks = [e for e in events if e.get("event") == "diversity_shrink"]
    assert len(shrinks) == 3
    sizes = [e["size"] for e in events if e.get("event") == "space"]
    assert len(sizes) >= 3 and all(b < a for a, b in zip(sizes, sizes[1:]))
    best = ctx.candidates[0]
    assert best.macs <= 472e6
    from nascore.cost import fvcore_macs

    assert fvcore_macs(ctx.supernet.child(best.arch), (3, 224, 224)) == best.macs
    assert (tmp_path / "neas-imagenet" / "export" / "0" / "model.ts").is_file()
