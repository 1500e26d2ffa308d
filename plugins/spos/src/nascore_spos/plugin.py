"""Hook implementations of nascore-spos: the ``spos`` trainer and the ``spos`` recipe.

The evaluator (``accuracy``) and the selectors (``evolution``, ``random``) SPOS uses are generic and
live in the nascore core; this plugin adds only what is SPOS's own. Nothing heavy is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


@hookimpl
def register_trainers(register: Any) -> None:
    from nascore_spos.trainer import SposConfig, SposTrainer

    register("spos", SposTrainer, config=SposConfig,
             summary="SPOS single-path training; samplers uniform | flops_binned | fair (FairNAS)")


@hookimpl
def register_recipes(register: Any) -> None:
    register("spos", str(RECIPES / "spos.yaml"),
             summary="SPOS on mnist5k: supernet (shufflenet space) -> evolution under a MACs limit -> export -> retrain")
    register("spos-testbed", str(RECIPES / "spos-testbed.yaml"),
             summary="SPOS on the cost-matched test bed tiny_matched (rank it: nascore rank tiny_matched --run DIR)")
