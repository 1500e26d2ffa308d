"""SETN — One-Shot NAS via Self-Evaluated Template Network (Dong & Yang, ICCV 2019) for nascore."""

__version__ = "0.1.0"
