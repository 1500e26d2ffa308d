"""Built-in search spaces, registered through the same hook as any plugin."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nascore.registry import hookimpl


class TinyChainConfig(BaseModel):
    """Options of the ``tiny_chain`` test-bed space (4 layers × {conv3, conv5, skip})."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    layers: int = Field(4, gt=0, description="number of choice layers")
    width: int = Field(8, gt=0, description="channels of the first half (doubled after)")


def _input_of(ctx: Any) -> tuple[tuple[int, int, int], int]:
    """The dataset's input shape and class count, when a run context has data."""
    data = getattr(ctx, "data", None) if ctx is not None else None
    if data is None:
        return (1, 28, 28), 10
    return tuple(data.input_shape), data.num_classes  # type: ignore[return-value]


def make_tiny_chain(cfg: TinyChainConfig, ctx: Any = None) -> Any:
    from nascore.builtin.tiny import TinyChainSpace

    shape, classes = _input_of(ctx)
    return TinyChainSpace(layers=cfg.layers, width=cfg.width, input_shape=shape, num_classes=classes)


@hookimpl
def register_search_spaces(register: Any) -> None:
    register("tiny_chain", make_tiny_chain, config=TinyChainConfig,
             summary="test bed: 4 layers × {conv3, conv5, skip} = 81 architectures")
