"""TNAS — Neural Architecture Search with Trees (Qian et al., CVPR-W 2022) for nascore."""

__version__ = "0.1.0"
