"""The ``spos`` trainer now lives in the core (:mod:`nascore.builtin.spos`): ABS, Cream and RLNAS
train with it, and each plugin must install alone on top of the core. Kept so old imports work."""

from nascore.builtin.spos import SposConfig, SposTrainer, fair_cycle, quantile

__all__ = ["SposConfig", "SposTrainer", "fair_cycle", "quantile"]
