"""The zero-cost proxy evaluators: each scores a freshly initialised child on training data.

For every architecture the evaluator builds ``ctx.supernet.child(arch, inherit=False)`` — a
standalone network of only the chosen ops, re-initialised — under a torch seed derived from the
option ``seed`` (default: the run's seed) and the architecture's string, so a score does not depend on the supernet's
weights, on call order or on which other architectures were scored. With ``from_supernet: true``
the child keeps the supernet's weights instead (a proxy of the trained supernet's path).

The data-based proxies see ``batches`` minibatches of the **train** split, concatenated into one
batch, drawn in the order of epoch ``seed`` of the run's data and the same for every architecture; ``archval``,
``val`` and ``test`` are never read (``archval`` is what accuracy-based evaluators score on; a proxy
is a training-time signal). ``synflow`` reads no data at all. Scores are cached per architecture
(they are deterministic); with ``from_supernet`` they are recomputed on every call, since the
supernet may have trained in between.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture
from nascore_zerocost import measures


class ProxyConfig(BaseModel):
    """Options every proxy has."""

    model_config = ConfigDict(extra="forbid")
    seed: int | None = Field(
        None, ge=0, description="initialisation seed; with the architecture it fixes each network's init and the minibatch (null: the run's seed)")
    from_supernet: bool = Field(False, description="score the supernet's path (inherited weights) instead of a fresh initialisation")


class DataProxyConfig(ProxyConfig):
    """Options of the proxies that read training data."""

    batches: int = Field(1, gt=0, description="train-split minibatches concatenated into the one batch the proxy sees")
    batch_size: int | None = Field(None, gt=0, description="images per minibatch (null: the run's data.batch_size)")


class SynflowConfig(ProxyConfig):
    """Options of ``synflow`` (reads no data: one all-ones input of the dataset's shape)."""

    bn: bool = Field(False, description="keep BatchNorm (the reference's synflow_bn); default off, as the synflow measure")


class SnipConfig(DataProxyConfig):
    """Options of ``snip``."""


class GradNormConfig(DataProxyConfig):
    """Options of ``grad_norm``."""

    per_layer: bool = Field(True, description="sum of per-layer gradient norms (reference code); false: norm of the whole gradient")


class FisherConfig(DataProxyConfig):
    """Options of ``fisher``."""

    per_weight: bool = Field(True, description="count each channel's saliency once per weight of the channel (reference code); false: once per channel")


class JacovConfig(DataProxyConfig):
    """Options of ``jacov``."""

    eps: float = Field(1e-5, gt=0, description="k added to each eigenvalue of the Jacobian correlation matrix (reference: 1e-5)")


class NaswotConfig(DataProxyConfig):
    """Options of ``naswot``."""


def arch_seed(seed: int, arch_str: str) -> int:
    """A torch seed fixed by (proxy seed, architecture string) alone."""
    h = hashlib.sha256(f"nascore-zerocost/{seed}/{arch_str}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


Measure = Callable[[torch.nn.Module, Any, Any], float]


class ProxyEvaluator:
    """One zero-cost proxy as a nascore evaluator (``metric`` = the proxy's name; higher is better)."""

    higher_is_better = True
    reads_data = True

    metric = "proxy"

    def __init__(self, cfg: ProxyConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self.cache: dict[tuple[Architecture, int], dict[str, float]] = {}
        self.evaluations = 0
        self.seconds = 0.0  # wall time spent scoring (networks built and measured)
        self._batch: tuple[Any, tuple[torch.Tensor, torch.Tensor]] | None = None

    def measure(self, net: torch.nn.Module, x: torch.Tensor | None, y: torch.Tensor | None, ctx: Any) -> float:
        raise NotImplementedError

    def seed(self, ctx: Any) -> int:
        """The proxy's seed: the option, else the run's seed."""
        if self.cfg.seed is not None:
            return self.cfg.seed
        return int(getattr(getattr(ctx, "cfg", None), "seed", 0) or 0)

    # -- data ------------------------------------------------------------------------------------
    def batch(self, ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The proxy's one batch: ``batches`` train minibatches in the order of epoch ``seed``, concatenated."""
        cfg = self.cfg
        assert isinstance(cfg, DataProxyConfig)
        seed = self.seed(ctx)
        key = (id(ctx.data), str(ctx.device), seed)
        if self._batch is None or self._batch[0] != key:
            size = cfg.batch_size or ctx.data.batch_size * ctx.data.world_size
            parts = list(ctx.data.batches("train", epoch=seed, shuffle=True, batch_size=size, drop_last=False,
                                          limit=cfg.batches, device=ctx.device, shard=False))
            if not parts:
                from nascore.errors import DatasetError

                raise DatasetError(f"{self.metric}: the train split is empty", hint="use a larger dataset or data.limit")
            x = torch.cat([p[0] for p in parts])
            y = torch.cat([p[1] for p in parts])
            self._batch = (key, (x, y))
        return self._batch[1]

    # -- networks --------------------------------------------------------------------------------
    def network(self, arch: Architecture, ctx: Any) -> torch.nn.Module:
        """A disposable network for ``arch``: a fresh seeded init, or the supernet's path."""
        arch_str = ctx.space.format(arch)
        device = torch.device(ctx.device)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(arch_seed(self.seed(ctx), arch_str))
            net = ctx.supernet.child(arch, inherit=self.cfg.from_supernet)
        return net.to(device).train()

    def _score_one(self, arch: Architecture, ctx: Any) -> dict[str, float]:
        start = time.perf_counter()
        x, y = self.batch(ctx) if self.reads_data else (None, None)
        net = self.network(arch, ctx)
        device = torch.device(ctx.device)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # dropout etc. draw from the same seed
            torch.manual_seed(arch_seed(self.seed(ctx) + 1, ctx.space.format(arch)))
            value = float(self.measure(net, x, y, ctx))
        self.seconds += time.perf_counter() - start
        self.evaluations += 1
        return {self.metric: value if not math.isnan(value) else -math.inf}

    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        out = []
        for arch in archs:
            if self.cfg.from_supernet:
                out.append(self._score_one(arch, ctx))
                continue
            key = (arch, self.seed(ctx))
            if key not in self.cache:
                self.cache[key] = self._score_one(arch, ctx)
            out.append(self.cache[key])
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg!r}, evaluations={self.evaluations})"


class SynflowEvaluator(ProxyEvaluator):
    metric = "synflow"
    reads_data = False

    def measure(self, net: torch.nn.Module, x: Any, y: Any, ctx: Any) -> float:
        assert isinstance(self.cfg, SynflowConfig)
        return measures.synflow(net, tuple(ctx.data.input_shape), bn=self.cfg.bn)


class SnipEvaluator(ProxyEvaluator):
    metric = "snip"

    def measure(self, net: torch.nn.Module, x: Any, y: Any, ctx: Any) -> float:
        return measures.snip(net, x, y)


class GradNormEvaluator(ProxyEvaluator):
    metric = "grad_norm"

    def measure(self, net: torch.nn.Module, x: Any, y: Any, ctx: Any) -> float:
        assert isinstance(self.cfg, GradNormConfig)
        return measures.grad_norm(net, x, y, per_layer=self.cfg.per_layer)


class FisherEvaluator(ProxyEvaluator):
    metric = "fisher"

    def measure(self, net: torch.nn.Module, x: Any, y: Any, ctx: Any) -> float:
        assert isinstance(self.cfg, FisherConfig)
        return measures.fisher(net, x, y, per_weight=self.cfg.per_weight)


class JacovEvaluator(ProxyEvaluator):
    metric = "jacov"

    def measure(self, net: torch.nn.Module, x: Any, y: Any, ctx: Any) -> float:
        assert isinstance(self.cfg, JacovConfig)
        return measures.jacov(net, x, eps=self.cfg.eps)


class NaswotEvaluator(ProxyEvaluator):
    metric = "naswot"

    def measure(self, net: torch.nn.Module, x: Any, y: Any, ctx: Any) -> float:
        return measures.naswot(net, x)


#: name -> (factory, config model, one-line summary); registered by :mod:`nascore_zerocost.plugin`.
EVALUATORS: dict[str, tuple[type[ProxyEvaluator], type[BaseModel], str]] = {
    "synflow": (SynflowEvaluator, SynflowConfig,
                "zero-cost: synaptic flow sum|θ·∂R/∂θ| of a fresh init, |θ|, float64, all-ones input, no BN (reads no data)"),
    "snip": (SnipEvaluator, SnipConfig, "zero-cost: SNIP sum|θ·∂L/∂θ| of a fresh init on one train minibatch"),
    "grad_norm": (GradNormEvaluator, GradNormConfig,
                  "zero-cost: sum of per-layer gradient norms of a fresh init on one train minibatch"),
    "fisher": (FisherEvaluator, FisherConfig,
               "zero-cost: Fisher channel saliency ½·mean(Σ a·∂L/∂a)² of a fresh init on one train minibatch"),
    "jacov": (JacovEvaluator, JacovConfig,
              "zero-cost: Jacobian covariance (Mellor et al. 2020 v1) of a fresh init on one train minibatch"),
    "naswot": (NaswotEvaluator, NaswotConfig,
               "zero-cost: NASWOT log|K| of the ReLU binary-code kernel of a fresh init on one train minibatch"),
}
