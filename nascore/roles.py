"""What each role's component must provide: the contracts plugins are written against.

Components are built by their registered factory as ``factory(cfg, ctx)`` and then used by the
pipeline (:mod:`nascore.run`) through these methods only. ``ctx`` is the
:class:`nascore.run.RunContext`: the space, supernet, data, cost table, constraint, logger,
checkpoint store and run state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import torch

from nascore.arch import Architecture, Candidate

if TYPE_CHECKING:
    from nascore.run import RunContext
    from nascore.space import SearchSpace


@runtime_checkable
class Trainer(Protocol):
    """Trains the supernet in ``ctx.supernet`` (weight sharing).

    ``fit`` runs the stage's whole budget and must be resumable: it saves its own state through
    ``ctx.checkpoints`` every few steps and, when called again after a kill, continues from there.
    """

    def fit(self, ctx: "RunContext") -> None: ...


@runtime_checkable
class Evaluator(Protocol):
    """Scores architectures. ``metric`` names the score; higher is better after ``sign``.

    ``score`` returns one dict of named metrics per architecture, each containing ``metric``.
    """

    metric: str
    higher_is_better: bool

    def score(self, archs: Sequence[Architecture], ctx: "RunContext") -> list[dict[str, float]]: ...


@attrs.define
class SearchResult:
    """What a selector returns: ranked candidates (best first) and, for shrinkers, a new space.

    ``done`` ends a ``loop`` stage early (e.g. NSE when the op pool is exhausted).
    """

    candidates: list[Candidate] = attrs.field(factory=list)
    space: "SearchSpace | None" = None
    done: bool = False
    info: dict[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class Selector(Protocol):
    """A search strategy: random search, evolution, board-best, shrinking, tree search …"""

    def search(self, ctx: "RunContext", evaluator: Evaluator | None) -> SearchResult: ...


@runtime_checkable
class Distiller(Protocol):
    """An extra training loss from a teacher.

    ``loss(student_logits, x, y, arch, ctx, trainer)`` returns the loss the trainer adds to (or
    uses instead of) its own; ``replaces_ce`` says whether the distiller's loss already contains
    the label loss (Cream's ρ-weighted combination does).

    Optional hooks, honoured by :class:`nascore.trainer.SupernetTrainer` and the ``retrain`` stage:
    ``bind_student(module)`` is called once with the student network before training (feature
    distillers hook its layers); ``lr_factor(step, total) -> float | None`` is called before every
    step and, when it returns a number, replaces the runner's learning-rate schedule factor (PWKD's
    per-stage restarts). Teachers are loaded with :func:`nascore.teacher.load_teacher`.
    ``state_dict()`` / ``load_state_dict(state)``: a distiller with state of its own (Cream's
    board and meta-network) is checkpointed and restored with the trainer's state.
    """

    replaces_ce: bool

    def loss(
        self,
        student_logits: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        arch: Architecture,
        ctx: "RunContext",
        trainer: Any,
    ) -> torch.Tensor: ...
