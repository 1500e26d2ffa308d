"""Hook implementations of nascore-dna; nothing heavy is imported until a component is used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


def _trainer(cfg: Any, ctx: Any = None) -> Any:
    from nascore_dna.trainer import DNATrainer

    return DNATrainer(cfg, ctx)


def _evaluator(cfg: Any, ctx: Any = None) -> Any:
    from nascore_dna.evaluator import BlockDistillEvaluator

    return BlockDistillEvaluator(cfg, ctx)


def _selector(cfg: Any, ctx: Any = None) -> Any:
    from nascore_dna.selector import DNASelector

    return DNASelector(cfg, ctx)


def _distiller(cfg: Any, ctx: Any = None) -> Any:
    from nascore_dna.distiller import BlockFeatureDistiller

    return BlockFeatureDistiller(cfg, ctx)


@hookimpl
def register_trainers(register: Any) -> None:
    from nascore_dna.trainer import DNAConfig

    register("dna", _trainer, config=DNAConfig,
             summary="DNA: each block of the supernet learns the teacher's block output from its input (MSE)")


@hookimpl
def register_evaluators(register: Any) -> None:
    from nascore_dna.evaluator import BlockDistillConfig

    register("block_distill", _evaluator, config=BlockDistillConfig,
             summary="DNA: per-block distillation loss vs the teacher (normalised L1), cached per block")


@hookimpl
def register_selectors(register: Any) -> None:
    from nascore_dna.selector import DNASelectorConfig

    register("dna", _selector, config=DNASelectorConfig,
             summary="DNA: exact best combination of per-block candidates under the MACs/params constraint")


@hookimpl
def register_distillers(register: Any) -> None:
    from nascore_dna.distiller import BlockFeatureConfig

    register("block_feature", _distiller, config=BlockFeatureConfig,
             summary="DNA's block-wise feature loss (teacher features in, teacher features out) for any trainer")


@hookimpl
def register_recipes(register: Any) -> None:
    register("dna", str(RECIPES / "dna.yaml"),
             summary="DNA on mnist5k: in-run teacher -> block-wise supernet -> per-block ranking + combiner -> retrain")
    register("dna-imagenet", str(RECIPES / "dna-imagenet.yaml"),
             summary="DNA at ImageNet scale: EfficientNet-B7 teacher (local weights), the code's 6-cell MBConv student at 224")
