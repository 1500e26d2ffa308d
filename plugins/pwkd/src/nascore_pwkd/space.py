"""``slimmable_chain``: a width search space whose supernet is a slimmable network.

One decision, ``width``, picks a width multiplier ``w`` (default 0.25, 0.5, 0.75, 1.0; option names
``w25``, ``w50``, ``w75``, ``w100``). Every width
is a sub-network of the same depth: a 3×3 stem conv (stride 2), ``layers`` 3×3 conv-BN-ReLU layers
with a stride-2 conv doubling the channels half-way, global pooling and a linear classifier — the
``tiny_chain`` shape. Sub-network ``w`` uses the *first* ``round(w·C)`` channels of every layer, so
all widths share one set of weights (Yu et al., "Slimmable Neural Networks"), while each width keeps
its own BatchNorm layers (the statistics of a channel differ with the width around it).

It is built on the core's width decisions (:mod:`nascore.width`): the decision is a
:class:`~nascore.space.WidthDecision` whose options ``w25``… label the first half's channels ``k``;
the layers after the downsampling run ``2k`` (``in_scale``/``out_scale``/``scale`` 2). Each BN is a
:class:`~nascore.width.SwitchableBatchNorm2d` (one BN per width, ``norms.<i>.bns.<w>``), whose BNs
are the decision's per-option parameters: ``active_parameters`` of a width are the shared
convolutions plus that width's BNs, and grad clearing clears the other widths' BNs.

``child(arch)`` is the core's: a genuinely narrow standalone network (plain convs holding the sliced
weights, that width's BNs), so its MACs and parameters — counted by fvcore — are the width's own;
the core's cost table (one exact width monomial per layer) agrees with fvcore on every width. A
fresh child (``inherit=False``, a retrain from scratch) draws its weights as a narrow network built
from scratch does. Supernets and children saved with the keys of the space's own slicing code
(``widths.candidates.<w>.<i>.*``, ``stem.conv.weight``) still load: the old keys are renamed on load.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from nascore.arch import Architecture
from nascore.errors import ArchitectureError, NascoreError
from nascore.space import SearchSpace, Supernet, WidthDecision
from nascore.width import SlimConv2d, SlimLinear, SwitchableBatchNorm2d


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

    @model_validator(mode="after")
    def _distinct_channels(self) -> "SlimmableChainConfig":
        counts = [channels(w, self.width) for w in self.widths]
        if len(set(counts)) != len(counts):
            raise ValueError(f"widths {list(self.widths)} of width {self.width} round to the channel counts {counts}, "
                             "which repeat: raise `width` or drop a width")
        return self


def width_label(w: float) -> str:
    """The option name of width ``w``: its percentage, ``w25`` for 0.25 (``w12_5`` for 0.125)."""
    return "w" + f"{w * 100:g}".replace(".", "_")


def channels(w: float, c: int) -> int:
    """Channels of the first half at width ``w`` (the second half has twice as many)."""
    return max(1, int(round(w * c)))


class SlimmableChainSpace(SearchSpace):
    name = "slimmable_chain"

    def __init__(self, widths: Sequence[float] = (0.25, 0.5, 0.75, 1.0), width: int = 16, layers: int = 4,
                 input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> None:
        self.widths = tuple(float(w) for w in widths)
        self.width = int(width)
        self.layers = int(layers)
        labels = tuple(width_label(w) for w in self.widths)
        counts = [channels(w, self.width) for w in self.widths]
        if len(set(counts)) != len(counts):
            raise NascoreError(f"slimmable_chain: widths {list(self.widths)} of width {self.width} round to the "
                               f"channel counts {counts}, which repeat", hint="raise `width` or drop a width")
        super().__init__([WidthDecision("width", labels, channels=tuple(counts))],
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


_OLD_BN = re.compile(r"widths\.candidates\.([^.]+)\.(\d+)\.(.+)")
_OLD_CONV = re.compile(r"(stem|down|layers\.\d+)\.conv\.(.+)")


def _rename_old_keys(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """Load supernets and children saved before ``slimmable_chain`` moved onto :mod:`nascore.width`: their
    BNs were ``widths.candidates.<w>.<i>.*`` (now ``norms.<i>.bns.<w>.*``; a child's ``norms.<i>.*``), their
    convs ``stem.conv.*`` (now ``stem.*``)."""
    child = getattr(module, "is_child", False)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        if m := _OLD_BN.fullmatch(rest):
            new = f"norms.{m[2]}.{m[3]}" if child else f"norms.{m[2]}.bns.{m[1]}.{m[3]}"
            state_dict[prefix + new] = state_dict.pop(key)
        elif m := _OLD_CONV.fullmatch(rest):
            state_dict[f"{prefix}{m[1]}.{m[2]}"] = state_dict.pop(key)


class SlimmableChainSupernet(Supernet):
    """Shared slim convs (the first ``k`` / ``2k`` channels run), one BN per width per layer."""

    def __init__(self, space: SlimmableChainSpace) -> None:
        super().__init__(space)
        decision: WidthDecision = space.decisions[0]  # type: ignore[assignment]
        c, n = decision.max_channels, space.layers
        self.half = n // 2
        cin = space.input_shape[0]

        def scale(i: int) -> int:  # layer i runs k channels before the downsampling, 2k after
            return 1 if i < self.half else 2

        self.stem = SlimConv2d(cin, c, 3, 2, 1, out_source=0)
        self.layers = nn.ModuleList(SlimConv2d(scale(i) * c, scale(i) * c, 3, 1, 1, in_source=0, out_source=0,
                                               in_scale=scale(i), out_scale=scale(i)) for i in range(n))
        self.down = SlimConv2d(c, 2 * c, 3, 2, 1, in_source=0, out_source=0, out_scale=2)
        self.classifier = SlimLinear(2 * c, space.num_classes, in_source=0, in_scale=2)

        def bn(s: int) -> SwitchableBatchNorm2d:
            return SwitchableBatchNorm2d(decision.channels, labels=decision.options, source=0, scale=s)

        # order: stem, layers..., down
        self.norms = nn.ModuleList([bn(1)] + [bn(scale(i)) for i in range(n)] + [bn(2)])
        self.register_load_state_dict_pre_hook(_rename_old_keys)

    def classifier_module(self) -> nn.Module:
        return self.classifier

    def child(self, arch: Architecture, inherit: bool = True) -> nn.Module:
        """The core's plain narrow child; a fresh one (``inherit=False``) draws its weights as a narrow
        network built from scratch does (stem, layers, down, classifier), not after the throwaway
        draws of building the plain layers, so a seed gives the student the same start as ever."""
        if inherit:
            return super().child(arch)
        with torch.random.fork_rng(devices=[]):
            child = super().child(arch)
        Supernet.reset_parameters(child)
        return child

    def forward_path(self, x: torch.Tensor) -> torch.Tensor:
        norms = self.norms
        h = F.relu(norms[0](self.stem(x)))
        for i, conv in enumerate(self.layers):
            if i == self.half:
                h = F.relu(norms[-1](self.down(h)))
            h = F.relu(norms[i + 1](conv(h)))
        return self.classifier(h.mean((2, 3)))
