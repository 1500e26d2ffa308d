"""Hook implementations of nascore-tnas: the ``tnas`` selector, the ``tnas_warmup`` trainer, recipes.

Components are imported inside the hooks, so importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


@hookimpl
def register_selectors(register: Any) -> None:
    from nascore_tnas.selector import TNASConfig, TNASSelector

    register("tnas", TNASSelector, config=TNASConfig,
             summary="TNAS tree search: operation tree × architecture tree, bi-level BFS with top-k re-examination")


@hookimpl
def register_trainers(register: Any) -> None:
    from nascore_tnas.warmup import TNASWarmup, TNASWarmupConfig

    register("tnas_warmup", TNASWarmup, config=TNASWarmupConfig,
             summary="TNAS warm-up: mixed-op supernet, weights and α trained jointly (α groups the op tree)")


@hookimpl
def register_recipes(register: Any) -> None:
    register("tnas", str(RECIPES / "tnas.yaml"),
             summary="TNAS on nb201 (C=8, N=1) with mnist5k: α warm-up, tree search with trained children")
    register("tnas-table", str(RECIPES / "tnas-table.yaml"),
             summary="TNAS against the NAS-Bench-201 CIFAR-10 final (200-epoch) table: seconds on a CPU")
    register("tnas-nb201-cifar10", str(RECIPES / "tnas-nb201-cifar10.yaml"),
             summary="TNAS at paper scale: nb201 C=16 N=5 on CIFAR-10 (local root), the code's warm-up and tree budgets")
