"""NAS-Bench-201 cell spaces: ``nb201`` (4 nodes, 6 edges × 5 ops) and ``tiny_cell``.

A cell is a DAG on ``nodes`` nodes; node ``i`` sums one op applied to every earlier node ``j``
(edge ``i<-j``). Decisions are the edges in NAS-Bench-201's order (``1<-0 | 2<-0, 2<-1 |
3<-0, 3<-1, 3<-2``) and each decision binds the same edge of every cell of the network. The
macro skeleton is NB201's: stem conv-BN → N cells → residual reduction block → N cells → … →
BN-ReLU-GAP-linear; cell ops are NB201's (ReLU-Conv-BN convs, ``avg_pool_3x3`` without padding
count, ``skip_connect``, ``none``).

Strings are NB201's ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|…|``, the key of the benchmark's
tables (so no index mapping is needed). An edge may hold a *set* of ops (TNAS mixed edges), written
``|nor_conv_1x1,nor_conv_3x3~0|``; its ops' outputs are summed (or mixed with weights).
A cell is valid when its output node is reachable from its input through edges that are not
(only) ``none``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nascore.arch import Architecture, option_members
from nascore.errors import ArchitectureError, ConfigError
from nascore.space import ChoiceLayer, Decision, SearchSpace, Supernet, Zero

SPACE_OPTIONS = "cell space options"

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
TINY_CELL_OPS = ("none", "skip_connect", "nor_conv_3x3")


def cell_edges(nodes: int) -> list[tuple[int, int]]:
    """``(to, from)`` pairs in NB201 order: (1,0), (2,0), (2,1), (3,0), (3,1), (3,2), …"""
    return [(i, j) for i in range(1, nodes) for j in range(i)]


class ReLUConvBN(nn.Module):
    """NB201's ReLU → Conv (bias only when BN is not affine) → BN."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, affine: bool, track: bool) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(cin, cout, k, stride, k // 2, bias=not affine),
            nn.BatchNorm2d(cout, affine=affine, track_running_stats=track),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResNetBasicBlock(nn.Module):
    """NB201's reduction block: two ReLU-Conv-BN 3×3 (first stride 2) + avgpool-conv shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 2) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride, True, True)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1, True, True)
        if stride == 2:
            self.downsample: nn.Module | None = nn.Sequential(
                nn.AvgPool2d(2, 2, 0, ceil_mode=True), nn.Conv2d(cin, cout, 1, 1, 0, bias=False))
        elif cin != cout:
            self.downsample = ReLUConvBN(cin, cout, 1, 1, True, True)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_b(self.conv_a(x))
        residual = self.downsample(x) if self.downsample is not None else x
        return residual + y


def cell_op(name: str, c: int, affine: bool, track: bool) -> nn.Module:
    """One NB201 candidate op at ``c`` channels, stride 1."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, affine, track)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, affine, track)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    raise ValueError(f"unknown cell op {name!r}")


