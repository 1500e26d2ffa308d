"""Hook implementations of nascore-neas (nothing heavy is imported here).

Registers the ``neas_ensemble`` space (K members over any chain space), the ``neas`` K-path
trainer, the ``ensemble_accuracy`` evaluator, the ``diversity_shrink`` and ``ensemble_evolution``
selectors and the ``neas`` recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


@hookimpl
def register_search_spaces(register: Any) -> None:
    from nascore_neas.ensemble import EnsembleSpaceConfig, make_ensemble_space

    register("neas_ensemble", make_ensemble_space, config=EnsembleSpaceConfig,
             summary="NEAS ensembles: split point + K member paths over a chain space (trunk shared)")


@hookimpl
def register_trainers(register: Any) -> None:
    from nascore_neas.trainer import NeasTrainer, NeasTrainerConfig

    register("neas", NeasTrainer, config=NeasTrainerConfig,
             summary="NEAS K-path supernet training: CE of the mean of K member logits, trunk grad / K")


@hookimpl
def register_evaluators(register: Any) -> None:
    from nascore_neas.evaluator import EnsembleAccuracy, EnsembleAccuracyConfig

    register("ensemble_accuracy", EnsembleAccuracy, config=EnsembleAccuracyConfig,
             summary="ensemble top-1 after BN recalibration, with member accuracy and disagreement/KL")


@hookimpl
def register_selectors(register: Any) -> None:
    from nascore_neas.evolution import EnsembleEvolution, EnsembleEvolutionConfig
    from nascore_neas.shrink import DiversityShrink, DiversityShrinkConfig

    register("diversity_shrink", DiversityShrink, config=DiversityShrinkConfig,
             summary="NEAS shrinking: drop (layer, op) pairs lowest in ensemble potential + member diversity")
    register("ensemble_evolution", EnsembleEvolution, config=EnsembleEvolutionConfig,
             summary="NEAS K-path evolution over split point and member paths, constraint on the whole ensemble")


@hookimpl
def register_recipes(register: Any) -> None:
    register("neas-imagenet", str(RECIPES / "neas-imagenet.yaml"),
             summary="NEAS at paper scale: K=2 ensembles over NEAS's MBConv space at 224, <= 472M (NEAS-M); "
                     "supernet schedule Cream's (NEAS released none)")
    register("neas", str(RECIPES / "neas.yaml"),
             summary="NEAS on mnist5k: K-path supernet + diversity shrinking (loop) -> ensemble evolution -> export -> retrain")
