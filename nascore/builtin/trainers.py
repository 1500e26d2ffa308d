"""Built-in trainers: ``single_path``, uniform single-path training (the generic base), and ``spos``
(SPOS's samplers, :mod:`nascore.builtin.spos`), which several methods' recipes share.

Method plugins register richer trainers (Cream's board, …); these let the core and third-party
plugins run a pipeline with nothing else installed.
"""

from __future__ import annotations

from typing import Any

from nascore.hookspecs import hookimpl
from nascore.trainer import SupernetTrainer, TrainerConfig


@hookimpl
def register_trainers(register: Any) -> None:
    register("single_path", SupernetTrainer, config=TrainerConfig,
             summary="uniform single-path supernet training (one path per step)")
    from nascore.builtin.spos import SposConfig, SposTrainer   # lazily: keeps the CLI fast

    register("spos", SposTrainer, config=SposConfig,
             summary="SPOS single-path training; samplers uniform | flops_binned | fair (FairNAS)")