class CellSpace(SearchSpace):
    """NB201-style cell space (see module docstring); ``nb201`` and ``tiny_cell`` are instances.

    ``stages`` cell groups of ``n_cells`` cells each, channels ``C·2^s``, joined by residual
    reduction blocks; the stem conv has stride ``stem_stride``.
    """

    allow_sets = True

    def __init__(
        self,
        *,
        name: str = "nb201",
        nodes: int = 4,
        ops: Sequence[str] = NB201_OPS,
        C: int = 16,
        n_cells: int = 5,
        stages: int = 3,
        stem_stride: int = 1,
        bn_affine: bool = True,
        track_running_stats: bool = True,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
    ) -> None:
        ops = tuple(ops)
        unknown = [o for o in ops if o not in NB201_OPS]
        if unknown or not ops or len(set(ops)) != len(ops):
            raise ConfigError([f"cell ops must be distinct names from {NB201_OPS}, got {list(ops)}"], source=SPACE_OPTIONS)
        if nodes < 2:
            raise ConfigError(["a cell needs at least 2 nodes"], source=SPACE_OPTIONS)
        self.name = name
        self.nodes = int(nodes)
        self.ops = ops
        self.C = int(C)
        self.n_cells = int(n_cells)
        self.stages = int(stages)
        self.stem_stride = int(stem_stride)
        self.bn_affine = bool(bn_affine)
        self.track_running_stats = bool(track_running_stats)
        self.edges = cell_edges(self.nodes)
        super().__init__(
            [Decision(f"{i}<-{j}", ops) for i, j in self.edges],
            input_shape=input_shape,
            num_classes=num_classes,
        )

    # -- validity ----------------------------------------------------------------------------
    @staticmethod
    def _cut(option: Any) -> bool:
        """An edge is cut when every op it holds is ``none``."""
        return all(o == "none" for o in option_members(option))

    def is_valid(self, arch: Architecture) -> bool:
        """The output node is reachable from the input through edges that are not ``none``."""
        if len(arch) != len(self.edges):
            return False
        reach = [True] + [False] * (self.nodes - 1)
        for (i, j), opt in zip(self.edges, arch.ops):
            if reach[j] and not self._cut(opt):
                reach[i] = True
        return reach[-1]

    def check(self, arch: Architecture) -> Architecture:
        """As the base check, with a hint saying why a cell is invalid."""
        try:
            return super().check(arch)
        except ArchitectureError:
            members_ok = len(arch) == len(self.edges) and all(
                set(option_members(o)) <= set(a) for o, a in zip(arch.ops, self.allowed))
            if members_ok and not self.is_valid(arch):
                raise ArchitectureError(
                    f"{self.format(arch)!r} is not a valid cell of space {self.name!r}: its output node "
                    f"{self.nodes - 1} cannot be reached from the input node 0",
                    hint="make at least one input→output path of edges whose op is not 'none'",
                ) from None
            raise

    def mutate(self, arch: Architecture, p: float, rng: random.Random) -> Architecture:
        """The SPOS mutation, redrawn until the cell is valid (the parent if it never is)."""
        for _ in range(100):
            child = super().mutate(arch, p, rng)
            if self.is_valid(child):
                return child
        return arch

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        """Uniform crossover, redrawn until the cell is valid (parent ``a`` if it never is)."""
        for _ in range(100):
            child = super().crossover(a, b, rng)
            if self.is_valid(child):
                return child
        return a

    def restrict(self, allowed: Mapping[int | str, Iterable[str]]) -> "CellSpace":
        """As the base restriction; also refused when no valid cell would be left."""
        clone = super().restrict(allowed)
        best = [next((o for o in a if o != "none"), a[0]) for a in clone.allowed]
        if not clone.is_valid(Architecture(best)):
            raise ArchitectureError(
                f"restricting {self.name} to {clone.allowed_json()} leaves no valid cell "
                f"(the output node is cut off from the input)",
                hint="keep an op other than 'none' on the edges of at least one input→output path",
            )
        return clone  # type: ignore[return-value]

    # -- strings -----------------------------------------------------------------------------
    def expected_form(self) -> str:
        """The string pattern of a cell, e.g. ``|op~0|+|op~0|op~1|`` (shown in parse errors)."""
        groups = ["|".join(f"op~{j}" for j in range(i)) for i in range(1, self.nodes)]
        return "|" + "|+|".join(groups) + "|"

    def format(self, arch: Architecture) -> str:
        """NB201's cell string; a set of ops on an edge is written ``a,b~j`` (sorted)."""
        groups: list[list[str]] = [[] for _ in range(1, self.nodes)]
        for (i, j), opt in zip(self.edges, arch.ops):
            groups[i - 1].append(",".join(option_members(opt)) + f"~{j}")
        return "|" + "|+|".join("|".join(g) for g in groups) + "|"

    def parse(self, text: str) -> Architecture:
        """Inverse of :meth:`format`; errors name the bad token and show the expected form."""
        form = self.expected_form()
        example = Architecture([next((o for o in a if o != "none"), a[0]) for a in self.allowed])
        hint = f"write {form} (a set of ops on one edge: 'op_a,op_b~j'), e.g. {self.format(example)!r}"
        s = text.strip()
        if len(s) < 2 or not (s.startswith("|") and s.endswith("|")):
            raise ArchitectureError(f"{text!r} is not a cell string of space {self.name!r}: it must start and end with '|'", hint=hint)
        groups = s[1:-1].split("|+|")
        if len(groups) != self.nodes - 1:
            raise ArchitectureError(
                f"{text!r} has {len(groups)} node group(s) separated by '|+|'; cells of space {self.name!r} "
                f"have {self.nodes - 1} (one per node after the input)",
                hint=hint,
            )
        ops: list[Any] = []
        for i, group in enumerate(groups, start=1):
            tokens = group.split("|")
            if len(tokens) != i:
                raise ArchitectureError(
                    f"node {i} group {group!r} has {len(tokens)} edge(s); node {i} takes {i} "
                    f"(from nodes {', '.join(str(j) for j in range(i))})",
                    hint=hint,
                )
            for j, token in enumerate(tokens):
                name, sep, src = token.rpartition("~")
                if not sep or not name:
                    raise ArchitectureError(
                        f"bad edge token {token!r} in node {i}: expected 'op~{j}'", hint=hint)
                if src != str(j):
                    raise ArchitectureError(
                        f"bad edge token {token!r} in node {i}: edge {j + 1} of node {i} must come "
                        f"from node {j} ('~{j}'), not '~{src}'",
                        hint=hint,
                    )
                members = name.split(",")
                for m in members:
                    if m not in self.ops:
                        raise ArchitectureError(
                            f"bad edge token {token!r} in node {i}: unknown op {m!r}",
                            hint=f"ops are: {', '.join(self.ops)}; {hint}",
                        )
                if len(set(members)) != len(members):
                    raise ArchitectureError(f"bad edge token {token!r} in node {i}: an op is repeated", hint=hint)
                ops.append(frozenset(members) if len(members) > 1 else members[0])
        return self.check(Architecture(ops))

    # -- building ----------------------------------------------------------------------------
    def stage_channels(self) -> list[int]:
        """Channels of the cells of each stage (``C``, ``2C``, ``4C``, …)."""
        return [self.C * 2**s for s in range(self.stages)]

    def build_supernet(self) -> "CellSupernet":
        return CellSupernet(self)


