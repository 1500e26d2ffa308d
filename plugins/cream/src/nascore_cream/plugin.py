"""Hook implementations of nascore-cream: the ``cream`` trainer, the ``prioritized_path``
distiller, the ``board`` selector and two recipes. Nothing heavy is imported here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


@hookimpl
def register_trainers(register: Any) -> None:
    from nascore_cream.trainer import CreamConfig, CreamTrainer

    register("cream", CreamTrainer, config=CreamConfig,
             summary="Cream: single path in a MACs range + prioritized board + meta-matched path distillation")


@hookimpl
def register_distillers(register: Any) -> None:
    from nascore_cream.distiller import PrioritizedPathConfig, PrioritizedPathDistiller

    register("prioritized_path", PrioritizedPathDistiller, config=PrioritizedPathConfig,
             summary="Cream's path distillation (own board + meta matching) inside any supernet trainer")


@hookimpl
def register_selectors(register: Any) -> None:
    from nascore_cream.selector import BoardSelector, BoardSelectorConfig

    register("board", BoardSelector, config=BoardSelectorConfig,
             summary="the best path of the prioritized board (optionally re-scored), no separate search")


@hookimpl
def register_recipes(register: Any) -> None:
    register("cream-imagenet", str(RECIPES / "cream-imagenet.yaml"),
             summary="Cream at paper scale: 20-layer MBConv supernet at 224, ImageNet from a local root, EMA, RandAugment")
    register("cream", str(RECIPES / "cream.yaml"),
             summary="Cream on mnist5k: cream trainer (mobilenet space, MACs range) -> board -> export -> retrain")
    register("cream_spos", str(RECIPES / "cream_spos.yaml"),
             summary="composition: SPOS trainer + prioritized_path distiller -> board selector, config only")
