"""Hook implementations of nascore-zerocost: the proxy evaluators and the ``zerocost`` recipe.

Nothing heavy is imported at load time; the evaluators module is imported when the hook runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


@hookimpl
def register_evaluators(register: Any) -> None:
    from nascore_zerocost.evaluators import EVALUATORS

    for name, (factory, config, summary) in EVALUATORS.items():
        register(name, factory, config=config, summary=summary)


@hookimpl
def register_recipes(register: Any) -> None:
    register("zerocost", str(RECIPES / "zerocost.yaml"),
             summary="random search scored by NASWOT on the cost-matched tiny_matched space (no supernet training) -> retrain")
