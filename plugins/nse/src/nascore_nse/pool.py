"""The ``nse_pool`` space: a large op pool per layer, multi-branch layers, an active subset.

A chain (stem → ``layers`` shape-preserving layers, a fixed downsampling conv before the second
half → mean pool → linear, the ``tiny_chain`` skeleton; or, with ``stages``, an ImageNet-style
stem → stages entered by a fixed strided 3×3 conv → mean pool → linear) in which every layer offers a *pool* of ops.
A layer's option is a non-empty *set* of ops whose outputs are summed (a multi-branch layer; a
single op is the one-element case) or ``skip`` — the empty set, i.e. the identity, which every
layer allows because all layers keep the shape. ``max_branches`` caps the set size (NSE: none).

NSE searches a *sub-space*: per layer an active subset of ``active`` (K) ops. That is a
restriction of this space (``space.restrict``: ``skip`` stays allowed), so a restricted space and
the full pool build the same supernet and weights carry over. Sampling, enumeration and mutation
draw sets of the allowed ops; the cost table is additive over the ops of a set (fvcore counts the
element-wise sum as 0 MACs), so multi-branch MACs are exact from the per-op table.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from nascore.arch import Architecture, Option, option_members
from nascore.space import ChoiceLayer, Decision, SearchSpace, Supernet, require_space

SKIP = "skip"


def _conv_bn_relu(c: int, k: int, dilation: int = 1, groups: int = 1) -> list[nn.Module]:
    pad = dilation * (k // 2)
    return [nn.Conv2d(c, c, k, 1, pad, dilation=dilation, groups=groups, bias=False), nn.BatchNorm2d(c), nn.ReLU()]


def _pool_bn(kind: str, c: int) -> nn.Sequential:
    pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False) if kind == "avg" else nn.MaxPool2d(3, 1, 1)
    return nn.Sequential(pool, nn.BatchNorm2d(c))


def make_op(name: str, c: int) -> nn.Module:
    """One pool op at ``c`` channels (same shape in and out)."""
    if name in ("conv1", "conv3", "conv5", "conv7"):
        return nn.Sequential(*_conv_bn_relu(c, int(name[-1])))
    if name in ("dil3", "dil5"):
        return nn.Sequential(*_conv_bn_relu(c, int(name[-1]), dilation=2))
    if name in ("sep3", "sep5", "sep7"):
        k = int(name[-1])
        return nn.Sequential(*_conv_bn_relu(c, k, groups=c), *_conv_bn_relu(c, 1))
    if name in ("mb3", "mb5", "mb7", "mb3e6", "mb5e6", "mb7e6"):
        k, mid = int(name[2]), (6 if name.endswith("e6") else 3) * c
        return nn.Sequential(nn.Conv2d(c, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                             nn.Conv2d(mid, mid, k, 1, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                             nn.Conv2d(mid, c, 1, bias=False), nn.BatchNorm2d(c))
    if name in ("avg3", "max3"):
        return _pool_bn(name[:3], c)
    if name == SKIP:
        return nn.Identity()
    raise ValueError(f"unknown pool op {name!r}")


POOL_OPS: tuple[str, ...] = ("conv1", "conv3", "conv5", "conv7", "dil3", "dil5", "sep3", "sep5", "sep7",
                             "mb3", "mb5", "mb7", "mb3e6", "mb5e6", "mb7e6", "avg3", "max3")
DEFAULT_POOL: tuple[str, ...] = ("conv1", "conv3", "conv5", "dil3", "sep3", "sep5", "mb3", "avg3", "max3")


class NSEPoolConfig(BaseModel):
    """Options of the ``nse_pool`` space."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    layers: int = Field(4, gt=0, description="choice layers (a fixed stride-2 conv before the second half)")
    width: int = Field(8, gt=0, description="channels of the first half (doubled after)")
    ops: tuple[str, ...] = Field(DEFAULT_POOL, min_length=1, description=f"the op pool of every layer, from {', '.join(POOL_OPS)}")
    stages: tuple[tuple[int, int, int], ...] | None = Field(
        None, description="ImageNet-style skeleton: [channels, choice layers, stride] per stage, each stage entered by a "
        "fixed 3x3 conv (its stride, to its channels); null: the two-half tiny_chain skeleton of `layers`/`width`")
    stem_channels: int = Field(16, gt=0, description="with `stages`: channels of the stride-2 stem conv")
    active: int = Field(3, gt=0, description="K: ops per layer in NSE's active sub-space")
    initial: tuple[str, ...] | None = Field(None, description="ops active in the first round (null: K drawn at random per layer)")
    max_branches: int | None = Field(None, gt=0, description="most ops summed in one layer (null: any subset, as NSE)")

    @model_validator(mode="after")
    def _check(self) -> "NSEPoolConfig":
        unknown = [o for o in self.ops if o not in POOL_OPS]
        if unknown:
            raise ValueError(f"unknown pool op(s) {unknown}; choose from {', '.join(POOL_OPS)}")
        if self.stages is not None and any(c < 1 or n < 1 or st not in (1, 2) for c, n, st in self.stages):
            raise ValueError("stages entries are [channels >= 1, layers >= 1, stride 1 or 2]")
        if len(set(self.ops)) != len(self.ops):
            raise ValueError("ops must be distinct")
        if self.active > len(self.ops):
            raise ValueError(f"active ({self.active}) is larger than the pool ({len(self.ops)} ops)")
        if self.initial is not None:
            bad = [o for o in self.initial if o not in self.ops]
            if bad:
                raise ValueError(f"initial ops {bad} are not in the pool")
            if not 0 < len(set(self.initial)) <= self.active:
                raise ValueError(f"initial must name 1..active ({self.active}) distinct ops")
        return self


