"""Hook implementations of nascore-abs: the ``abs_shrink`` selector and the ``abs-spos`` recipe.

The ``angle`` evaluator ABS scores with is shared with RLNAS and lives in the nascore core
(``nascore.builtin.angle``); the SPOS trainer and evolution come from nascore-spos and the core.
Nothing heavy is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


@hookimpl
def register_selectors(register: Any) -> None:
    from nascore_abs.shrink import AbsShrinkConfig, make_abs_shrink

    register("abs_shrink", make_abs_shrink, config=AbsShrinkConfig,
             summary="ABS: drop the operators with the smallest mean angle, train, repeat until the space is small")


@hookimpl
def register_recipes(register: Any) -> None:
    register("abs-spos", str(RECIPES / "abs-spos.yaml"),
             summary="ABS on mnist5k: supernet -> angle-based shrinking -> SPOS training + evolution on the shrunk space -> retrain")
    register("abs-imagenet", str(RECIPES / "abs-imagenet.yaml"),
             summary="ABS + SPOS at ImageNet scale: ShuffleNetV2 space at 224, angle shrinking to 1e6 archs, local root")
