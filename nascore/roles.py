"""What each role's component must provide, and what it sees of a run: the contracts plugins are written against.

Components are built by their registered factory as ``factory(cfg, ctx)`` and then used by the
pipeline (:mod:`nascore.pipeline`) through these methods only. ``ctx`` is a :class:`Context`: the
space, supernet, data, cost table, constraint, logger, checkpoint store and run state. The
pipeline's :class:`~nascore.pipeline.context.RunContext` provides it; nothing here names the
pipeline, so a component depends on this module and the values beneath it, never on how a run is
executed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import torch

from nascore.arch import Architecture, Candidate

if TYPE_CHECKING:
    from nascore.config import Ref, RunConfig
    from nascore.cost import CostTable, ResourceConstraint
    from nascore.data import DataBundle
    from nascore.space import SearchSpace, Supernet


class MetricsLogger(Protocol):
    """``ctx.log``: records for ``metrics.jsonl`` (and TensorBoard); numbers, strings, lists."""

    def metric(self, kind: str, **values: Any) -> None: ...

    def event(self, kind: str, **values: Any) -> None: ...


class CheckpointStore(Protocol):
    """``ctx.checkpoints``: this stage's in-stage checkpoints (the newest few kept).

    ``key`` names the stage's files; a component that keeps several independent series in one
    stage (retraining one child after another) appends to it.
    """

    key: str

    def save(self, state: dict[str, Any]) -> None: ...

    def load_latest(self) -> dict[str, Any] | None: ...


class Ranks(Protocol):
    """``ctx.dist``: this process's place in a distributed run (``world_size`` 1 otherwise)."""

    world_size: int
    rank: int
    local_rank: int

    @property
    def is_main(self) -> bool: ...

    @property
    def enabled(self) -> bool: ...


class ComponentLookup(Protocol):
    """``ctx.registry``: the installed components by role and name (``.get(role, name).build(options, ctx)``)."""

    def get(self, role: str, name: str) -> Any: ...


class Context(Protocol):
    """What a component sees of the run it is part of (``factory(cfg, ctx)`` and every call).

    The current (possibly shrunk) ``space`` and the ``base_space`` it was restricted from; the shared
    ``supernet`` (built on first use) and its weights at initialisation; the ``data`` splits; the
    ``cost`` table and the run's ``constraint``; the metrics ``log``; this stage's ``checkpoints``;
    a JSON ``state`` that outlives stages (and ``write_state()`` to persist it now); the chosen
    ``candidates``; ``stage_key`` and ``stage_seed()`` for seeded streams; ``smoke`` (minimal
    budgets); distributed helpers. Plugins never touch torch.distributed or the run folder directly.
    """

    cfg: RunConfig
    registry: ComponentLookup
    run_dir: Path | None
    smoke: bool
    quiet: bool
    dist: Ranks
    device: torch.device
    stage_key: str
    log: MetricsLogger
    state: dict[str, Any]
    candidates: list[Candidate]
    distiller: Any
    data: DataBundle
    base_space: SearchSpace
    space: SearchSpace
    constraint: ResourceConstraint

    @property
    def supernet(self) -> Supernet:
        """The supernet, built on first use (a table-only search never builds one)."""
        ...

    @property
    def has_supernet(self) -> bool: ...

    @property
    def initial_weights(self) -> dict[str, torch.Tensor]:
        """W0: a CPU copy of the supernet's weights before any training."""
        ...

    def set_initial_weights(self, snapshot: dict[str, torch.Tensor] | None = None) -> None: ...

    @property
    def cost(self) -> CostTable:
        """MACs/params table at the dataset's input shape."""
        ...

    @property
    def checkpoints(self) -> CheckpointStore: ...

    def build(self, role: str, ref: Ref, path: str) -> Any:
        """Build another component of the run from its config entry (``path``: its options key)."""
        ...

    def stage_seed(self, stream: str = "") -> int: ...

    def feasible(self, arch: Architecture) -> bool: ...

    def candidate(self, arch: Architecture, score: float, metrics: dict[str, float] | None = None,
                  origin: str = "") -> Candidate: ...

    def log_space(self, stage: str, round: int | None = None) -> None: ...

    def progress(self, total: int | None = None, desc: str = "", initial: int = 0) -> Any: ...

    def check_same_arch(self, arch: Architecture) -> None: ...

    def allreduce_grads(self, net: torch.nn.Module) -> None: ...

    def write_state(self) -> None: ...


@runtime_checkable
class Trainer(Protocol):
    """Trains the supernet in ``ctx.supernet`` (weight sharing).

    ``fit`` runs the stage's whole budget and must be resumable: it saves its own state through
    ``ctx.checkpoints`` every few steps and, when called again after a kill, continues from there.
    """

    def fit(self, ctx: "Context") -> None: ...


@runtime_checkable
class Evaluator(Protocol):
    """Scores architectures. ``metric`` names the score; higher is better after ``sign``.

    ``score`` returns one dict of named metrics per architecture, each containing ``metric``.
    """

    metric: str
    higher_is_better: bool

    def score(self, archs: Sequence[Architecture], ctx: "Context") -> list[dict[str, float]]: ...


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

    def search(self, ctx: "Context", evaluator: Evaluator | None) -> SearchResult: ...


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
    per-stage restarts). Teachers are loaded with :func:`nascore.methods.teacher.load_teacher`.
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
        ctx: "Context",
        trainer: Any,
    ) -> torch.Tensor: ...


class SpaceData:
    """The part of a dataset a search space reads: the input shape (C, H, W) and the class count."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        from nascore.errors import NascoreError

        shape = tuple(int(v) for v in input_shape)
        if len(shape) != 3 or any(v <= 0 for v in shape) or int(num_classes) <= 0:
            raise NascoreError(f"input shape {list(shape)} with {num_classes} classes: need C, H, W > 0 and classes > 0",
                               hint="e.g. input_shape=(3, 32, 32), num_classes=10")
        self.input_shape: tuple[int, ...] = shape
        self.num_classes = int(num_classes)


class SpaceContext:
    """The context a space factory gets outside a run (``nascore spaces``/``sample``/``cost``,
    ``nascore.api.space``, the contract suite).

    A space factory may read only this much of any context — ``ctx.data.input_shape``,
    ``ctx.data.num_classes``, ``ctx.registry``, ``ctx.smoke``, ``ctx.stage_seed()`` — so the same
    factory works inside a run (a full :class:`Context`) and outside one. Default input: mnist5k's.
    """

    run_dir = None
    quiet = True
    stage_key = "space"

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                 registry: "ComponentLookup | None" = None, seed: int = 0, smoke: bool = False) -> None:
        self.data = SpaceData(input_shape, num_classes)
        self.registry = registry
        self.seed = seed
        self.smoke = smoke

    def stage_seed(self, stream: str = "") -> int:
        import hashlib

        h = hashlib.sha256(f"{self.seed}/{self.stage_key}/{stream}".encode()).digest()
        return int.from_bytes(h[:4], "little")
