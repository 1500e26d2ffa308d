"""The ``accuracy`` evaluator: top-1 of a supernet path after BN recalibration.

Shared by SPOS, Cream, ABS, NEAS and every method that scores candidates with the supernet, so it
lives in the core. Scores on the ``archval`` split (never trained on); caches by architecture.

On a chain space (the supernet defines ``chain_layout()``) the candidates of one ``score()`` call,
and the best ones of earlier calls, share the computation of their common prefixes
(``share_prefixes``, :mod:`nascore.prefix`): the same scores, bit for bit, for less work. The
recalibration and evaluation batches are gathered once per evaluator, not once per candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from nascore.arch import Architecture
from nascore.evaluate import accuracy, bn_state, load_bn_state, recalibrate_bn
from nascore.hookspecs import hookimpl
from nascore.prefix import InPlaceError, PrefixSharing
from nascore.space import chain_layout_of


class AccuracyConfig(BaseModel):
    """Options of the ``accuracy`` evaluator."""

    model_config = ConfigDict(extra="forbid")
    bn_mode: Literal["recalibrate", "batch", "stored"] = Field(
        "recalibrate", description="recalibrate BN per path, use batch statistics, or stored running stats")
    recal_batches: int = Field(20, gt=0, description="training batches for BN recalibration")
    bn_momentum: float | None = Field(None, gt=0, le=1, description="null: cumulative average; 0.1: SPOS code's EMA")
    eval_batches: int | None = Field(None, gt=0, description="archval batches to score on (null: all)")
    split: Literal["archval", "val", "train"] = Field("archval", description="which split candidates are scored on")
    share_prefixes: bool = Field(
        True, description="chain spaces: compute the layers candidates share once (same scores); false: every path whole")
    prefix_cache_mb: float = Field(
        512, ge=0, description="memory (MiB) for shared activations and the scoring batches; past it, plain evaluation")


class AccuracyEvaluator:
    """Top-1 accuracy (and loss) of each path on the arch-validation split.

    Subclasses that score a path differently from the same forward passes (NEAS's ensemble
    accuracy and diversity) override :meth:`measure` only; caching, BN recalibration and restore,
    the splits (whole, never sharded: candidates are split across ranks instead) stay here.
    A subclass whose ``measure`` only calls ``net(x)`` may set ``measure_shares_prefixes = True``
    in its own body to keep prefix sharing (``net`` is then the rest of the path, ``x`` a cached
    activation); otherwise an overridden ``measure`` gets whole paths.
    """

    metric = "acc"
    higher_is_better = True
    measure_shares_prefixes = True

    def __init__(self, cfg: AccuracyConfig, ctx: Any = None) -> None:
        self.cfg = cfg
        self.cache: dict[Architecture, dict[str, float]] = {}
        self.evaluations = 0
        self.sharing = PrefixSharing(int(cfg.prefix_cache_mb * 2**20))
        self._batches_key: Any = None
        self._batches_val: tuple[list | None, list] | None = None
        self._checked: dict[int, bool] = {}  # id(supernet) -> layout verified against forward_path
        self._why_plain: str | None = None

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        todo = [a for a in dict.fromkeys(archs) if a not in self.cache]
        if todo:
            net = ctx.supernet
            saved, was = bn_state(net), net.training
            try:
                if not self._score_shared(todo, ctx):
                    for arch in todo:
                        self.cache[arch] = self._score_one(arch, ctx)
            finally:
                load_bn_state(net, saved)
                net.train(was)
        return [self.cache[a] for a in archs]

    def _budgets(self, ctx: Any) -> tuple[int, int | None]:
        recal, ev = self.cfg.recal_batches, self.cfg.eval_batches
        if ctx.smoke:
            recal, ev = min(recal, 2), min(ev or 2, 2)
        return recal, ev

    def _iter_batches(self, ctx: Any) -> tuple[Any, Any]:
        recal, ev = self._budgets(ctx)
        rb = (ctx.data.batches("train", epoch=0, limit=recal, device=ctx.device, shard=False)
              if self.cfg.bn_mode == "recalibrate" else None)
        eb = ctx.data.batches(self.cfg.split, shuffle=False, batch_size=ctx.data.eval_batch_size, drop_last=False,
                              limit=ev, device=ctx.device, shard=False)
        return rb, eb

    def _batches(self, ctx: Any) -> tuple[list | None, list] | None:
        """The recalibration and scoring batches, gathered once (None: they exceed the budget)."""
        key = (id(ctx.data), str(ctx.device), self._budgets(ctx), ctx.data.eval_batch_size)
        if key != self._batches_key:
            self._batches_key, self._batches_val = key, None
            budget = self.cfg.prefix_cache_mb * 2**20
            rb, eb = self._iter_batches(ctx)
            lists: list[list | None] = []
            total = 0
            for it in (rb, eb):
                if it is None:
                    lists.append(None)
                    continue
                got = []
                for x, y in it:
                    total += x.numel() * x.element_size() + y.numel() * y.element_size()
                    if total > budget:
                        break
                    got.append((x, y))
                if total > budget:
                    break
                lists.append(got)
            if total <= budget:
                self._batches_val = (lists[0], lists[1])  # type: ignore[assignment]
                self.sharing.budget = int(budget - total)  # the activations get what the batches leave
        return self._batches_val

    def _score_one(self, arch: Architecture, ctx: Any) -> dict[str, float]:
        """Plain evaluation of one path: recalibrate it whole, then measure it whole."""
        net = ctx.supernet
        net.set_active(arch)
        got = self._batches(ctx)
        rb, eb = got if got is not None else self._iter_batches(ctx)
        bn = "stored"
        if self.cfg.bn_mode == "recalibrate":
            recalibrate_bn(net, rb, self.cfg.bn_momentum)
        elif self.cfg.bn_mode == "batch":
            bn = "batch"
        out = self.measure(net, eb, bn)
        self.evaluations += 1
        return out

    # -- prefix sharing --------------------------------------------------------------------------
    def _plain_because(self, ctx: Any, why: str) -> bool:
        if why != self._why_plain:
            self._why_plain = why
            log = getattr(ctx, "log", None)
            if log is not None:
                log.event("prefix_sharing_off", stage=getattr(ctx, "stage_key", None), reason=why)
        return False

    def _measure_ok(self) -> bool:
        owner = next(c for c in type(self).__mro__ if "measure" in c.__dict__)
        return bool(owner.__dict__.get("measure_shares_prefixes", False))

    def _score_shared(self, archs: list[Architecture], ctx: Any) -> bool:
        """Score ``archs`` with prefix sharing; False if this call must be evaluated plainly."""
        if not self.cfg.share_prefixes or len(archs) == 0:
            return False
        net = ctx.supernet
        layout = chain_layout_of(net)
        if layout is None:
            return self._plain_because(ctx, f"{type(net).__name__} defines no chain_layout() (not a chain space)")
        if not self._measure_ok():
            return self._plain_because(ctx, f"{type(self).__name__}.measure is not marked measure_shares_prefixes")
        got = self._batches(ctx)
        if got is None:
            return self._plain_because(ctx, f"the scoring batches exceed prefix_cache_mb={self.cfg.prefix_cache_mb}")
        rb, eb = got
        if not eb:
            return False
        plan = self.sharing.plan(net, layout)
        ok = self._checked.get(id(net))
        if ok is None:
            ok = self._check_layout(net, plan, archs[0], eb[0][0])
            self._checked[id(net)] = ok
        if not ok:
            return self._plain_because(ctx, f"{type(net).__name__}.chain_layout() does not reproduce forward_path")
        bn = "batch" if self.cfg.bn_mode == "batch" else "stored"
        if bn == "batch" and plan.has_dropout:
            return self._plain_because(ctx, "bn_mode=batch scores in train mode, where dropout is random: "
                                            "whole paths, in the given order")
        sign = 1.0 if self.higher_is_better else -1.0

        def objective(m: dict[str, float]) -> float:
            v = float(m.get(self.metric, float("nan")))
            return sign * v if v == v else float("-inf")

        key = (self._batches_key, self.cfg.bn_mode, self.cfg.bn_momentum, self.cfg.split)
        try:
            res = self.sharing.run(net, layout, archs, rb, eb, self.cfg.bn_momentum, bn, self.measure,
                                   objective, key)
        except InPlaceError:
            self.sharing.clear()
            self.cfg = self.cfg.model_copy(update={"share_prefixes": False})
            return self._plain_because(ctx, f"a module of {type(net).__name__} modifies its input in place")
        if res is None:
            return self._plain_because(ctx, f"the stem's activations exceed prefix_cache_mb={self.cfg.prefix_cache_mb}")
        self._why_plain = None
        self.cache.update(res)
        self.evaluations += len(res)
        return True

    @torch.no_grad()
    def _check_layout(self, net: Any, plan: Any, arch: Architecture, x: torch.Tensor) -> bool:
        """Does the layout compute exactly ``forward_path`` (eval mode, one batch)?"""
        was = net.training
        net.set_active(arch)
        net.eval()
        try:
            want = net(x)
            try:
                got = plan.forward(x)
            except Exception:  # (a layout naming the wrong modules: shapes do not fit)
                return False
            return bool(torch.equal(want, got))
        finally:
            net.train(was)

    def measure(self, net: Any, batches: Any, bn: str) -> dict[str, float]:
        """The metrics of the active path over ``batches`` (``bn``: "stored" or "batch" statistics)."""
        acc, loss = accuracy(net, batches, bn=bn)
        return {"acc": acc, "loss": loss}


@hookimpl
def register_evaluators(register: Any) -> None:
    register("accuracy", AccuracyEvaluator, config=AccuracyConfig,
             summary="top-1 on the arch-validation split after per-path BN recalibration")
