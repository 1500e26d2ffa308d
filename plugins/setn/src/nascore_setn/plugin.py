"""Hook implementations of nascore-setn: ``setn`` trainer, ``setn`` selector, ``setn_alpha`` evaluator, recipe.

Components are imported inside the hooks, so importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


@hookimpl
def register_trainers(register: Any) -> None:
    from nascore_setn.trainer import SETNConfig, SETNTrainer

    register("setn", SETNTrainer, config=SETNConfig,
             summary="SETN: uniform single-path weight step (train split) + softmax(α) mixed-network α step (val split)")


@hookimpl
def register_selectors(register: Any) -> None:
    from nascore_setn.selector import SETNSelectConfig, SETNSelector

    register("setn", SETNSelector, config=SETNSelectConfig,
             summary="SETN selection: top-K architectures by α log-probability, best by template-network accuracy")


@hookimpl
def register_evaluators(register: Any) -> None:
    from nascore_setn.selector import AlphaLogProbConfig, AlphaLogProbEvaluator

    register("setn_alpha", AlphaLogProbEvaluator, config=AlphaLogProbConfig,
             summary="log-probability of an architecture under the α learned by an earlier stage (setn, tnas_warmup)")


@hookimpl
def register_recipes(register: Any) -> None:
    register("setn", str(RECIPES / "setn.yaml"),
             summary="SETN on nb201 (C=8, N=1) with mnist5k; the pick is also looked up in the NB201 CIFAR-10 final table")
    register("setn-nb201-cifar10", str(RECIPES / "setn-nb201-cifar10.yaml"),
             summary="SETN at paper scale: nb201 C=16 N=5 on CIFAR-10 (local root), 250 epochs, alpha Adam 3e-4")
