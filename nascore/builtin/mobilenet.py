"""The MobileNetV3-like chain space of SPOS/Cream/NEAS/ABS (``mobilenet``).

stem conv → [optional fixed depthwise-separable block (Cream's stage 0)] → stages of choice
layers → [1×1 conv] → global pool → [1×1 head conv] → dropout → linear. Every choice layer picks
an inverted-residual MBConv block ``k{kernel}e{expansion}`` (default kernel {3,5,7} × expansion
{4,6}: ``k3e4 … k7e6``) or, on layers that keep the shape (every layer but the first of a stage)
and when ``allow_skip`` is set, ``skip`` (identity: the layer is dropped, as in NEAS/ABS).

Each candidate is one self-contained module (expand → depthwise → SE → project, plus its own
residual add), so its MACs/params depend only on its (fixed) input shape, which is what the
per-option cost table needs. SE (ratio 0.25, ReLU + hard-sigmoid gate, Cream's ``reduce_mid``
with divisor 8) and the activation (``mbv3``: ReLU early, hard-swish in the later half of the
stages and the head; or ``swish`` as Cream's code, ``hswish``, ``relu``) are configurable.

The defaults are tiny (4 stages × 2 layers, 8–32 channels) so a 28×28/32×32 input runs on a CPU
in milliseconds; :data:`CREAM_IMAGENET` lists the options of Cream's ImageNet-size supernet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn

from nascore.errors import ConfigError
from nascore.space import ChainLayout, ChoiceLayer, Decision, SearchSpace, Supernet

SPACE_OPTIONS = "mobilenet space options"

SKIP = "skip"

#: Options of Cream's 600M-MACs ImageNet supernet (pass to the ``mobilenet`` space config).
CREAM_IMAGENET: dict[str, Any] = {
    "stem_channels": 16,
    "stem_stride": 2,
    "first_block_channels": 16,
    "stage_depths": [4, 4, 4, 4, 4],
    "stage_channels": [24, 40, 80, 96, 192],
    "stage_strides": [2, 2, 2, 1, 2],
    "last_channels": 320,
    "head_channels": 1280,
    "act": "swish",
    "se": "all",
    "dropout": 0.2,
    "allow_skip": False,
}


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` (never more than 10% down), as timm/Cream."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def scale_channels(c: int, width_mult: float) -> int:
    """Channels under a width multiplier (unchanged at 1.0, so tiny widths stay as given)."""
    return int(c) if width_mult == 1.0 else make_divisible(c * width_mult)


def make_act(kind: str) -> nn.Module:
    """The activation module for ``relu``/``hswish``/``swish``."""
    if kind == "relu":
        return nn.ReLU()
    if kind == "hswish":
        return nn.Hardswish()
    if kind == "swish":
        return nn.SiLU()
    raise ValueError(f"unknown activation {kind!r}")


def conv_bn_act(cin: int, cout: int, k: int, stride: int, act: str | None, affine: bool,
                groups: int = 1) -> nn.Sequential:
    """Conv (no bias, same padding) → BN → optional activation."""
    mods: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, affine=affine),
    ]
    if act is not None:
        mods.append(make_act(act))
    return nn.Sequential(*mods)


class SqueezeExcite(nn.Module):
    """SE as in Cream/timm: mean-pool → 1×1 reduce → ReLU → 1×1 expand → hard-sigmoid gate."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand → k×k depthwise (stride) → SE → 1×1 project (+ residual)."""

    def __init__(self, cin: int, cout: int, kernel: int, expansion: int, stride: int, act: str,
                 se_ratio: float, affine: bool) -> None:
        super().__init__()
        mid = cin * expansion
        self.expand = conv_bn_act(cin, mid, 1, 1, act, affine) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn_act(mid, mid, kernel, stride, act, affine, groups=mid)
        self.se = SqueezeExcite(mid, make_divisible(mid * se_ratio)) if se_ratio > 0 else nn.Identity()
        self.project = conv_bn_act(mid, cout, 1, 1, None, affine)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class DepthwiseSeparable(nn.Module):
    """Cream's fixed stage-0 block: depthwise 3×3 → SE → 1×1 project (+ residual)."""

    def __init__(self, cin: int, cout: int, stride: int, act: str, se_ratio: float, affine: bool) -> None:
        super().__init__()
        self.depthwise = conv_bn_act(cin, cin, 3, stride, act, affine, groups=cin)
        self.se = SqueezeExcite(cin, make_divisible(cin * se_ratio)) if se_ratio > 0 else nn.Identity()
        self.project = conv_bn_act(cin, cout, 1, 1, None, affine)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(x)))
        return x + y if self.residual else y


