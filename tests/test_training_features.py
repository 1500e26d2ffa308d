"""The GPU-run training features, each on a CPU: bf16 autocast, channels_last, weight EMA, gradient
accumulation; fp16 refused without CUDA; a run with all of them on resumes to the same weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nascore.errors import ConfigError
from nascore.pipeline.run import open_run, run_pipeline
from nascore.testing import make_registry, run_config
from nascore.trainer import SupernetTrainer, TrainerConfig
from nascore.training import TrainingFeatures


def config(**trainer: object) -> dict:
    opts = {"epochs": 1, "steps_per_epoch": 6, "lr": 0.05, **trainer}
    return {
        "name": "features", "seed": 1, "device": "cpu",
        "space": {"name": "tiny_chain"},
        "dataset": {"name": "synthetic", "options": {"size": 256, "test_size": 16, "shape": [3, 12, 12]}},
        "data": {"batch_size": 16},
        "checkpoint_every": 2,
        "stages": [{"kind": "train", "trainer": {"name": "single_path", "options": opts}}],
    }


def _trained(tmp_path: Path, name: str, **trainer: object):
    return run_config(config(**trainer), tmp_path / name, registry=make_registry())


def _state(ctx) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in ctx.supernet.state_dict().items()}


def test_bf16_autocast_runs_the_convs_in_bfloat16(tmp_path, monkeypatch):
    seen: list[torch.dtype] = []
    orig = F.conv2d

    def spy(x, w, *a, **k):
        out = orig(x, w, *a, **k)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.modules.conv.F, "conv2d", spy)
    _trained(tmp_path, "fp32")
    assert set(seen) == {torch.float32}
    seen.clear()
    ctx = _trained(tmp_path, "bf16", amp="bf16")
    assert torch.bfloat16 in seen
    assert all(torch.isfinite(v).all() for v in ctx.supernet.state_dict().values() if v.is_floating_point())
    assert all(p.dtype == torch.float32 for p in ctx.supernet.parameters())  # master weights stay fp32


def test_fp16_needs_cuda():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        TrainingFeatures(TrainerConfig(amp="fp16"), None, "cpu")


def test_channels_last_formats_the_supernet_and_the_batches(tmp_path, monkeypatch):
    formats: list[bool] = []
    orig = SupernetTrainer.compute_loss

    def spy(self, ctx, x, y, arch):
        formats.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return orig(self, ctx, x, y, arch)

    monkeypatch.setattr(SupernetTrainer, "compute_loss", spy)
    ref = _trained(tmp_path, "plain")
    assert formats and not any(formats)
    formats.clear()
    ctx = _trained(tmp_path, "nhwc", channels_last=True)
    assert formats and all(formats)
    convs = [m.weight for m in ctx.supernet.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    # same math, other memory layout: the weights agree to float rounding
    for (k, a), b in zip(_state(ref).items(), _state(ctx).values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_ema_is_the_moving_average_of_the_trajectory_and_replaces_the_weights(tmp_path, monkeypatch):
    decay = 0.7
    traj: list[dict[str, torch.Tensor]] = []
    orig = TrainingFeatures.step

    def record(self, opt, net):
        orig(self, opt, net)
        traj.append({k: v.detach().clone() for k, v in net.state_dict().items()})

    monkeypatch.setattr(TrainingFeatures, "step", record)
    keep = _trained(tmp_path, "keep", ema_decay=decay, ema_for_search=False)
    ema = keep.supernet  # ema_for_search false: the trained weights stay
    expected = {k: v.clone() for k, v in traj[0].items()}  # AveragedModel: first update copies
    for state in traj[1:]:
        for k, v in state.items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v
            else:
                expected[k] = v.clone()
    last = traj[-1]
    assert all(torch.equal(v, last[k]) for k, v in ema.state_dict().items())
    traj.clear()
    used = _trained(tmp_path, "use", ema_decay=decay)
    moved = 0
    for k, v in used.supernet.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6, msg=k)
            moved += int(not torch.allclose(v, last[k]))
    assert moved > 0  # the EMA is not the last weights: the check above has teeth
    events = (tmp_path / "use" / "metrics.jsonl").read_text()
    assert '"event": "ema"' in events


def test_gradient_accumulation_gives_the_whole_batch_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x, y = torch.randn(8, 3, 2, 2), torch.randint(0, 5, (8,))

    def compute(xi, yi):
        logits = net(xi)
        return F.cross_entropy(logits, yi), logits

    full = torch.autograd.grad(compute(x, y)[0], list(net.parameters()))
    feats = TrainingFeatures(TrainerConfig(grad_accum_steps=4), net, "cpu")
    calls: list[int] = []
    loss, logits = feats.loss(lambda a, b: (calls.append(a.shape[0]), compute(a, b))[1], x, y)
    feats.backward(loss)
    assert calls == [2, 2, 2, 2] and logits.shape == (8, 5)
    torch.testing.assert_close(loss.detach(), compute(x, y)[0].detach())
    for g, p in zip(full, net.parameters()):
        torch.testing.assert_close(p.grad, g)
    # only the last micro-batch's share would be a different gradient
    last = torch.autograd.grad(compute(x[6:], y[6:])[0] / 4, list(net.parameters()))
    assert not torch.allclose(last[0], full[0])


def test_all_features_on_a_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    opts = {"amp": "bf16", "channels_last": True, "ema_decay": 0.8, "grad_accum_steps": 2}
    ref = _trained(tmp_path, "ref", **opts)
    want = _state(ref)
    orig = SupernetTrainer.train_step

    def crash(self, ctx, x, y, total):
        if self.step == 3:  # after the checkpoint of step 2: the EMA and the sampler state must come back
            raise KeyboardInterrupt
        return orig(self, ctx, x, y, total)

    monkeypatch.setattr(SupernetTrainer, "train_step", crash)
    reg = make_registry()
    victim = tmp_path / "victim"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(open_run(config(**opts), run_dir=victim, registry=reg, quiet=True))
    monkeypatch.setattr(SupernetTrainer, "train_step", orig)
    data = copy.deepcopy(config(**opts))
    ctx = open_run(data, run_dir=victim, registry=reg, quiet=True, resume=True)
    run_pipeline(ctx)
    assert '"event": "resume"' in (victim / "metrics.jsonl").read_text()
    got = _state(ctx)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


# -- data: torchvision policies and DataLoader workers ---------------------------------------------
def test_randaugment_and_autoaugment_change_train_images_only():
    from torchvision import transforms

    from nascore.builtin.datasets import FakeConfig, make_fake

    plain = make_fake(FakeConfig(size=8, test_size=4, shape=(3, 32, 32)))
    for policy, cls in (("randaugment", transforms.RandAugment), ("autoaugment", transforms.AutoAugment)):
        spec = make_fake(FakeConfig(size=8, test_size=4, shape=(3, 32, 32), auto_augment=policy))
        assert any(isinstance(t, cls) for t in spec.train.transform.transforms)
        torch.manual_seed(0)
        changed = sum(not torch.equal(spec.train[i][0], plain.train[i][0]) for i in range(8))
        assert changed >= 4, policy
        assert all(torch.equal(spec.test[i][0], plain.test[i][0]) for i in range(4))


def test_dataloader_workers_give_the_in_process_batches(tmp_path):
    from nascore.builtin.datasets import FakeConfig, make_fake
    from nascore.data import DataBundle, split_indices

    spec = make_fake(FakeConfig(size=40, test_size=8, shape=(3, 8, 8)))
    splits = split_indices(40, {"val": 0.1, "archval": 0.1}, seed=0)
    plain = DataBundle(spec, splits, seed=0, batch_size=4)
    pooled = DataBundle(spec, splits, seed=0, batch_size=4, num_workers=2, pin_memory=True, persistent_workers=True)
    for epoch, start in ((0, 0), (1, 3), (2, 1)):  # resume mid-epoch: the same batches from `start`
        a = list(plain.batches("train", epoch=epoch, start=start, limit=6))
        b = list(pooled.batches("train", epoch=epoch, start=start, limit=6))
        assert len(a) == len(b) == 6 - start
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    loader = pooled._loaders["train"]
    assert loader.num_workers == 2 and loader.persistent_workers
    relabelled = pooled.with_random_labels(5)
    (xr, yr), = list(relabelled.batches("train", limit=1))
    (xp, yp), = list(plain.with_random_labels(5).batches("train", limit=1))
    assert torch.equal(yr, yp) and torch.equal(xr, xp)


def test_a_val_batch_read_inside_the_training_pass_leaves_its_batches_alone():
    """Cream reads a val batch inside the training loop: with persistent workers the loader has one
    iterator, which that read used to reset under the training pass (the epoch then ended early, or
    read the val indices' images). The nested read is gathered in-process and both are the plain ones."""
    from nascore.builtin.datasets import FakeConfig, make_fake
    from nascore.data import DataBundle, split_indices

    spec = make_fake(FakeConfig(size=40, test_size=8, shape=(3, 8, 8)))
    splits = split_indices(40, {"val": 0.2, "archval": 0.0}, seed=0)
    plain = DataBundle(spec, splits, seed=0, batch_size=2)
    want = list(plain.batches("train", limit=6))
    want_val = next(iter(plain.batches("val", start=1, limit=2)))
    pooled = DataBundle(spec, splits, seed=0, batch_size=2, num_workers=2, persistent_workers=True)
    got, vals = [], []
    for k, batch in enumerate(pooled.batches("train", limit=6)):
        got.append(batch)
        if k in (1, 3):
            vals.append(next(iter(pooled.batches("val", start=1, limit=2))))
    assert len(got) == 6
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want))
    assert all(torch.equal(v[0], want_val[0]) for v in vals)
    assert not pooled._reading  # the passes let go of the loader: the next epoch uses the workers again


