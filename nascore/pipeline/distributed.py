"""This process's place in a torch.distributed job, and the collective calls a run makes.

A run is launched as one process (``nascore run``) or as one process per GPU by ``torchrun``; only
rank 0 writes the run folder and the metrics. Components never call torch.distributed themselves:
they go through the context (``ctx.allreduce_grads``, ``ctx.check_same_arch``).
"""

from __future__ import annotations

import os
import zlib

import torch

from nascore.errors import NascoreError


class DistInfo:
    """This process's place in a torch.distributed job (1 process when not launched by torchrun)."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def join_process_group() -> None:
    """Join the torch.distributed job when launched by torchrun (gloo on CPU, nccl on GPUs).

    ``NASCORE_DIST_TIMEOUT`` (seconds, default 300) bounds how long a rank waits for the others.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import datetime

    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    timeout = float(os.environ.get("NASCORE_DIST_TIMEOUT", "300"))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))


def pick_device(name: str) -> torch.device:
    """The config's ``device`` (``auto``: this process's GPU when there is one, else the CPU)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise NascoreError(f"device: {name!r} is not a device", hint="use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NascoreError(f"device: {name!r} requested but CUDA is not available", hint="use device: cpu or auto")
    return dev


def check_same_path(dist: DistInfo, arch_str: str, device: torch.device, stage_key: str) -> None:
    """Raise when the ranks hold different architecture strings (one small all-reduce)."""
    code = zlib.crc32(arch_str.encode())
    t = torch.tensor([code, -code], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    if int(t[0]) != code or int(-t[1]) != code:
        raise NascoreError(
            f"ranks sampled different paths at stage {stage_key}",
            hint="a sampler must draw from the trainer's seeded generator only (self.rng)",
        )


def allreduce_grads(dist: DistInfo, net: torch.nn.Module) -> None:
    """Average ``net``'s gradients across ranks (one flat all-reduce); no-op in one process."""
    if not dist.enabled:
        return
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= dist.world_size
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)
