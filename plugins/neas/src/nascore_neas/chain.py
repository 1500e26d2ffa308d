"""How a chain supernet splits into modules, choice layers and a head: what an ensemble needs.

A NEAS ensemble runs the first part of a chain once (the shared *trunk*), then K copies of the rest
(the member *branches*), each ending in its own head. To cut any chain supernet that way without
knowing its code, the ensemble asks for its :class:`ChainLayout`: the modules its ``forward_path``
runs, in order, each either a fixed module or the :class:`~nascore.space.ChoiceLayer` of a decision,
then the head modules (everything after the last layer; copied once per member) and the function
that applies them.

A supernet provides its layout by defining ``chain_layout() -> ChainLayout`` (the core's
:class:`nascore.space.ChainLayout`, which the ``accuracy`` evaluator's prefix sharing reads too); the
built-in chain spaces (``tiny_chain``, ``tiny_matched``, ``mobilenet``, ``shufflenet``) define it.
"""

from __future__ import annotations

from torch import nn

from nascore.errors import NascoreError
from nascore.space import ChainLayout, HeadFn

__all__ = ["ChainLayout", "HeadFn", "chain_layout"]


def chain_layout(net: nn.Module, n_decisions: int, space_name: str = "?") -> ChainLayout:
    """The layout of ``net`` (its own ``chain_layout()``), checked; an error for a non-chain supernet."""
    own = getattr(net, "chain_layout", None)
    layout = own() if callable(own) else None
    if layout is not None:
        return layout.check(n_decisions, space_name)
    raise NascoreError(
        f"space {space_name!r} ({type(net).__name__}) is not a chain space an ensemble can split",
        hint="use a chain space (tiny_chain, mobilenet, shufflenet) as the ensemble's base, or give its supernet a "
        "chain_layout() method (see nascore_neas.chain.ChainLayout)",
    )