class Cell(nn.Module):
    """One cell: a ChoiceLayer per edge; node ``i`` = Σ_j edge(i<-j)(node j)."""

    def __init__(self, space: CellSpace, c: int) -> None:
        super().__init__()
        self.nodes = space.nodes
        self.edge_keys = [f"e{i}_{j}" for i, j in space.edges]
        self.edges = nn.ModuleDict({
            key: ChoiceLayer({o: cell_op(o, c, space.bn_affine, space.track_running_stats) for o in d.options})
            for key, d in zip(self.edge_keys, space.decisions)
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        k = 0
        for i in range(1, self.nodes):
            total = None
            for j in range(i):
                y = self.edges[self.edge_keys[k]](states[j])
                total = y if total is None else total + y
                k += 1
            states.append(total)
        return states[-1]


class CellSupernet(Supernet):
    """NB201 macro skeleton around weight-sharing cells (see module docstring)."""

    def __init__(self, space: CellSpace) -> None:
        super().__init__(space)
        channels = space.stage_channels()
        c0 = channels[0]
        self.stem = nn.Sequential(
            nn.Conv2d(space.input_shape[0], c0, 3, space.stem_stride, 1, bias=False), nn.BatchNorm2d(c0))
        body: list[nn.Module] = []
        cell_names: list[str] = []
        c_prev = c0
        for s, c in enumerate(channels):
            if s > 0:
                body.append(ResNetBasicBlock(c_prev, c, 2))
            for _ in range(space.n_cells):
                cell_names.append(f"body.{len(body)}")
                body.append(Cell(space, c))
            c_prev = c
        self.body = nn.ModuleList(body)
        for name in cell_names:
            for d, key in enumerate(f"e{i}_{j}" for i, j in space.edges):
                self.bind(d, f"{name}.edges.{key}")
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, space.num_classes)

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.body:
            x = block(x)
        x = self.pool(self.lastact(x)).flatten(1)
        return self.classifier(x)


def nb201_space(**kwargs: Any) -> CellSpace:
    """The NAS-Bench-201 space (C=16, N=5, 4 nodes, 5 ops) unless overridden."""
    return CellSpace(name="nb201", nodes=4, ops=NB201_OPS, **kwargs)


def tiny_cell_space(**kwargs: Any) -> CellSpace:
    """The tiny test-bed cell: 3 edges × {none, skip, conv3x3}, C=8, one cell per stage, 2 stages."""
    defaults: dict[str, Any] = dict(name="tiny_cell", nodes=3, ops=TINY_CELL_OPS, C=8, n_cells=1,
                                    stages=2, stem_stride=2, input_shape=(1, 28, 28))
    defaults.update(kwargs)
    return CellSpace(**defaults)
