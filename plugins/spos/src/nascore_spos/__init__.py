"""nascore-spos: Single Path One-Shot NAS (Guo et al., 2019) as a nascore plugin."""

__version__ = "0.1.0"
