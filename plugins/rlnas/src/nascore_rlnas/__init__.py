"""nascore-rlnas: Neural Architecture Search with Random Labels (Zhang et al., 2021) for nascore."""

__version__ = "0.1.0"
