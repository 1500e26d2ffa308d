"""How a chain supernet splits into modules, choice layers and a head: what an ensemble needs.

A NEAS ensemble runs the first part of a chain once (the shared *trunk*), then K copies of the rest
(the member *branches*), each ending in its own head. To cut any chain supernet that way without
knowing its code, the ensemble asks for its :class:`ChainLayout`: the modules its ``forward_path``
runs, in order, each either a fixed module or the :class:`~nascore.space.ChoiceLayer` of a decision,
then the head modules (everything after the last layer; copied once per member) and the function
that applies them.

A supernet provides its layout by defining ``chain_layout() -> ChainLayout``; the two built-in chain
spaces (``tiny_chain`` and ``mobilenet``) are described here, so they need no change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import torch
from torch import nn

from nascore.errors import NascoreError

HeadFn = Callable[[Sequence[nn.Module], torch.Tensor], torch.Tensor]


@attrs.frozen
class ChainLayout:
    """The forward order of a chain supernet.

    ``items`` are ``(module path, decision index)`` in forward order; the index is ``None`` for a
    fixed module. ``head`` are the module paths applied after the last item by ``head_fn(modules,
    x)`` (pooling and flattening live in ``head_fn``). Every decision appears exactly once, in
    increasing order.
    """

    items: tuple[tuple[str, int | None], ...]
    head: tuple[str, ...]
    head_fn: HeadFn

    def split_position(self, split: int) -> int:
        """Index of the first item of the branches when ``split`` layers are shared.

        The trunk is every item before the choice layer of decision ``split`` (so fixed modules
        between two shared layers, or right after the last shared one, stay in the trunk); with
        every layer shared the trunk is all items and the branches are the heads alone.
        """
        for pos, (_, dec) in enumerate(self.items):
            if dec == split:
                return pos
        return len(self.items)

    def check(self, n_decisions: int, where: str) -> "ChainLayout":
        decs = [d for _, d in self.items if d is not None]
        if decs != list(range(n_decisions)):
            raise NascoreError(
                f"the chain layout of {where} lists decisions {decs}, expected 0..{n_decisions - 1} in order",
                hint="chain_layout() must name every choice layer once, in forward order",
            )
        return self


def _tiny_head(mods: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    return mods[0](x.mean((2, 3)))


def tiny_chain_layout(net: nn.Module) -> ChainLayout:
    """``tiny_chain``: stem → layers (``down`` before the second half) → mean pool → linear."""
    n = len(net.layers)  # type: ignore[arg-type]
    items: list[tuple[str, int | None]] = [("stem", None)]
    for i in range(n):
        if i == n // 2:
            items.append(("down", None))
        items.append((f"layers.{i}", i))
    return ChainLayout(tuple(items), ("head",), _tiny_head)


def _mobilenet_head(mods: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    last_conv, pool, head, dropout, classifier = mods
    x = head(pool(last_conv(x)))
    return classifier(dropout(x.flatten(1)))


def mobilenet_layout(net: nn.Module) -> ChainLayout:
    """``mobilenet``: stem → first block → MBConv layers → last conv, pool, head conv, classifier."""
    items: list[tuple[str, int | None]] = [("stem", None), ("first_block", None)]
    items += [(f"layers.{i}", i) for i in range(len(net.layers))]  # type: ignore[arg-type]
    return ChainLayout(tuple(items), ("last_conv", "pool", "head", "dropout", "classifier"), _mobilenet_head)


def _builtin_layouts() -> list[tuple[type, Callable[[nn.Module], ChainLayout]]]:
    out: list[tuple[type, Callable[[nn.Module], ChainLayout]]] = []
    try:
        from nascore.builtin.tiny import TinyChainSupernet

        out.append((TinyChainSupernet, tiny_chain_layout))
    except ImportError:  # pragma: no cover - the core always ships tiny_chain
        pass
    try:
        from nascore.builtin.mobilenet import MobileNetSupernet

        out.append((MobileNetSupernet, mobilenet_layout))
    except ImportError:  # pragma: no cover - older cores without the mobilenet space
        pass
    return out


def chain_layout(net: nn.Module, n_decisions: int, space_name: str = "?") -> ChainLayout:
    """The layout of ``net``: its own ``chain_layout()``, or the built-in one for its class."""
    own = getattr(net, "chain_layout", None)
    if callable(own):
        return own().check(n_decisions, space_name)
    for cls, fn in _builtin_layouts():
        if isinstance(net, cls):
            return fn(net).check(n_decisions, space_name)
    raise NascoreError(
        f"space {space_name!r} ({type(net).__name__}) is not a chain space an ensemble can split",
        hint="use a chain space (tiny_chain, mobilenet) as the ensemble's base, or give its supernet a "
        "chain_layout() method (see nascore_neas.chain.ChainLayout)",
    )
