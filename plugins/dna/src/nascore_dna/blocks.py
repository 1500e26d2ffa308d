"""Networks cut into blocks at stage boundaries: the student supernet and the teacher.

DNA supervises each block of the student on its own: block ``b`` gets the teacher's feature map at
its input and must reproduce the teacher's feature map at its output. Both networks are therefore
described the same way here — an ordered list of blocks, each a list of modules run in sequence —
and the teacher is cut where its feature shapes equal the student's block outputs.

Students (:func:`student_blocks`): ``tiny_chain`` (2 blocks: stem + first half of the layers;
the downsampling conv + second half), ``mobilenet`` (one block per stage; the stem belongs to the
first), and any supernet that defines ``dna_blocks() -> list[tuple[decision indices, modules]]``
and ``dna_head(x)``. The pooling/classifier head belongs to no block (DNA retrains it).
Children of these supernets (retrained or exported nascore models) are cut the same way, which is
how a nascore-trained teacher is cut.

Teachers from torchvision (:func:`torchvision_units`): resnet/resnext/wide_resnet (stem, layer1-4)
and every model with a ``features`` sequence (mobilenet_v2/v3, efficientnet, …), cut by shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from nascore.errors import NascoreError, PluginError


@attrs.define
class Blocks:
    """A network as blocks: ``units[b]`` run in order; ``decisions[b]`` the space decisions inside.

    ``head`` maps the last block's output to logits (students only; ``None`` for teachers).
    """

    units: list[list[nn.Module]]
    decisions: list[tuple[int, ...]]
    head: Callable[[torch.Tensor], torch.Tensor] | None = None
    names: list[str] = attrs.field(factory=list)

    def __len__(self) -> int:
        return len(self.units)

    def run(self, b: int, x: torch.Tensor) -> torch.Tensor:
        for m in self.units[b]:
            x = m(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in range(len(self.units)):
            x = self.run(b, x)
        if self.head is None:
            return x
        return self.head(x)

    def parameters(self, b: int) -> list[nn.Parameter]:
        """Block ``b``'s parameters, each once."""
        seen: dict[int, nn.Parameter] = {}
        for m in self.units[b]:
            for p in m.parameters():
                seen.setdefault(id(p), p)
        return list(seen.values())

    def bn_layers(self, b: int) -> list[nn.modules.batchnorm._BatchNorm]:
        out: dict[int, nn.modules.batchnorm._BatchNorm] = {}
        for m in self.units[b]:
            for mod in m.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    out.setdefault(id(mod), mod)
        return list(out.values())


def _space_kind(net: nn.Module) -> str | None:
    space = getattr(net, "space", None)
    if space is None:
        return None
    from nascore.builtin.tiny import TinyChainSpace

    if isinstance(space, TinyChainSpace):
        return "tiny_chain"
    try:
        from nascore.builtin.mobilenet import MobileNetSpace
    except ImportError:  # pragma: no cover - older cores
        MobileNetSpace = None  # type: ignore[assignment]  # noqa: N806
    if MobileNetSpace is not None and isinstance(space, MobileNetSpace):
        return "mobilenet"
    return None


def student_blocks(net: nn.Module) -> Blocks:
    """Cut a supernet (or one of its children) into DNA blocks; see module docstring."""
    if callable(getattr(net, "dna_blocks", None)):
        parts = net.dna_blocks()
        return Blocks([list(mods) for _, mods in parts], [tuple(d) for d, _ in parts], getattr(net, "dna_head", None),
                      [f"block{b}" for b in range(len(parts))])
    kind = _space_kind(net)
    if kind == "tiny_chain":
        layers = list(net.layers)
        half = len(layers) // 2
        units = [[net.stem, *layers[:half]], [net.down, *layers[half:]]]
        decisions = [tuple(range(half)), tuple(range(half, len(layers)))]
        head = lambda x: net.head(x.mean((2, 3)))  # noqa: E731
        return Blocks(units, decisions, head, ["stem+layers[:half]", "down+layers[half:]"])
    if kind == "mobilenet":
        space = net.space
        stages = sorted({spec.stage for spec in space.layers})
        units: list[list[nn.Module]] = []
        decisions: list[tuple[int, ...]] = []
        for s in stages:
            idx = tuple(i for i, spec in enumerate(space.layers) if spec.stage == s)
            mods = [net.layers[i] for i in idx]
            if s == stages[0]:
                mods = [net.stem, net.first_block, *mods]
            units.append(mods)
            decisions.append(idx)
        head = lambda x: net.classifier(net.dropout(net.head(net.pool(net.last_conv(x))).flatten(1)))  # noqa: E731
        return Blocks(units, decisions, head, [f"stage{s}" for s in stages])
    space = getattr(net, "space", None)
    raise NascoreError(
        f"DNA needs a block-decomposed space; {getattr(space, 'name', type(net).__name__)!r} has no block structure",
        hint="use tiny_chain or mobilenet, or give the supernet dna_blocks() and dna_head(x) (see the nascore-dna README)",
    )


