"""Hook implementations of nascore-rlnas: the ``rlnas_search`` selector and the ``rlnas`` recipe.

RLNAS is a composition: random labels are a data option of the core (``data: {random_labels:
true}``), the supernet trainer is SPOS's (nascore-spos), the score is the core's ``angle`` evaluator
(shared with ABS) and the search is the core's ``evolution``. What RLNAS adds is the guarantee that
the search reads no labelled data, which ``rlnas_search`` enforces. Nothing heavy is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


@hookimpl
def register_selectors(register: Any) -> None:
    from nascore_rlnas.search import RlnasSearchConfig, make_rlnas_search

    register("rlnas_search", make_rlnas_search, config=RlnasSearchConfig,
             summary="RLNAS: run a selector (evolution) that must read no labelled data; fails loudly if it does")


@hookimpl
def register_recipes(register: Any) -> None:
    register("rlnas", str(RECIPES / "rlnas.yaml"),
             summary="RLNAS on mnist5k: SPOS supernet on random labels -> evolution by angle (no labels read) -> retrain on real labels")
    register("rlnas-imagenet", str(RECIPES / "rlnas-imagenet.yaml"),
             summary="RLNAS at ImageNet scale: SPOS ShuffleNetV2 space at 224, random labels, evolution by angle, local root")
