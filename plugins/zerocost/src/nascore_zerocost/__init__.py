"""nascore-zerocost: zero-cost proxies (synflow, snip, grad_norm, fisher, jacov, NASWOT) as evaluators.

:func:`score_all` scores architectures with several proxies outside a search (``nascore rank``,
benchmarks); :func:`build` makes one proxy evaluator by name through the registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__version__ = "0.1.0"

#: The proxies this plugin registers, in the order ``score_all`` uses by default.
PROXIES = ("synflow", "snip", "grad_norm", "fisher", "jacov", "naswot")


def build(name: str, ctx: Any, registry: Any = None, **options: Any) -> Any:
    """The evaluator ``name`` built through the registry with ``options`` (validated by its config).

    ``registry`` defaults to ``ctx.registry`` (a :class:`nascore.pipeline.context.RunContext` has one), else the
    installed plugins (:func:`nascore.registry.get_registry`).
    """
    if registry is None:
        registry = getattr(ctx, "registry", None)
    if registry is None:
        from nascore.registry import get_registry

        registry = get_registry()
    return registry.get("evaluator", name).build(options, ctx)


def score_all(
    archs: Sequence[Any],
    ctx: Any,
    names: Iterable[str] = PROXIES,
    options: dict[str, dict[str, Any]] | None = None,
    registry: Any = None,
) -> dict[str, list[float]]:
    """``{proxy name: [score of each arch]}`` (higher is better for every proxy).

    ``options`` maps a proxy name to its options (e.g. ``{"naswot": {"seed": 1}}``); ``ctx`` is a
    run context with a space, data and device (e.g. ``nascore.testing.make_context(config)``).
    """
    options = options or {}
    out: dict[str, list[float]] = {}
    for name in names:
        ev = build(name, ctx, registry, **options.get(name, {}))
        out[name] = [float(m[ev.metric]) for m in ev.score(list(archs), ctx)]
    return out