def test_more_workers_than_cpus_are_capped_with_a_warning(monkeypatch, capsys):
    """A paper recipe's 8 DataLoader workers on a 2-core box: capped at the CPUs the process may use
    (per local rank under torchrun), said once in nascore's words; a count that fits is kept."""
    import os

    from nascore.testing import make_context, tiny_config

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    ctx = make_context(tiny_config(data={"batch_size": 8, "num_workers": 16}))
    assert ctx.data.num_workers == 4
    assert "data.num_workers 16 > the 4 CPU(s)" in capsys.readouterr().err
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert make_context(tiny_config(data={"batch_size": 8, "num_workers": 16})).data.num_workers == 2
    assert "data.num_workers 16 > the 2 CPU(s)" in capsys.readouterr().err
    ctx = make_context(tiny_config(data={"batch_size": 8, "num_workers": 2}))
    assert ctx.data.num_workers == 2 and "num_workers" not in capsys.readouterr().err


def test_an_optimizer_state_that_does_not_fit_the_model_is_a_checkpoint_error():
    """torch loads optimizer state by position: momentum saved for a reordered/resized model would
    land on the wrong tensors. A shape mismatch is refused naming the checkpoint; a fitting one loads."""
    from nascore.errors import CheckpointError
    from nascore.training import load_optimizer_state

    def stepped(model: nn.Module) -> torch.optim.Optimizer:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        return opt

    old = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    saved = stepped(old).state_dict()
    fresh = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    load_optimizer_state(opt, saved, "ok.pt")
    assert torch.equal(opt.state[fresh[0].weight]["momentum_buffer"], saved["state"][0]["momentum_buffer"])
    # the same number of parameters in another order: torch itself would accept it
    swapped = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2))
    swapped.register_parameter("extra", nn.Parameter(torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"old\.pt: optimizer state 'momentum_buffer' of parameter 0 has shape \(3, 4\)"):
        load_optimizer_state(torch.optim.SGD(swapped.parameters(), lr=0.1, momentum=0.9), saved, "old.pt")
    with pytest.raises(CheckpointError, match="old.pt: optimizer state does not fit"):
        load_optimizer_state(torch.optim.SGD(nn.Linear(4, 3).parameters(), lr=0.1), saved, "old.pt")
