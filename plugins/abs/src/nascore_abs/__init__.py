"""nascore-abs: Angle-Based search space Shrinking (Hu et al., 2020) for nascore."""

__version__ = "0.1.0"
