"""nascore-pwkd: Partial to Whole Knowledge Distillation (Zhang, Zhang & Sun, 2021)."""

__version__ = "0.1.0"
