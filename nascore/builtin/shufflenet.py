"""The SPOS ShuffleNetV2 block space (``shufflenet``).

As in megvii-model/SinglePathOneShot (``src/Supernet/network.py``, ``blocks.py``): a 3×3 stem conv
(optionally followed by a 3×3/2 max-pool), then 20 choice layers in stages of 4, 4, 8, 4; each
layer picks ``shuffle3``, ``shuffle5``, ``shuffle7`` (ShuffleNetV2 unit with a k×k depthwise conv)
or ``xception`` (three depthwise 3×3 + pointwise pairs). The first layer of a stage has stride 2
and a projection branch; the others split the channels in half and shuffle them. Then a 1×1 conv,
global average pool, dropout and a bias-free linear classifier. BatchNorm is ``affine=False`` as
in the SPOS code (configurable).

Channel search (SPOS's block + channel search): ``channel_scales`` (the paper's 0.2, 0.4, …, 1.6)
adds after each layer's op decision a :class:`~nascore.space.WidthDecision` ``s{s}_l{j}_mid``
whose options are that block's mid channels ``round(scale × oup/2)``; the main branch is then built
from slim layers at the largest scale (weights sliced per width, BN sliced and recalibrated per
candidate, or ``channel_bn: per_width``). Block outputs keep their width, as in the paper.

Defaults are small (stem 16, stages 24/48/96/192, last conv 256, stride-1 stem without max-pool)
for 28×28/32×32 CPU runs; :data:`SPOS_IMAGENET` lists the options of the paper's supernet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn

from nascore.errors import ConfigError
from nascore.space import ChainLayout, ChoiceLayer, Decision, SearchSpace, Supernet, WidthDecision, width_options

SPACE_OPTIONS = "shufflenet space options"

SHUFFLE_OPS = ("shuffle3", "shuffle5", "shuffle7", "xception")

#: Options of the SPOS ImageNet supernet (224×224 input).
SPOS_IMAGENET: dict[str, Any] = {
    "stem_channels": 16,
    "stem_stride": 2,
    "maxpool": False,
    "stage_depths": [4, 4, 8, 4],
    "stage_channels": [64, 160, 320, 640],
    "last_channels": 1024,
    "dropout": 0.1,
    "bn_affine": False,
}


def round4(v: float) -> int:
    """Channels rounded to a multiple of 4 (the shuffle splits them in halves of even size)."""
    return max(4, int(round(v / 4.0)) * 4)


def channel_shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SPOS's shuffle: its reshape-permute-reshape yields the even and the odd channels.

    Written as two strided slices: the same values without traced shape arithmetic, which keeps
    fvcore's trace of a child small.
    """
    return x[:, 0::2], x[:, 1::2]


def _bn(c: int, affine: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, affine=affine)


class ShuffleBlock(nn.Module):
    """SPOS ``ShuffleV2Block`` (``shuffle3/5/7``) or ``Shuffle_Xception`` (``xception``).

    ``inp`` is the channels the main branch eats (half of the block's input when stride is 1),
    ``oup`` the block's output channels.
    """

    def __init__(self, op: str, inp: int, oup: int, stride: int, affine: bool, *,
                 mid_widths: Sequence[int] | None = None, mid_source: int | None = None, bn: str = "slice") -> None:
        super().__init__()
        self.stride = stride
        mid = oup // 2
        outputs = oup - inp
        ksize = 3 if op == "xception" else int(op[len("shuffle"):])
        pad = ksize // 2
        if mid_widths is not None:  # channel search: the mid channels are a width decision (slim layers)
            self.branch_main = _slim_main(op, inp, outputs, mid_widths, mid_source, affine, stride, bn)
        elif op == "xception":
            self.branch_main = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), _bn(inp, affine),
                nn.Conv2d(inp, mid, 1, 1, 0, bias=False), _bn(mid, affine), nn.ReLU(),
                nn.Conv2d(mid, mid, 3, 1, 1, groups=mid, bias=False), _bn(mid, affine),
                nn.Conv2d(mid, mid, 1, 1, 0, bias=False), _bn(mid, affine), nn.ReLU(),
                nn.Conv2d(mid, mid, 3, 1, 1, groups=mid, bias=False), _bn(mid, affine),
                nn.Conv2d(mid, outputs, 1, 1, 0, bias=False), _bn(outputs, affine), nn.ReLU(),
            )
        else:
            self.branch_main = nn.Sequential(
                nn.Conv2d(inp, mid, 1, 1, 0, bias=False), _bn(mid, affine), nn.ReLU(),
                nn.Conv2d(mid, mid, ksize, stride, pad, groups=mid, bias=False), _bn(mid, affine),
                nn.Conv2d(mid, outputs, 1, 1, 0, bias=False), _bn(outputs, affine), nn.ReLU(),
            )
        if stride == 2:
            self.branch_proj: nn.Module | None = nn.Sequential(
                nn.Conv2d(inp, inp, ksize, 2, ksize // 2, groups=inp, bias=False), _bn(inp, affine),
                nn.Conv2d(inp, inp, 1, 1, 0, bias=False), _bn(inp, affine), nn.ReLU(),
            )
        else:
            self.branch_proj = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch_proj is None:
            x_proj, x = channel_shuffle(x)
            return torch.cat((x_proj, self.branch_main(x)), 1)
        return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)