@torch.no_grad()
def check_blocks(net: nn.Module, blocks: Blocks, input_shape: Sequence[int]) -> None:
    """The blocks + head must compute exactly the supernet's forward (guards against a space whose
    structure changed under the cut)."""
    was = net.training
    net.eval()
    try:
        x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(_device_of(net))
        ref = net(x)
        got = blocks.forward(x)
    finally:
        net.train(was)
    if ref.shape != got.shape or not torch.allclose(ref, got, atol=1e-5, rtol=1e-4):
        raise PluginError(f"the DNA block cut of {type(net).__name__} does not reproduce its forward pass",
                          hint="the space's structure changed; update nascore_dna.blocks.student_blocks")


def _device_of(net: nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def block_output_shapes(blocks: Blocks, input_shape: Sequence[int], device: Any = "cpu",
                        prepare: nn.Module | None = None) -> list[tuple[int, ...]]:
    """(C, H, W) after each block for one input of ``input_shape`` (modules run in eval mode)."""
    mods = [m for unit in blocks.units for m in unit]
    was = [m.training for m in mods]
    for m in mods:
        m.eval()
    try:
        x = torch.zeros(1, *input_shape, device=device)
        if prepare is not None:
            x = prepare(x)
        shapes = []
        for b in range(len(blocks)):
            x = blocks.run(b, x)
            shapes.append(tuple(x.shape[1:]))
    finally:
        for m, w in zip(mods, was):
            m.train(w)
    return shapes


# -- torchvision teachers -----------------------------------------------------------------------------
def torchvision_units(model: nn.Module, name: str) -> tuple[list[nn.Module], list[str]]:
    """The sequence of stage-level modules of a torchvision classifier (its body, no head)."""
    if all(hasattr(model, a) for a in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer4")):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        units = [stem] + [getattr(model, f"layer{i}") for i in range(1, 5)]
        return units, ["stem", "layer1", "layer2", "layer3", "layer4"]
    feats = getattr(model, "features", None)
    if isinstance(feats, nn.Sequential):
        return list(feats.children()), [f"features.{i}" for i in range(len(feats))]
    raise NascoreError(
        f"cannot cut torchvision:{name} into blocks",
        hint="supported: resnet*/resnext*/wide_resnet* (stem, layer1-4) and models with a `features` sequence "
        "(mobilenet_v2, mobilenet_v3_*, efficientnet_*); or use a nascore-trained teacher",
    )


@torch.no_grad()
def unit_shapes(units: Sequence[nn.Module], input_shape: Sequence[int], prepare: nn.Module | None,
                device: Any = "cpu") -> list[tuple[int, ...]]:
    x = torch.zeros(1, *input_shape, device=device)
    if prepare is not None:
        x = prepare(x)
    out = []
    for u in units:
        was = u.training
        u.eval()
        try:
            x = u(x)
        finally:
            u.train(was)
        out.append(tuple(x.shape[1:]))
    return out


def cut_by_shape(shapes: Sequence[tuple[int, ...]], targets: Sequence[tuple[int, ...]],
                 cuts: Sequence[int] | None = None, names: Sequence[str] | None = None,
                 what: str = "teacher") -> list[int]:
    """Unit index after which each block ends, so that block ``b`` outputs ``targets[b]``.

    Default: the last unit of the first run of units (after the previous cut) whose output shape is
    ``targets[b]`` — i.e. the stage boundary. ``cuts`` gives them explicitly (then only checked).
    """
    names = list(names) if names is not None else [str(i) for i in range(len(shapes))]
    listing = ", ".join(f"{n}:{tuple(s)}" for n, s in zip(names, shapes))
    if cuts is not None:
        if len(cuts) != len(targets):
            raise NascoreError(f"teacher_cuts has {len(cuts)} entries, the student has {len(targets)} blocks",
                               hint=f"give one unit index per block; {what} units: {listing}")
        out = list(cuts)
        if any(b <= a for a, b in zip(out, out[1:])) or out[0] < 0 or out[-1] >= len(shapes):
            raise NascoreError(f"teacher_cuts {out} must increase within 0..{len(shapes) - 1}", hint=f"{what} units: {listing}")
    else:
        out = []
        start = 0
        for b, target in enumerate(targets):
            i = next((j for j in range(start, len(shapes)) if tuple(shapes[j]) == tuple(target)), None)
            if i is None:
                raise NascoreError(
                    f"the {what} has no feature of shape {tuple(target)} (student block {b}'s output)"
                    + (f" after unit {names[start - 1]}" if start else ""),
                    hint=f"{what} units and their output shapes: {listing}; make the student's stage widths/strides "
                    "match the teacher's, or give teacher_cuts",
                )
            while i + 1 < len(shapes) and tuple(shapes[i + 1]) == tuple(target):
                i += 1
            out.append(i)
            start = i + 1
    for b, (i, target) in enumerate(zip(out, targets)):
        if tuple(shapes[i]) != tuple(target):
            raise NascoreError(
                f"{what} block {b} ends at unit {names[i]} with shape {tuple(shapes[i])}, "
                f"but student block {b} outputs {tuple(target)}",
                hint=f"{what} units: {listing}",
            )
    return out


def group_units(units: Sequence[nn.Module], cuts: Sequence[int]) -> list[list[nn.Module]]:
    """Split ``units`` after each index in ``cuts`` (units after the last cut are dropped: the head side)."""
    out, start = [], 0
    for c in cuts:
        out.append(list(units[start : c + 1]))
        start = c + 1
    return out
