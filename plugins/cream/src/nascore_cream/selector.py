"""The ``board`` selector: the final architecture is the best path on the prioritized board.

Cream's headline simplification: no evolution or RL after supernet training, the board the
trainer (or the ``prioritized_path`` distiller) kept *is* the search result. The board is read
from ``ctx.state["cream_board"]``; paths outside the current (possibly restricted) space or
constraint are dropped. With ``rescore`` each board path is scored again by the stage's evaluator
(``accuracy``: the arch-validation split after BN recalibration) and ranked by that — the board's
own scores are noisy single-batch accuracies measured at different points of training; without,
the board order (its training-time score) is the ranking, as in the paper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture
from nascore.errors import NascoreError
from nascore.roles import SearchResult
from nascore.search import objective, rank

from nascore_cream.distill import STATE_KEY

if TYPE_CHECKING:
    from nascore.roles import Context


class BoardSelectorConfig(BaseModel):
    """Options of the ``board`` selector."""

    model_config = ConfigDict(extra="forbid")
    rescore: bool | None = Field(
        None, description="re-score board paths with the stage's evaluator and rank by it (null: when the stage "
        "has an evaluator); false: rank by the board's own score (paper)")


class BoardSelector:
    """Return the prioritized board, best first (optionally re-scored)."""

    def __init__(self, cfg: BoardSelectorConfig, ctx: Any = None) -> None:
        self.cfg = cfg

    def search(self, ctx: "Context", evaluator: Any) -> SearchResult:
        board = ctx.state.get(STATE_KEY) or {}
        entries = board.get("entries") or []
        if not entries:
            raise NascoreError(
                "selector board found no prioritized board in this run",
                hint="train the supernet first with trainer cream, or add distiller prioritized_path to the train stage",
            )
        rescore = self.cfg.rescore if self.cfg.rescore is not None else evaluator is not None
        if rescore and evaluator is None:
            raise NascoreError("selector board: rescore is on but the search stage has no evaluator",
                               hint="add `evaluator: accuracy` to the stage, or set rescore: false")
        kept: list[tuple[Architecture, dict[str, Any]]] = []
        dropped = []
        for e in entries:
            arch = Architecture.from_json(e["ops"])
            if ctx.space.contains(arch) and ctx.feasible(arch):
                kept.append((arch, e))
            else:
                dropped.append(e["arch"])
        if dropped:
            ctx.log.event("board_dropped", stage=ctx.stage_key, archs=dropped)
        if not kept:
            raise NascoreError(
                f"selector board: none of the {len(entries)} board paths is in the current space and constraint",
                hint="the constraint or space changed after training; train again under it",
            )
        cands = []
        scores = evaluator.score([a for a, _ in kept], ctx) if rescore else [{} for _ in kept]
        for (arch, e), metrics in zip(kept, scores):
            m = {**metrics, "board_score": float(e["score"])}
            score = objective(evaluator, metrics) if rescore else float(e["score"])
            cands.append(ctx.candidate(arch, score, m, origin="board"))
        ranked = rank(cands)
        for c in ranked:
            ctx.log.metric("candidate", stage=ctx.stage_key, arch=c.arch_str, score=c.score, macs=c.macs,
                           params=c.params, board_score=c.metrics["board_score"])
        return SearchResult(candidates=ranked, info={"board": len(entries), "rescored": bool(rescore)})
