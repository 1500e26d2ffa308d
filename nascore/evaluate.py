"""Scoring a path of the supernet: BN recalibration and accuracy.

A supernet's BatchNorm running statistics mix every path it trained; scoring a path with them
misranks architectures. :func:`recalibrate_bn` resets them and recomputes them for one path from a
few training batches — by a cumulative average (``momentum=None``, the paper's "recompute the
statistics") or by the official SPOS code's EMA (``momentum=0.1``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def bn_state(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [
        (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in bn_layers(model) if m.track_running_stats and m.running_mean is not None
    ]


def load_bn_state(model: nn.Module, state: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    layers = [m for m in bn_layers(model) if m.track_running_stats and m.running_mean is not None]
    for m, (mean, var, n) in zip(layers, state):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.copy_(n)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]], momentum: float | None = None) -> int:
    """Reset BN running stats and recompute them from ``batches`` in train mode; returns #batches."""
    layers = [m for m in bn_layers(model) if m.track_running_stats and m.running_mean is not None]
    if not layers:
        return 0
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = momentum
    was = model.training
    model.train()
    n = 0
    try:
        for x, _ in batches:
            model(x)
            n += 1
    finally:
        for m, mom in zip(layers, saved):
            m.momentum = mom
        model.train(was)
    return n


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], bn: str = "stored") -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of ``model`` over ``batches``.

    ``bn="stored"`` uses running statistics (eval mode); ``"batch"`` uses each batch's own.
    """
    was = model.training
    model.train(bn == "batch")
    correct, total, loss = 0, 0, 0.0
    try:
        for x, y in batches:
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            total += int(y.numel())
    finally:
        model.train(was)
    if total == 0:
        return float("nan"), float("nan")
    return correct / total, loss / total
