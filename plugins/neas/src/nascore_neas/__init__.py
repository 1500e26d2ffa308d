"""nascore-neas: one-shot Neural Ensemble Architecture Search (Chen et al., CVPR 2021)."""

__version__ = "0.1.0"
