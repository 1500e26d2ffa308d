"""nascore: one-shot neural architecture search behind one small core and one CLI.

Public API: :data:`hookimpl` for plugins, the values :class:`Architecture` and
:class:`Candidate`, and :func:`get_registry` to look components up; :mod:`nascore.api` (also
``nascore.api`` after ``import nascore``) starts, resumes, opens and exports runs from Python.
"""

from nascore._version import __version__
from nascore.arch import Architecture, Candidate
from nascore.hookspecs import hookimpl
from nascore.registry import get_registry

__all__ = ["Architecture", "Candidate", "api", "get_registry", "hookimpl", "__version__"]


def __getattr__(name: str):  # ``nascore.api`` on first use: ``import nascore`` stays light for the CLI
    if name == "api":
        import nascore.api

        return nascore.api
    raise AttributeError(f"module 'nascore' has no attribute {name!r}")