class NSEPoolSpace(SearchSpace):
    """Pool space with multi-branch (set-valued) layers; see module docstring."""

    name = "nse_pool"

    def __init__(
        self,
        layers: int = 4,
        width: int = 8,
        ops: Sequence[str] = DEFAULT_POOL,
        active: int = 3,
        initial: Sequence[str] | None = None,
        max_branches: int | None = None,
        stages: Sequence[Sequence[int]] | None = None,
        stem_channels: int = 16,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
    ) -> None:
        self.pool = tuple(ops)
        self.stages = tuple(tuple(int(v) for v in st) for st in stages) if stages else None
        self.stem_channels = int(stem_channels)
        if self.stages:
            layers = sum(n for _, n, _ in self.stages)
        super().__init__([Decision(f"layer{i}", self.pool + (SKIP,), multi=True) for i in range(layers)],
                         input_shape=input_shape, num_classes=num_classes)
        self.width = int(width)
        self.active_k = int(active)
        self.initial = tuple(initial) if initial else None
        self.max_branches = max_branches

    # -- options -----------------------------------------------------------------------------
    def layer_ops(self, layer: int) -> tuple[str, ...]:
        """The real ops (not ``skip``) allowed at ``layer``."""
        return tuple(o for o in self.allowed[layer] if o != SKIP)

    def cap(self, layer: int) -> int:
        n = len(self.layer_ops(layer))
        return n if self.max_branches is None else min(n, self.max_branches)

    def option(self, ops: Sequence[str]) -> Option:
        """The option of a layer running ``ops`` summed (``skip`` when empty)."""
        ops = sorted(set(ops))
        if not ops:
            return SKIP
        return ops[0] if len(ops) == 1 else frozenset(ops)

    def layer_options(self, layer: int) -> list[Option]:
        """Every valid option of ``layer``: ``skip`` and each set of up to ``max_branches`` ops."""
        ops = self.layer_ops(layer)
        out: list[Option] = [SKIP] if SKIP in self.allowed[layer] else []
        for n in range(1, self.cap(layer) + 1):
            out += [self.option(c) for c in itertools.combinations(ops, n)]
        return out

    def is_valid(self, arch: Architecture) -> bool:
        for opt in arch.ops:
            members = option_members(opt)
            if SKIP in members and len(members) > 1:
                return False
            if self.max_branches is not None and len(members) > self.max_branches:
                return False
        return True

    def size(self) -> int:
        return math.prod(len(self.layer_options(j)) for j in range(len(self.decisions)))

    def enumerate(self) -> Iterator[Architecture]:
        for ops in itertools.product(*(self.layer_options(j) for j in range(len(self.decisions)))):
            yield Architecture(ops)

    def sample(
        self, rng: random.Random, probs: Sequence[Mapping[str, float] | None] | None = None, max_tries: int = 1000
    ) -> Architecture:
        """Uniform over each layer's options, or gated by per-op probabilities ``probs`` (NSE)."""
        if probs is not None:
            return sample_gated(self, rng, probs)
        return Architecture([self._uniform(j, rng) for j in range(len(self.decisions))])

    def _uniform(self, layer: int, rng: random.Random) -> Option:
        opts = self.layer_options(layer)
        return opts[rng.randrange(len(opts))]

    def mutate(self, arch: Architecture, p: float, rng: random.Random) -> Architecture:
        ops = list(arch.ops)
        for j in range(len(ops)):
            if rng.random() < p:
                ops[j] = self._uniform(j, rng)
        return Architecture(ops)

    def ops_of(self, arch: Architecture) -> list[set[str]]:
        """Per layer, the real ops ``arch`` runs."""
        return [set(option_members(o)) - {SKIP} for o in arch.ops]

    def restrict_active(self, active: Sequence[Sequence[str]]) -> "NSEPoolSpace":
        """The sub-space whose layers allow exactly these ops (plus ``skip``)."""
        return self.restrict({j: list(a) + [SKIP] for j, a in enumerate(active)})  # type: ignore[return-value]

    def describe(self) -> str:
        act = "/".join(str(len(self.layer_ops(j))) for j in range(len(self.decisions)))
        return f"{self.name}: {len(self.decisions)} layers, pool {len(self.pool)} ops, active {act}, {self.size():,} architectures"

    def build_supernet(self) -> "NSEPoolSupernet":
        return NSEPoolSupernet(self)


