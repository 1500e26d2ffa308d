"""The version of nascore (its own module, so that the registry need not import the package)."""

__version__ = "0.1.0"
