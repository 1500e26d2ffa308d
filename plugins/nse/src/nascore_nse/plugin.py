"""Hook implementations of nascore-nse (nothing heavy is imported here).

Registers the ``nse_pool`` space (an op pool per layer, multi-branch layers), the ``nse`` trainer
(gates, α, MACs penalty), the ``nse`` selector (one round of Pareto-front space evolution per call,
run inside a ``loop`` stage) and the ``nse`` recipe. Candidates are scored by the core's
``accuracy`` evaluator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


@hookimpl
def register_search_spaces(register: Any) -> None:
    from nascore_nse.pool import NSEPoolConfig, make_pool_space

    register("nse_pool", make_pool_space, config=NSEPoolConfig,
             summary="NSE op-pool chain: multi-branch layers (sums of ops) over a large pool, K active per layer")


@hookimpl
def register_trainers(register: Any) -> None:
    from nascore_nse.trainer import NseTrainer, NseTrainerConfig

    register("nse", NseTrainer, config=NseTrainerConfig,
             summary="NSE gated multi-branch training: weight steps + straight-through α steps with a MACs penalty")


@hookimpl
def register_selectors(register: Any) -> None:
    from nascore_nse.selector import NseSelector, NseSelectorConfig

    register("nse", NseSelector, config=NseSelectorConfig,
             summary="NSE round: sample from gates, Pareto front, rebuild the active space from front + queue")


@hookimpl
def register_recipes(register: Any) -> None:
    register("nse", str(RECIPES / "nse.yaml"),
             summary="NSE on mnist5k: rounds of gated supernet training + Pareto search, evolving the op pool")
    register("nse-imagenet", str(RECIPES / "nse-imagenet.yaml"),
             summary="NSE at ImageNet scale: 16-layer MBConv-channel skeleton at 224, 13-op pool, K=5, 300M MACs target")
