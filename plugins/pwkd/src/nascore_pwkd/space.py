"""``slimmable_chain``: a width search space whose supernet is a slimmable network.

One decision, ``width``, picks a width multiplier ``w`` (default 0.25, 0.5, 0.75, 1.0; option names
``w25``, ``w50``, ``w75``, ``w100``). Every width
is a sub-network of the same depth: a 3×3 stem conv (stride 2), ``layers`` 3×3 conv-BN-ReLU layers
with a stride-2 conv doubling the channels half-way, global pooling and a linear classifier — the
``tiny_chain`` shape. Sub-network ``w`` uses the *first* ``round(w·C)`` channels of every layer, so
all widths share one set of weights (Yu et al., "Slimmable Neural Networks"), while each width keeps
its own BatchNorm layers (the statistics of a channel differ with the width around it). The
per-width BNs are the candidates of the decision, so ``active_parameters`` of a width are the
shared convolutions plus that width's BNs.

``child(arch)`` is a genuinely narrow standalone network (plain convs holding the sliced weights),
so its MACs and parameters — counted by fvcore — are the width's own. The cost table therefore has
one exact entry per width (the space overrides :meth:`cost_table`; a single decision is additive
by construction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from nascore.arch import Architecture
from nascore.errors import ArchitectureError
from nascore.space import ChoiceLayer, Decision, SearchSpace, Supernet


class SlimmableChainConfig(BaseModel):
    """Options of the ``slimmable_chain`` width space."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    widths: tuple[float, ...] = Field((0.25, 0.5, 0.75, 1.0), min_length=1,
                                      description="width multipliers, increasing, in (0, 1]")
    width: int = Field(16, gt=0, description="channels of the first half at width 1.0 (doubled after the downsampling)")
    layers: int = Field(4, gt=0, description="3x3 conv layers after the stem")

    @field_validator("widths")
    @classmethod
    def _increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < w <= 1 for w in v):
            raise ValueError("width multipliers must be in (0, 1]")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("width multipliers must be strictly increasing (partial to whole)")
        return v


def width_label(w: float) -> str:
    """The option name of width ``w``: its percentage, ``w25`` for 0.25 (``w12_5`` for 0.125)."""
    return "w" + f"{w * 100:g}".replace(".", "_")


def channels(w: float, c: int) -> int:
    """Channels of the first half at width ``w`` (the second half has twice as many)."""
    return max(1, int(round(w * c)))


class SlimConv(nn.Module):
    """A conv whose forward uses the first ``cout`` filters over the input's channels."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)

    def forward(self, x: torch.Tensor, cout: int) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, c.weight[:cout, : x.shape[1]], None, c.stride, c.padding)


class SlimLinear(nn.Linear):
    """A linear layer reading only the first ``x.shape[1]`` input features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)


