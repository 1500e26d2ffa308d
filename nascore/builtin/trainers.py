"""Built-in trainer: ``single_path``, uniform single-path training (the generic base).

Method plugins register richer trainers (SPOS samplers, Cream's board, …); this one lets the core
and third-party plugins run a pipeline with nothing else installed.
"""

from __future__ import annotations

from typing import Any

from nascore.hookspecs import hookimpl
from nascore.trainer import SupernetTrainer, TrainerConfig


@hookimpl
def register_trainers(register: Any) -> None:
    register("single_path", SupernetTrainer, config=TrainerConfig,
             summary="uniform single-path supernet training (one path per step)")
