"""Hook implementations of nascore-pwkd; nothing heavy is imported until a component is used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


def _space(cfg: Any, ctx: Any = None) -> Any:
    from nascore_pwkd.space import SlimmableChainSpace

    data = getattr(ctx, "data", None) if ctx is not None else None
    shape, classes = (tuple(data.input_shape), data.num_classes) if data is not None else ((1, 28, 28), 10)
    return SlimmableChainSpace(widths=cfg.widths, width=cfg.width, layers=cfg.layers, input_shape=shape,
                               num_classes=classes)


def _trainer(cfg: Any, ctx: Any = None) -> Any:
    from nascore_pwkd.trainer import SlimmableTrainer

    return SlimmableTrainer(cfg, ctx)


def _pwkd(cfg: Any, ctx: Any = None) -> Any:
    from nascore_pwkd.distiller import PWKDDistiller

    return PWKDDistiller(cfg, ctx)


def _feature_kd(cfg: Any, ctx: Any = None) -> Any:
    from nascore_pwkd.distiller import FeatureKDDistiller

    return FeatureKDDistiller(cfg, ctx)


@hookimpl
def register_search_spaces(register: Any) -> None:
    from nascore_pwkd.space import SlimmableChainConfig

    register("slimmable_chain", _space, config=SlimmableChainConfig,
             summary="width space: a slimmable conv chain, widths 0.25/0.5/0.75/1.0 sharing weights, BN per width")


@hookimpl
def register_trainers(register: Any) -> None:
    from nascore_pwkd.trainer import SlimmableConfig

    register("slimmable", _trainer, config=SlimmableConfig,
             summary="joint multi-width training: every width each step, summed CE (slimmable teacher)")


@hookimpl
def register_distillers(register: Any) -> None:
    from nascore_pwkd.distiller import FeatureKDConfig, PWKDConfig

    register("pwkd", _pwkd, config=PWKDConfig,
             summary="PWKD: distil from teacher widths partial to whole, lr restarted at every stage (wraps kd)")
    register("feature_kd", _feature_kd, config=FeatureKDConfig,
             summary="similarity-preserving feature KD on penultimate features (no projection; any widths)")


@hookimpl
def register_recipes(register: Any) -> None:
    register("pwkd", str(RECIPES / "pwkd.yaml"),
             summary="PWKD on mnist5k: slimmable teacher -> student width search -> retrain with PWKD")
    register("pwkd-kd", str(RECIPES / "pwkd-kd.yaml"),
             summary="the pwkd recipe with plain KD from the whole teacher (the baseline, same epochs)")
