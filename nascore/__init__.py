"""nascore: one-shot neural architecture search behind one small core and one CLI.

Public API: :data:`hookimpl` for plugins, the values :class:`Architecture` and
:class:`Candidate`, and :func:`get_registry` to look components up.
"""

from nascore._version import __version__
from nascore.arch import Architecture, Candidate
from nascore.hookspecs import hookimpl
from nascore.registry import get_registry

__all__ = ["Architecture", "Candidate", "get_registry", "hookimpl", "__version__"]