@attrs.frozen
class LayerSpec:
    """Shape of one choice layer: what every candidate of that decision eats and returns."""

    stage: int
    index: int
    cin: int
    cout: int
    stride: int
    act: str
    se_ratio: float


def mbconv_op_names(kernels: Sequence[int], expansions: Sequence[int]) -> tuple[str, ...]:
    """Op names ``k{k}e{e}``, kernel-major (``k3e4, k3e6, k5e4, …`` as Cream's choice order)."""
    return tuple(f"k{k}e{e}" for k in kernels for e in expansions)


def parse_mbconv(name: str) -> tuple[int, int]:
    """``"k5e6"`` → (5, 6)."""
    k, e = name[1:].split("e")
    return int(k), int(e)


class MobileNetSpace(SearchSpace):
    """MBConv chain space (see module docstring); one decision per choice layer."""

    name = "mobilenet"

    def __init__(
        self,
        *,
        width_mult: float = 1.0,
        stem_channels: int = 8,
        stem_stride: int = 2,
        first_block_channels: int = 0,
        stage_depths: Sequence[int] = (2, 2, 2, 2),
        stage_channels: Sequence[int] = (8, 16, 24, 32),
        stage_strides: Sequence[int] = (1, 2, 2, 1),
        stage_out_channels: Sequence[int] | None = None,
        kernels: Sequence[int] = (3, 5, 7),
        expansions: Sequence[int] = (4, 6),
        allow_skip: bool = True,
        se: str = "all",
        se_ratio: float = 0.25,
        act: str = "mbv3",
        last_channels: int = 64,
        head_channels: int = 128,
        dropout: float = 0.0,
        bn_affine: bool = True,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
    ) -> None:
        if not (len(stage_depths) == len(stage_channels) == len(stage_strides)):
            raise ConfigError(["stage_depths, stage_channels and stage_strides must have the same length"], source=SPACE_OPTIONS)
        if se not in ("all", "late", "none"):
            raise ConfigError([f"se must be 'all', 'late' or 'none', got {se!r}"], source=SPACE_OPTIONS)
        if act not in ("mbv3", "relu", "hswish", "swish"):
            raise ConfigError([f"act must be 'mbv3', 'relu', 'hswish' or 'swish', got {act!r}"], source=SPACE_OPTIONS)
        n_stages = len(stage_depths)
        late = n_stages // 2  # first "later" stage (hard-swish / SE in mbv3 style)

        def stage_act(s: int) -> str:
            if act == "mbv3":
                return "hswish" if s >= late else "relu"
            return act

        self.early_act = "relu" if act == "mbv3" else act
        self.late_act = "hswish" if act == "mbv3" else act
        self.width_mult = float(width_mult)
        self.stem_channels = scale_channels(stem_channels, width_mult)
        self.stem_stride = int(stem_stride)
        self.first_block_channels = scale_channels(first_block_channels, width_mult) if first_block_channels else 0
        self.last_channels = scale_channels(last_channels, width_mult) if last_channels else 0
        self.head_channels = int(head_channels)
        self.dropout = float(dropout)
        self.bn_affine = bool(bn_affine)
        self.se_ratio = float(se_ratio)
        self.se_mode = se
        self.act = act
        self.allow_skip = bool(allow_skip)
        self.op_names = mbconv_op_names(kernels, expansions)

        layers: list[LayerSpec] = []
        decisions: list[Decision] = []
        cin = self.first_block_channels or self.stem_channels
        outs = list(stage_out_channels) if stage_out_channels is not None else list(stage_channels)
        if len(outs) != n_stages:
            raise ConfigError(["stage_out_channels needs one entry per stage"], source=SPACE_OPTIONS)
        for s, (depth, ch, stride) in enumerate(zip(stage_depths, stage_channels, stage_strides)):
            hidden = scale_channels(ch, width_mult)
            last = scale_channels(outs[s], width_mult)  # the stage's last layer (DNA: the teacher block's width)
            ratio = self.se_ratio if (se == "all" or (se == "late" and s >= late)) else 0.0
            for j in range(int(depth)):
                lin = cin if j == 0 else hidden
                lout = last if j == int(depth) - 1 else hidden
                spec = LayerSpec(s, j, lin, lout, int(stride) if j == 0 else 1, stage_act(s), ratio)
                layers.append(spec)
                ops = self.op_names + ((SKIP,) if allow_skip and j > 0 and lin == lout else ())
                decisions.append(Decision(f"s{s}_l{j}", ops))
            cin = last
        self.layers: tuple[LayerSpec, ...] = tuple(layers)
        self.final_channels = cin
        super().__init__(decisions, input_shape=input_shape, num_classes=num_classes)

    def build_supernet(self) -> "MobileNetSupernet":
        return MobileNetSupernet(self)