def sample_gated(space: NSEPoolSpace, rng: random.Random, probs: Sequence[Mapping[str, float] | None],
                 max_tries: int = 100) -> Architecture:
    """Each allowed op of a layer is on with its probability; sets too large (or empty where skip is
    not allowed) are redrawn, so the draw is the gate distribution conditioned on validity."""
    ops_out: list[Option] = []
    for j in range(len(space.decisions)):
        ops = space.layer_ops(j)
        p = probs[j] or {}
        cap = space.cap(j)
        chosen: list[str] = []
        for _ in range(max_tries):
            chosen = [o for o in ops if rng.random() < float(p.get(o, 0.5))]
            if len(chosen) <= cap and (chosen or SKIP in space.allowed[j]):
                break
        else:
            chosen = sorted(ops, key=lambda o: -float(p.get(o, 0.5)))[:1]
        ops_out.append(space.option(chosen))
    return Architecture(ops_out)


def require_pool(space: Any, who: str) -> NSEPoolSpace:
    return require_space(space, NSEPoolSpace, who,
                         hint="set `space: {name: nse_pool}` (NSE evolves an active subset of an op pool)")


class NSEPoolSupernet(Supernet):
    """Every pool op of every layer; a set-valued option sums its ops (or mixes them with weights)."""

    def __init__(self, space: NSEPoolSpace) -> None:
        super().__init__(space)
        n = len(space.decisions)
        if space.stages:  # stem -> per stage: a fixed 3x3 conv (stride, channels), then its choice layers
            c = space.stem_channels
            plan = []  # (width of layer i, transition before it or None)
            for ch, depth, stride in space.stages:
                for j in range(depth):
                    plan.append((ch, (c, ch, stride) if j == 0 else None))
                c = ch
        else:  # two halves, a stride-2 conv between
            c = space.width
            plan = [(c if i < n // 2 else 2 * c, (c, 2 * c, 2) if i == n // 2 else None) for i in range(n)]
        stem_c = space.stem_channels if space.stages else space.width
        self.stem = nn.Sequential(nn.Conv2d(space.input_shape[0], stem_c, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_c), nn.ReLU())
        self.layers = nn.ModuleList(ChoiceLayer({o: make_op(o, w) for o in d.options})
                                    for (w, _), d in zip(plan, space.decisions))
        trans = {i: nn.Sequential(nn.Conv2d(a, b, 3, st, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU())
                 for i, (_, t) in enumerate(plan) if t is not None for a, b, st in [t]}
        if space.stages:
            self.transitions = nn.ModuleDict({str(i): m for i, m in trans.items()})
        else:
            self.down = trans[n // 2]
        self.head = nn.Linear(plan[-1][0], space.num_classes)
        for i in range(n):
            self.bind(i, f"layers.{i}")

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.space.stages:
            for i, layer in enumerate(self.layers):
                if str(i) in self.transitions:
                    x = self.transitions[str(i)](x)
                x = layer(x)
            return self.head(x.mean((2, 3)))
        half = len(self.layers) // 2
        for i, layer in enumerate(self.layers):
            if i == half:
                x = self.down(x)
            x = layer(x)
        return self.head(x.mean((2, 3)))


def make_pool_space(cfg: NSEPoolConfig, ctx: Any = None) -> NSEPoolSpace:
    data = getattr(ctx, "data", None) if ctx is not None else None
    shape, classes = ((1, 28, 28), 10) if data is None else (tuple(data.input_shape), data.num_classes)
    return NSEPoolSpace(layers=cfg.layers, width=cfg.width, ops=cfg.ops, active=cfg.active, initial=cfg.initial,
                        max_branches=cfg.max_branches, stages=cfg.stages, stem_channels=cfg.stem_channels,
                        input_shape=shape, num_classes=classes)  # type: ignore[arg-type]

