"""nascore-nse: Neural Search-space Evolution (Ci et al., arXiv 2011.10904)."""

__version__ = "0.1.0"