def _slim_main(op: str, inp: int, outputs: int, mid_widths: Sequence[int], src: int | None, affine: bool,
               stride: int, bn: str) -> nn.Sequential:
    """The main branch with searched mid channels: slim 1x1/depthwise/1x1 at the largest mid width."""
    from nascore.width import SlimBatchNorm2d, SlimConv2d, SwitchableBatchNorm2d

    m = max(mid_widths)

    def sbn() -> nn.Module:
        if bn == "per_width":
            return SwitchableBatchNorm2d(mid_widths, source=src, affine=affine)  # type: ignore[arg-type]
        return SlimBatchNorm2d(m, source=src, affine=affine)

    if op == "xception":
        return nn.Sequential(
            nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), _bn(inp, affine),
            SlimConv2d(inp, m, 1, out_source=src), sbn(), nn.ReLU(),
            SlimConv2d(m, m, 3, 1, 1, depthwise=True, in_source=src), sbn(),
            SlimConv2d(m, m, 1, in_source=src, out_source=src), sbn(), nn.ReLU(),
            SlimConv2d(m, m, 3, 1, 1, depthwise=True, in_source=src), sbn(),
            SlimConv2d(m, outputs, 1, in_source=src), _bn(outputs, affine), nn.ReLU(),
        )
    k = int(op[len("shuffle"):])
    return nn.Sequential(
        SlimConv2d(inp, m, 1, out_source=src), sbn(), nn.ReLU(),
        SlimConv2d(m, m, k, stride, k // 2, depthwise=True, in_source=src), sbn(),
        SlimConv2d(m, outputs, 1, in_source=src), _bn(outputs, affine), nn.ReLU(),
    )


@attrs.frozen
class ShuffleLayerSpec:
    """Shape of one choice layer: main-branch input ``inp``, output ``oup``, stride."""

    stage: int
    index: int
    inp: int
    oup: int
    stride: int


class ShuffleNetSpace(SearchSpace):
    """SPOS block space (see module docstring); one decision per layer, 4 options each."""

    name = "shufflenet"

    def __init__(
        self,
        *,
        width_mult: float = 1.0,
        stem_channels: int = 16,
        stem_stride: int = 1,
        maxpool: bool = False,
        stage_depths: Sequence[int] = (4, 4, 8, 4),
        stage_channels: Sequence[int] = (24, 48, 96, 192),
        last_channels: int = 256,
        ops: Sequence[str] = SHUFFLE_OPS,
        dropout: float = 0.1,
        bn_affine: bool = False,
        channel_scales: Sequence[float] | None = None,
        channel_bn: str = "slice",
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
    ) -> None:
        if len(stage_depths) != len(stage_channels):
            raise ConfigError(["stage_depths and stage_channels must have the same length"], source=SPACE_OPTIONS)
        unknown = set(ops) - set(SHUFFLE_OPS)
        if unknown or not ops:
            raise ConfigError([f"ops must be a non-empty subset of {SHUFFLE_OPS}, got {list(ops)}"], source=SPACE_OPTIONS)
        self.width_mult = float(width_mult)
        self.stem_channels = int(stem_channels)
        self.stem_stride = int(stem_stride)
        self.maxpool = bool(maxpool)
        self.last_channels = round4(last_channels * width_mult) if width_mult != 1.0 else int(last_channels)
        self.dropout = float(dropout)
        self.bn_affine = bool(bn_affine)
        channels = [round4(c * width_mult) if width_mult != 1.0 else int(c) for c in stage_channels]
        prev = self.stem_channels
        for s, c in enumerate(channels):
            if c % 4 or c <= prev:
                raise ConfigError([
                    f"stage {s} has {c} channels: each stage needs a multiple of 4 that is larger than "
                    f"the previous stage's (or the stem's) {prev} channels"
                ], source=SPACE_OPTIONS)
            prev = c
        self.stage_channels = tuple(channels)
        if channel_scales is not None and (not channel_scales or any(float(c) <= 0 for c in channel_scales)):
            raise ConfigError([f"channel_scales must be positive, got {list(channel_scales)}"], source=SPACE_OPTIONS)
        if channel_bn not in ("slice", "per_width"):
            raise ConfigError([f"channel_bn must be 'slice' or 'per_width', got {channel_bn!r}"], source=SPACE_OPTIONS)
        self.channel_scales = None if channel_scales is None else tuple(float(c) for c in channel_scales)
        self.channel_bn = channel_bn
        layers: list[ShuffleLayerSpec] = []
        decisions: list[Decision] = []
        #: per layer, the index of its op decision and of its mid-width decision (None: no channel search)
        self.layer_decisions: list[tuple[int, int | None]] = []
        cin = self.stem_channels
        for s, (depth, cout) in enumerate(zip(stage_depths, channels)):
            for j in range(int(depth)):
                if j == 0:
                    layers.append(ShuffleLayerSpec(s, j, cin, cout, 2))
                else:
                    layers.append(ShuffleLayerSpec(s, j, cout // 2, cout, 1))
                decisions.append(Decision(f"s{s}_l{j}", tuple(ops)))
                if self.channel_scales is None:
                    self.layer_decisions.append((len(decisions) - 1, None))
                else:  # SPOS channel search: the block's mid channels, scale x (oup // 2)
                    decisions.append(WidthDecision(f"s{s}_l{j}_mid", width_options(cout // 2, self.channel_scales)))
                    self.layer_decisions.append((len(decisions) - 2, len(decisions) - 1))
            cin = cout
        self.layers: tuple[ShuffleLayerSpec, ...] = tuple(layers)
        self.final_channels = cin
        super().__init__(decisions, input_shape=input_shape, num_classes=num_classes)

    def build_supernet(self) -> "ShuffleNetSupernet":
        return ShuffleNetSupernet(self)


class ShuffleNetSupernet(Supernet):
    """Every candidate block of every layer; ``forward_path`` runs the active ones."""

    def __init__(self, space: ShuffleNetSpace) -> None:
        super().__init__(space)
        affine = space.bn_affine
        stem: list[nn.Module] = [
            nn.Conv2d(space.input_shape[0], space.stem_channels, 3, space.stem_stride, 1, bias=False),
            _bn(space.stem_channels, affine), nn.ReLU(),
        ]
        if space.maxpool:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        layers = []
        for spec, (op_i, w_i) in zip(space.layers, space.layer_decisions):
            widths = None if w_i is None else space.decisions[w_i].channels  # type: ignore[attr-defined]
            layers.append(ChoiceLayer({
                o: ShuffleBlock(o, spec.inp, spec.oup, spec.stride, affine, mid_widths=widths, mid_source=w_i,
                                bn=space.channel_bn)
                for o in space.decisions[op_i].options}))
        self.layers = nn.ModuleList(layers)
        for k, (op_i, _) in enumerate(space.layer_decisions):
            self.bind(op_i, f"layers.{k}")
        self.last_conv = nn.Sequential(
            nn.Conv2d(space.final_channels, space.last_channels, 1, 1, 0, bias=False),
            _bn(space.last_channels, affine), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(space.dropout)
        self.classifier = nn.Linear(space.last_channels, space.num_classes, bias=False)

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        x = self.pool(self.last_conv(x)).flatten(1)
        return self.classifier(self.dropout(x))

    def chain_layout(self) -> ChainLayout | None:
        """stem → choice layers → last conv, pool, dropout, classifier (prefix sharing, NEAS).

        ``None`` with channel search (a layer then depends on two decisions; paths run whole)."""
        if self.space.channel_scales is not None:
            return None
        items: list[tuple[str, int | None]] = [("stem", None)]
        items += [(f"layers.{i}", i) for i in range(len(self.layers))]
        return ChainLayout(tuple(items), ("last_conv", "pool", "dropout", "classifier"), _shufflenet_head)


def _shufflenet_head(mods: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    last_conv, pool, dropout, classifier = mods
    return classifier(dropout(pool(last_conv(x)).flatten(1)))