class SlimmableChainSpace(SearchSpace):
    name = "slimmable_chain"

    def __init__(self, widths: Sequence[float] = (0.25, 0.5, 0.75, 1.0), width: int = 16, layers: int = 4,
                 input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> None:
        self.widths = tuple(float(w) for w in widths)
        self.width = int(width)
        self.layers = int(layers)
        super().__init__([Decision("width", tuple(width_label(w) for w in self.widths))],
                         input_shape=input_shape, num_classes=num_classes)

    def multiplier(self, arch: Architecture) -> float:
        opt = arch.ops[0]
        if not isinstance(opt, str):
            raise ArchitectureError("slimmable_chain takes one width per architecture, not a set")
        return self.widths[self.decisions[0].options.index(opt)]

    def uniform_archs(self) -> list[Architecture]:
        """The allowed widths, partial to whole (what the sandwich trainer and PWKD iterate)."""
        return [Architecture([o]) for o in self.allowed[0]]

    def build_supernet(self) -> "SlimmableChainSupernet":
        return SlimmableChainSupernet(self)

    def cost_table(self, input_shape: Sequence[int] | None = None) -> Any:
        """Exact per-width MACs/params of the narrow children (one fvcore trace for all widths)."""
        from nascore.cost import CostTable, count_params, fvcore_macs_many

        shape = tuple(int(v) for v in (input_shape or self.input_shape))
        key = (shape,)
        if key not in self._cost_tables:
            net = self.build_supernet()
            archs = [Architecture([o]) for o in self.decisions[0].options]
            children = [net.child(a) for a in archs]
            macs = fvcore_macs_many(children, shape)
            table_m = {a.ops[0]: m for a, m in zip(archs, macs)}
            table_p = {a.ops[0]: count_params(c) for a, c in zip(archs, children)}
            self._cost_tables[key] = CostTable(shape, 0, 0, (table_m,), (table_p,))
        return self._cost_tables[key]


class SlimmableChainSupernet(Supernet):
    """Shared convs sliced per width, one BN set per width (the decision's candidates)."""

    def __init__(self, space: SlimmableChainSpace) -> None:
        super().__init__(space)
        c, n = space.width, space.layers
        self.half = n // 2
        cin = space.input_shape[0]
        self.stem = SlimConv(cin, c, 3, 2)
        self.layers = nn.ModuleList(SlimConv(c if i < self.half else 2 * c, c if i < self.half else 2 * c)
                                    for i in range(n))
        self.down = SlimConv(c, 2 * c, 3, 2)
        self.classifier = SlimLinear(2 * c, space.num_classes)
        bns = {}
        for label, w in zip(space.decisions[0].options, space.widths):
            k = channels(w, c)
            # order: stem, layers..., down
            bns[label] = nn.ModuleList([nn.BatchNorm2d(k)] + [nn.BatchNorm2d(k if i < self.half else 2 * k)
                                                              for i in range(n)] + [nn.BatchNorm2d(2 * k)])
        self.widths = ChoiceLayer(bns)
        self.bind(0, "widths")
        self._channels = {label: channels(w, c) for label, w in zip(space.decisions[0].options, space.widths)}

    def classifier_module(self) -> nn.Module:
        return self.classifier

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        label = self.widths.active
        if not isinstance(label, str):
            raise ArchitectureError("slimmable_chain runs one width at a time, not a set of widths")
        k = self._channels[label]
        bns = self.widths.candidates[label]
        h = F.relu(bns[0](self.stem(x, k)))
        for i, conv in enumerate(self.layers):
            if i == self.half:
                h = F.relu(bns[-1](self.down(h, 2 * k)))
            h = F.relu(bns[i + 1](conv(h, k if i < self.half else 2 * k)))
        return self.classifier(h.mean((2, 3)))

    def child(self, arch: Architecture, inherit: bool = True) -> nn.Module:
        """A narrow standalone network of width ``arch`` (sliced weights, that width's BNs)."""
        space: SlimmableChainSpace = self.space  # type: ignore[assignment]
        space.check(arch)
        label = arch.ops[0]
        k = self._channels[label]
        narrow_space = SlimmableChainSpace(widths=(1.0,), width=k, layers=space.layers,
                                           input_shape=space.input_shape, num_classes=space.num_classes)
        child = SlimmableChainSupernet(narrow_space).to(self.classifier.weight.device)
        if inherit:
            with torch.no_grad():
                for dst, src in zip([child.stem, *child.layers, child.down], [self.stem, *self.layers, self.down]):
                    w = dst.conv.weight
                    dst.conv.weight.copy_(src.conv.weight[: w.shape[0], : w.shape[1]])
                child.classifier.weight.copy_(self.classifier.weight[:, : child.classifier.weight.shape[1]])
                child.classifier.bias.copy_(self.classifier.bias)
                child.widths.candidates[width_label(1.0)].load_state_dict(self.widths.candidates[label].state_dict())
        child.space = space
        child.is_child = True
        child._active = arch
        child.train(self.training)
        return child
