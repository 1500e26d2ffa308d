"""The tiny test-bed spaces: small enough to train every architecture standalone.

``tiny_chain`` is 4 layers × 3 ops (81 architectures); each layer is a 3×3 conv, a 5×5 conv or
the identity, at fixed width, with a fixed downsampling between layers 2 and 3. It is the space
whose ground truth (every architecture trained standalone) ships as a test fixture, so method
tests can measure ranking correlation in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from nascore.space import ChainLayout, ChoiceLayer, Decision, SearchSpace, Supernet


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, affine: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(cout, affine=affine),
        nn.ReLU(inplace=False),
    )


TINY_OPS = ("conv3", "conv5", "skip")


class TinyChainSpace(SearchSpace):
    name = "tiny_chain"

    def __init__(
        self,
        layers: int = 4,
        width: int = 8,
        ops: tuple[str, ...] = TINY_OPS,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        affine: bool = True,
    ) -> None:
        super().__init__(
            [Decision(f"layer{i}", ops) for i in range(layers)],
            input_shape=input_shape,
            num_classes=num_classes,
        )
        self.width = width
        self.affine = affine

    def build_supernet(self) -> "TinyChainSupernet":
        return TinyChainSupernet(self)


def _tiny_op(name: str, c: int, affine: bool) -> nn.Module:
    if name == "conv3":
        return conv_bn_relu(c, c, 3, affine=affine)
    if name == "conv5":
        return conv_bn_relu(c, c, 5, affine=affine)
    if name == "conv1":
        return conv_bn_relu(c, c, 1, affine=affine)
    if name == "skip":
        return nn.Identity()
    raise ValueError(f"unknown tiny op {name!r}")


class TinyChainSupernet(Supernet):
    def __init__(self, space: TinyChainSpace, make_op: Callable[[str, int, bool], nn.Module] | None = None) -> None:
        super().__init__(space)
        make_op = make_op or _tiny_op  # looked up now, not at import: tests patch tiny._tiny_op (ABS's thin op)
        c = space.width
        cin = space.input_shape[0]
        self.stem = conv_bn_relu(cin, c, 3, stride=2, affine=space.affine)
        layers = []
        for i, d in enumerate(space.decisions):
            width = c if i < len(space.decisions) // 2 else 2 * c
            layers.append(ChoiceLayer({o: make_op(o, width, space.affine) for o in d.options}))
        self.layers = nn.ModuleList(layers)
        self.down = conv_bn_relu(c, 2 * c, 3, stride=2, affine=space.affine)
        self.head = nn.Linear(2 * c, space.num_classes)
        for i in range(len(layers)):
            self.bind(i, f"layers.{i}")

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        half = len(self.layers) // 2
        for i, layer in enumerate(self.layers):
            if i == half:
                x = self.down(x)
            x = layer(x)
        x = x.mean((2, 3))
        return self.head(x)

    def chain_layout(self) -> ChainLayout:
        """stem → layers (``down`` before the second half) → mean pool → linear (prefix sharing, NEAS)."""
        n = len(self.layers)
        items: list[tuple[str, int | None]] = [("stem", None)]
        for i in range(n):
            if i == n // 2:
                items.append(("down", None))
            items.append((f"layers.{i}", i))
        return ChainLayout(tuple(items), ("head",), _tiny_head)


def _tiny_head(mods: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    return mods[0](x.mean((2, 3)))


MATCHED_OPS = ("conv", "dil", "pool", "lin")
"""The options of ``tiny_matched``: each is one 3×3 convolution with C→C channels and one BN, so
every option has the same MACs and parameters (fvcore counts neither activations nor max-pooling);
they differ only in inductive bias — ``conv`` conv→BN→ReLU; ``dil`` the same conv dilated by 2 (a
5×5 receptive field); ``pool`` a 3×3/1 max-pool before the conv (local shift invariance); ``lin`` conv→BN
with no activation (the layer is linear)."""


def _matched_op(name: str, c: int, affine: bool) -> nn.Module:
    if name == "conv":
        return conv_bn_relu(c, c, 3, affine=affine)
    if name == "dil":
        return nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 2, dilation=2, bias=False), nn.BatchNorm2d(c, affine=affine), nn.ReLU(inplace=False)
        )
    if name == "pool":
        return nn.Sequential(nn.MaxPool2d(3, 1, 1), *conv_bn_relu(c, c, 3, affine=affine))
    if name == "lin":
        return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c, affine=affine))
    raise ValueError(f"unknown tiny_matched op {name!r}")


class TinyMatchedSpace(TinyChainSpace):
    """The cost-matched test bed: ``layers`` × {conv, dil, pool, lin}, every architecture with the
    same MACs and parameters, so a cost count carries no ranking signal by construction (what a
    constrained search must rank is exactly this: candidates of equal cost)."""

    name = "tiny_matched"

    def __init__(self, layers: int = 4, width: int = 8, ops: tuple[str, ...] = MATCHED_OPS, **kw: Any) -> None:
        super().__init__(layers=layers, width=width, ops=ops, **kw)

    def build_supernet(self) -> "TinyChainSupernet":
        return TinyChainSupernet(self, make_op=_matched_op)
