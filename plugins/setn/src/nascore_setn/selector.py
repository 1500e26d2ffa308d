"""``setn`` selector and ``setn_alpha`` evaluator: SETN's evaluator-then-template selection.

SETN's "evaluator" is the learned distribution softmax(α) over architectures; its "template" is
the shared-weight supernet. Selection (official ``get_best_arch``): enumerate the space, rank every
architecture by its log-probability under α, keep the top ``select_num`` (100), score each with
the template weights on *one* validation batch (the code takes the next batch of the loader for
each candidate; ``same_batch: true`` scores them all on the same batch instead), and return the
best. The paper samples candidates from α instead of taking the top-K; the code's deterministic
top-K is what we follow.

A search-stage ``evaluator`` (e.g. ``nb201_table``) is optional and never changes the choice: its
metrics are added to the returned candidates (NB-201 "retraining" is a table lookup).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture
from nascore.errors import NascoreError
from nascore.methods.mixed import ArchAlpha, path_accuracy
from nascore.registry import NoOptions
from nascore.roles import SearchResult


class SETNSelectConfig(BaseModel):
    """Options of the ``setn`` selector (defaults: SETN's NB-201 code)."""

    model_config = ConfigDict(extra="forbid")
    select_num: int = Field(100, ge=1, description="K: architectures with the highest α log-probability to score")
    split: Literal["val", "archval"] = Field("val", description="split the template network is scored on (code: the α split)")
    batches: int = Field(1, ge=1, description="batches per candidate (code: 1)")
    batch_size: int | None = Field(None, ge=1, description="images per scoring batch (null: data.eval_batch_size; code: the valid loader's test batch size)")
    same_batch: bool = Field(False, description="score every candidate on the same batch(es) (code: the next batch each)")
    bn: Literal["batch", "stored"] = Field("batch", description="BatchNorm when scoring: batch statistics (SETN: no running stats) or stored")


class SETNSelector:
    """Top-K by α log-probability, then the best by template-network accuracy (see module doc)."""

    def __init__(self, cfg: SETNSelectConfig, ctx: Any = None) -> None:
        self.cfg = cfg

    def search(self, ctx: Any, evaluator: Any) -> SearchResult:
        cfg = self.cfg
        alpha = ArchAlpha.from_context(ctx, "selector setn").to(ctx.device)
        k = min(cfg.select_num, 5) if ctx.smoke else cfg.select_num
        top = alpha.top_k(ctx.space, k, accept=ctx.feasible)
        if not top:
            raise NascoreError("setn: no architecture of the space satisfies the constraint",
                               hint="loosen the constraint")
        bs = cfg.batch_size or ctx.data.eval_batch_size
        n_batches = max(ctx.data.num_batches(cfg.split, batch_size=bs, drop_last=False), 1)
        bar = ctx.progress(total=len(top), desc="setn select")
        scored: list[tuple[Architecture, float, float, float]] = []
        for j, (arch, logp) in enumerate(top):
            pos = 0 if cfg.same_batch else j * cfg.batches
            epoch, start = divmod(pos, n_batches)
            acc, loss = path_accuracy(ctx, arch, split=cfg.split, batches=min(cfg.batches, n_batches - start),
                                      bn=cfg.bn, shuffle=True, epoch=epoch, start=start, batch_size=bs)
            scored.append((arch, logp, acc, loss))
            bar.update(1)
        bar.close()
        # np.argmax keeps the first maximum: ties go to the higher log-probability (earlier in top)
        order = sorted(range(len(scored)), key=lambda i: (-scored[i][2], i))
        extra: list[dict[str, float]] = [{} for _ in order]
        if evaluator is not None:
            extra = evaluator.score([scored[i][0] for i in order], ctx)
        cands = []
        for rank_pos, (i, more) in enumerate(zip(order, extra)):
            arch, logp, acc, loss = scored[i]
            metrics = {"template_acc": acc, "template_loss": loss, "alpha_logprob": logp, "alpha_rank": float(i), **more}
            cands.append(ctx.candidate(arch, acc, metrics, origin=f"setn:top{k}"))
            c = cands[-1]
            ctx.log.metric("candidate", stage=ctx.stage_key, arch=c.arch_str, score=c.score, macs=c.macs,
                           params=c.params, origin=c.origin, alpha_logprob=logp, template_loss=loss)
        ctx.log.event("setn_pick", stage=ctx.stage_key, arch=cands[0].arch_str, template_acc=cands[0].score,
                      alpha_argmax=ctx.space.format(alpha.argmax_arch(ctx.space)))
        return SearchResult(candidates=cands, info={"evaluated": len(scored), "select_num": k})


class AlphaLogProbEvaluator:
    """Scores architectures by their log-probability under the α an earlier stage learned.

    Lets α drive other selectors (e.g. ``regularized_evolution`` over SETN's distribution).
    """

    metric = "alpha_logprob"
    higher_is_better = True

    def __init__(self, cfg: Any = None, ctx: Any = None) -> None:
        self._alpha: ArchAlpha | None = None

    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        if self._alpha is None:
            self._alpha = ArchAlpha.from_context(ctx, "evaluator setn_alpha")
        table = self._alpha.log_probs()
        return [{"alpha_logprob": self._alpha.log_prob(a, table)} for a in archs]


AlphaLogProbConfig = NoOptions
