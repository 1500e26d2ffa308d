"""User-facing errors.

Every error a user can cause (config, architecture string, checkpoint, dataset path, plugin) is a
:class:`NascoreError`: the CLI prints its message (which names the field and the fix) and exits 2,
instead of a traceback. Anything else is a bug and keeps its traceback under ``--debug``.
"""

from __future__ import annotations


class NascoreError(Exception):
    """Base class: a problem the user can fix; ``str(err)`` says what and how."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  fix: {hint}")


class ConfigError(NascoreError):
    """A run config (or a ``--set`` override) is invalid; one line per problem."""

    def __init__(self, problems: list[str], *, source: str = "config") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} is invalid ({len(self.problems)} problem(s)):\n{lines}")


class UnknownComponent(NascoreError):
    """A config names a component no installed plugin registered."""


class PluginError(NascoreError):
    """A plugin failed to load, register or behave; names the plugin."""


class ArchitectureError(NascoreError):
    """An architecture string or value does not belong to the search space."""


class CheckpointError(NascoreError):
    """A checkpoint or run folder is missing, truncated or corrupted."""


class DatasetError(NascoreError):
    """A dataset cannot be found or read; says where the files must go."""


class ConstraintError(NascoreError):
    """No architecture of the space satisfies the resource constraint."""


class TrainingDiverged(NascoreError):
    """The loss became NaN or infinite; names the step and the path."""
