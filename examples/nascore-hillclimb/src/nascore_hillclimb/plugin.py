"""Hook implementations: one function per role this plugin adds to (here: selectors)."""

from __future__ import annotations

from typing import Any

from nascore import hookimpl


@hookimpl
def register_selectors(register: Any) -> None:
    # Import inside the hook so that `nascore plugins` stays fast.
    from nascore_hillclimb.selector import HillClimb, HillClimbConfig

    register("hillclimb", HillClimb, config=HillClimbConfig,
             summary="first-improvement hill climbing from random feasible starts")
