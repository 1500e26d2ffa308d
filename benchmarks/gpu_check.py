"""GPU check: supernet vs plain-loop training throughput, with/without mixed precision, peak memory,
and a 1-process NCCL ``torchrun`` run of a recipe.

    python benchmarks/gpu_check.py [--batch 128] [--steps 30] [--out gpu_check.json]

On a machine without CUDA it prints that it skipped and exits 0 (CI never needs a GPU).

What it measures, on the SPOS ImageNet space at 224x224 (the paper's supernet, block + channel search):

* ``supernet``: nascore's training step (``SupernetTrainer.train_step``: a sampled path per step,
  inactive grads cleared, SGD), images/s;
* ``plain``: a hand-written loop training one fixed child (a plain ``nn.Module`` of the same
  architecture: what a user would write without nascore), images/s — the supernet's overhead is
  the ratio;
* each with ``amp`` off / ``bf16`` / ``fp16`` (GradScaler) and with ``channels_last``;
  ``torch.cuda.max_memory_allocated`` per setting;
* ``torchrun``: ``torchrun --standalone --nproc-per-node 1 -m nascore run spos-imagenet --smoke`` on
  fake 224x224 data (the NCCL process group, the distributed code path), wall seconds and exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F


def _space(channels: bool):
    from nascore.builtin.shufflenet import SPOS_IMAGENET, ShuffleNetSpace

    scales = [round(0.2 * i, 1) for i in range(1, 9)] if channels else None
    return ShuffleNetSpace(**SPOS_IMAGENET, channel_scales=scales, input_shape=(3, 224, 224), num_classes=1000)


class _Ctx(SimpleNamespace):
    """The little of a run context ``train_step`` touches."""

    def check_same_arch(self, arch) -> None:  # noqa: D401 - single process
        return None

    def allreduce_grads(self, net) -> None:
        return None


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(dev: torch.device) -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else float("nan")


def supernet_ips(space, batch: int, steps: int, amp: str, channels_last: bool, dev: torch.device) -> dict:
    from nascore.trainer import SupernetTrainer, TrainerConfig, make_optimizer

    torch.manual_seed(0)
    net = space.build_supernet().to(dev).train()
    cfg = TrainerConfig(lr=0.1, amp=amp, channels_last=channels_last, grad_clip=None)
    trainer = SupernetTrainer(cfg)
    ctx = _Ctx(supernet=net, space=space, device=dev, distiller=None, log=None)
    trainer.rng = random.Random(0)
    trainer.optimizer = make_optimizer(net.parameters(), cfg)
    trainer.training_features(ctx)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    total = steps + 5
    for _ in range(5):
        trainer.train_step(ctx, x, y, total)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(ctx, x, y, total)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"images_per_s": round(batch * steps / dt, 1), "peak_mem_gib": _peak(dev)}


def plain_ips(space, batch: int, steps: int, amp: str, channels_last: bool, dev: torch.device) -> dict:
    torch.manual_seed(0)
    net = space.build_supernet()
    arch = space.sample(random.Random(0))
    model = net.child(arch, inherit=False).to(dev).train()
    del net
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
    scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    for _ in range(5):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"images_per_s": round(batch * steps / dt, 1), "peak_mem_gib": _peak(dev)}


def torchrun_check(timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "-m", "nascore", "run", "spos-imagenet", "--smoke", "--quiet", "--out", str(Path(tmp) / "run"),
               "--set", "dataset={name: fake, options: {shape: [3, 224, 224], size: 64}}",
               "--set", "data.batch_size=8", "--set", "data.eval_batch_size=8", "--set", "data.num_workers=0",
               "--set", "device=cuda", "--set", "stages.1.selector.options.smoke_population=2",
               "--set", "stages.2.formats=[json]"]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout} s"}
        out = {"ok": proc.returncode == 0, "returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
        if proc.returncode:
            out["stderr_tail"] = proc.stderr[-2000:]
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--block-only", action="store_true", help="block search only (no channel search)")
    ap.add_argument("--skip-torchrun", action="store_true")
    ap.add_argument("--torchrun-timeout", type=int, default=300)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="run each measurement once on the CPU at batch 2 (checks the script, measures nothing)")
    args = ap.parse_args(argv)
    if args.cpu_dry_run:
        space, dev = _space(channels=not args.block_only), torch.device("cpu")
        for amp in ("off", "bf16"):
            for cl in (False, True):
                print(amp, cl, supernet_ips(space, 2, 1, amp, cl, dev), plain_ips(space, 2, 1, amp, cl, dev), flush=True)
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here — skipped (nothing measured)")
        if args.out:
            Path(args.out).write_text(json.dumps({"skipped": "no CUDA device"}) + "\n")
        return 0
    torch.backends.cudnn.benchmark = True
    space, dev = _space(channels=not args.block_only), torch.device("cuda")
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch": args.batch,
                 "steps": args.steps, "space": "spos-imagenet " + ("block" if args.block_only else "block+channel"),
                 "rows": []}
    for amp in ("off", "bf16", "fp16"):
        for cl in (False, True):
            row = {"amp": amp, "channels_last": cl,
                   "supernet": supernet_ips(space, args.batch, args.steps, amp, cl, dev),
                   "plain": plain_ips(space, args.batch, args.steps, amp, cl, dev)}
            row["supernet_vs_plain"] = round(row["supernet"]["images_per_s"] / row["plain"]["images_per_s"], 3)
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
            torch.cuda.empty_cache()
    if not args.skip_torchrun:
        res["torchrun_1proc_nccl"] = torchrun_check(args.torchrun_timeout)
        print(json.dumps({"torchrun": res["torchrun_1proc_nccl"]}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "4")
    sys.exit(main())
