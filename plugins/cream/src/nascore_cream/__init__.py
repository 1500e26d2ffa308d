"""nascore-cream: Cream of the Crop (prioritized-path distillation) for nascore."""

__version__ = "0.1.0"