def _candidate(op: str, spec: LayerSpec, affine: bool) -> nn.Module:
    if op == SKIP:
        return nn.Identity()
    k, e = parse_mbconv(op)
    return MBConv(spec.cin, spec.cout, k, e, spec.stride, spec.act, spec.se_ratio, affine)


class MobileNetSupernet(Supernet):
    """All MBConv candidates of every layer; ``forward_path`` runs the active ones."""

    def __init__(self, space: MobileNetSpace) -> None:
        super().__init__(space)
        affine = space.bn_affine
        self.stem = conv_bn_act(space.input_shape[0], space.stem_channels, 3, space.stem_stride,
                                space.early_act, affine)
        if space.first_block_channels:
            ratio = space.se_ratio if space.se_mode == "all" else 0.0
            self.first_block: nn.Module = DepthwiseSeparable(
                space.stem_channels, space.first_block_channels, 1, space.early_act, ratio, affine)
        else:
            self.first_block = nn.Identity()
        self.layers = nn.ModuleList(
            ChoiceLayer({o: _candidate(o, spec, affine) for o in d.options})
            for spec, d in zip(space.layers, space.decisions)
        )
        for i in range(len(self.layers)):
            self.bind(i, f"layers.{i}")
        c = space.final_channels
        if space.last_channels:
            self.last_conv: nn.Module = conv_bn_act(c, space.last_channels, 1, 1, space.late_act, affine)
            c = space.last_channels
        else:
            self.last_conv = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        if space.head_channels:
            self.head: nn.Module = nn.Sequential(nn.Conv2d(c, space.head_channels, 1, bias=True),
                                                 make_act(space.late_act))
            c = space.head_channels
        else:
            self.head = nn.Identity()
        self.dropout = nn.Dropout(space.dropout)
        self.classifier = nn.Linear(c, space.num_classes)

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for layer in self.layers:
            x = layer(x)
        x = self.head(self.pool(self.last_conv(x)))
        return self.classifier(self.dropout(x.flatten(1)))

    def chain_layout(self) -> ChainLayout:
        """stem → first block → MBConv layers → last conv, pool, head conv, classifier (prefix sharing, NEAS)."""
        items: list[tuple[str, int | None]] = [("stem", None), ("first_block", None)]
        items += [(f"layers.{i}", i) for i in range(len(self.layers))]
        return ChainLayout(tuple(items), ("last_conv", "pool", "head", "dropout", "classifier"), _mobilenet_head)


def _mobilenet_head(mods: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    last_conv, pool, head, dropout, classifier = mods
    x = head(pool(last_conv(x)))
    return classifier(dropout(x.flatten(1)))
