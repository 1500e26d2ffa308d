"""nascore: one-shot neural architecture search behind one small core and one CLI.

Public API: :data:`hookimpl` for plugins, the values :class:`Architecture` and
:class:`Candidate`, and :func:`get_registry` to look components up.
"""

from nascore.arch import Architecture, Candidate
from nascore.registry import get_registry, hookimpl

__version__ = "0.1.0"

__all__ = ["Architecture", "Candidate", "get_registry", "hookimpl", "__version__"]
