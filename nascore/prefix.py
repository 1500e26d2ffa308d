"""Exact sharing of work between the candidates of a chain space (the ``accuracy`` evaluator's
``share_prefixes``).

In a chain supernet two candidates that make the same first k choices compute the same
activations up to layer k, in BN recalibration too: in train mode a BN layer normalises with the
batch's own statistics, so a layer's output depends only on its input, and its recalibrated
running statistics depend only on the sequence of inputs it saw, i.e. on the choices before and at
it (the recalibration and evaluation batches are fixed). So :class:`PrefixSharing` sorts the
candidates into a prefix trie and computes each trie node once: its *step* (the choice layer of
one decision plus the fixed modules after it, from the supernet's :class:`~nascore.space.ChainLayout`)
has its BN statistics reset, then runs every recalibration batch in train mode (updating them,
cumulative average or EMA exactly as :func:`nascore.evaluate.recalibrate_bn` does), then every
evaluation batch with those statistics; the node keeps both lists of outputs. A leaf runs the head
the same way and hands the logits to the evaluator's ``measure``. Every BN layer sees the same
inputs in the same order as in plain evaluation and every op runs on the same tensors, so the
scores are bit-identical (where the arithmetic is deterministic: CPU, or CUDA with deterministic
algorithms; ``cudnn.benchmark`` varies plain evaluation itself).

**Memory.** Every activation held (the nodes on the current trie path and the ones kept for later
calls) counts against ``budget_bytes``. A node that does not fit is not kept: its candidates run the
rest of their path batch by batch from the deepest node that fits (plain evaluation from there);
if not even the stem's outputs fit, the caller evaluates plainly.

**Across calls** nodes are kept within the budget, and evicted lowest *priority* first: a node's
priority is the best objective of the candidates scored through it, so the paths of the best
candidates so far (evolution's parents, whose children share long prefixes with them) stay. Kept
nodes are dropped when the supernet's weights change (parameter versions), or the batches,
options or device do.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from nascore.arch import Architecture, option_members
from nascore.evaluate import bn_layers, recalibrate_bn
from nascore.space import ChainLayout, ChoiceLayer

Batch = tuple[torch.Tensor, torch.Tensor]
Measure = Callable[[nn.Module, list[Batch], str], dict[str, float]]


class InPlaceError(RuntimeError):
    """A module modified its input in place: shared activations are unusable (fall back)."""


@attrs.define(eq=False)
class _Node:
    recal: list[torch.Tensor]
    eval: list[torch.Tensor]
    nbytes: int
    versions: list[int]
    priority: float = float("-inf")
    tick: int = 0

    def check(self) -> None:
        if [t._version for t in itertools.chain(self.recal, self.eval)] != self.versions:
            raise InPlaceError("a module of the supernet modified its input in place")


def _nbytes(ts: Sequence[torch.Tensor]) -> int:
    seen: set[int] = set()
    total = 0
    for t in ts:
        ptr = t.data_ptr()
        if ptr not in seen:  # skip (identity) aliases its input: count the storage once
            seen.add(ptr)
            total += t.numel() * t.element_size()
    return total


def _node(recal: list[torch.Tensor], ev: list[torch.Tensor]) -> _Node:
    both = recal + ev
    return _Node(recal, ev, _nbytes(both), [t._version for t in both])


class _Step:
    """One trie level: the choice layer of a decision (or none: the stem) and the fixed modules after it."""

    def __init__(self, layer: ChoiceLayer | None, fixed: list[nn.Module]) -> None:
        self.layer = layer
        self.fixed = fixed
        self._bns: dict[Any, list[nn.modules.batchnorm._BatchNorm]] = {}
        self._mods: dict[Any, list[nn.Module]] = {}

    def modules(self) -> list[nn.Module]:
        active = self.layer.active if self.layer is not None else None
        mods = self._mods.get(active)
        if mods is None:
            mods = [] if self.layer is None else [self.layer.candidates[o] for o in option_members(active)]
            mods = mods + self.fixed
            self._mods[active] = mods
            self._bns[active] = [m for mod in mods for m in bn_layers(mod)
                                 if m.track_running_stats and m.running_mean is not None]
        return mods

    def bns(self) -> list[nn.modules.batchnorm._BatchNorm]:
        self.modules()
        return self._bns[self.layer.active if self.layer is not None else None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is not None:
            x = self.layer(x)
        for m in self.fixed:
            x = m(x)
        return x


class _Tail(nn.Module):
    """Steps ``start..`` and the head as one module: what ``measure`` runs from a node's activations."""

    def __init__(self, steps: Sequence[_Step], head: Sequence[nn.Module], head_fn: Any) -> None:
        super().__init__()
        self._steps = list(steps)
        mods: list[nn.Module] = []
        for s in steps:
            mods += ([s.layer] if s.layer is not None else []) + s.fixed
        self.parts = nn.ModuleList(mods)  # for train()/eval() and BN discovery
        self.head_mods = nn.ModuleList(head)
        self._head_fn = head_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for s in self._steps:
            x = s(x)
        return self._head_fn(list(self.head_mods), x)


class _Plan:
    """The steps, tails and head of one supernet's layout (built once per supernet)."""

    def __init__(self, net: nn.Module, layout: ChainLayout) -> None:
        steps = [_Step(None, [])]
        for path, dec in layout.items:
            mod = net.get_submodule(path)
            if dec is None:
                steps[-1].fixed.append(mod)
            else:
                if not isinstance(mod, ChoiceLayer):
                    raise TypeError(f"chain layout item {path!r} of decision {dec} is not a ChoiceLayer")
                steps.append(_Step(mod, []))
        self.steps = steps  # steps[0]: the stem; steps[i + 1]: decision i
        self.head = [net.get_submodule(p) for p in layout.head]
        self.head_fn = layout.head_fn
        self.tails = [_Tail(steps[j:], self.head, self.head_fn) for j in range(len(steps) + 1)]
        #: train-mode dropout makes a path's outputs random; their draws follow the scoring order
        self.has_dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in net.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tails[0](x)


def _param_versions(net: nn.Module) -> tuple[int, ...]:
    return tuple(p._version for p in net.parameters())


class PrefixSharing:
    """Scores candidates of one chain supernet sharing common prefixes (see module docstring).

    ``run`` returns the metrics of each architecture, exactly as plain evaluation (recalibrate the
    whole path on ``recal``, then ``measure`` on ``evals``) would, or ``None`` when even the stem's
    activations exceed the budget (then the caller evaluates plainly).
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget = int(budget_bytes)
        self.nodes: dict[tuple, _Node] = {}
        self.held = 0
        self._plans: dict[int, tuple[nn.Module, _Plan]] = {}
        self._key: Any = None
        self._tick = 0
        self._depth_bytes: dict[int, int] = {}
        self.stats = {"steps_run": 0, "steps_reused": 0, "tail_runs": 0, "evicted": 0}

    # -- bookkeeping -----------------------------------------------------------------------------
    def plan(self, net: nn.Module, layout: ChainLayout) -> _Plan:
        got = self._plans.get(id(net))
        if got is None or got[0] is not net:
            got = (net, _Plan(net, layout))
            self._plans[id(net)] = got
        return got[1]

    def clear(self) -> None:
        self.nodes.clear()
        self.held = 0

    def _validate(self, key: Any) -> None:
        if key != self._key:
            self.clear()
            self._key = key

    def _evict_for(self, need: int, pinned: set[tuple]) -> bool:
        """Make room for ``need`` bytes by dropping unpinned nodes, lowest priority (then oldest) first."""
        if self.held + need <= self.budget:
            return True
        victims = sorted((k for k in self.nodes if k not in pinned),
                         key=lambda k: (self.nodes[k].priority, self.nodes[k].tick, -len(k)))
        for k in victims:
            if self.held + need <= self.budget:
                break
            self.held -= self.nodes.pop(k).nbytes
            self.stats["evicted"] += 1
        return self.held + need <= self.budget

    def _keep(self, key: tuple, node: _Node) -> None:
        self._tick += 1
        node.tick = self._tick
        self.nodes[key] = node
        self.held += node.nbytes

    # -- the trie walk ---------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, net: Any, layout: ChainLayout, archs: Sequence[Architecture], recal: list[Batch] | None,
            evals: list[Batch], momentum: float | None, bn: str, measure: Measure,
            objective: Callable[[dict[str, float]], float], key: Any) -> dict[Architecture, dict[str, float]] | None:
        """Metrics of every architecture in ``archs`` (distinct); ``recal`` None: no recalibration."""
        self._validate((key, id(net), _param_versions(net)))
        plan = self.plan(net, layout)
        n = len(plan.steps) - 1
        results: dict[Architecture, dict[str, float]] = {}
        pinned: set[tuple] = set()
        labels = [y for _, y in evals]

        def option_key(o: Any) -> str:
            return "+".join(option_members(o))

        order = sorted(set(archs), key=lambda a: tuple(option_key(o) for o in a.ops))

        def finish(arch: Architecture, start: int, node: _Node) -> None:
            """Plain evaluation of the rest of ``arch``'s path from ``node`` (acts before step ``start``)."""
            net.set_active(arch)
            tail = plan.tails[start]
            if recal is not None:
                recalibrate_bn(tail, [(x, None) for x in node.recal], momentum)
            results[arch] = measure(tail, list(zip(node.eval, labels)), bn)
            node.check()
            if start <= n:
                self.stats["tail_runs"] += 1

        def compute(step: _Step, parent_recal: list[torch.Tensor], parent_eval: list[torch.Tensor]) -> _Node:
            mods = step.modules()
            if recal is not None:
                bns = step.bns()
                saved = [m.momentum for m in bns]
                for m in bns:
                    m.reset_running_stats()
                    m.momentum = momentum
                for m in mods:
                    m.train(True)
                try:
                    r = [step(x) for x in parent_recal]
                finally:
                    for m, mom in zip(bns, saved):
                        m.momentum = mom
            else:
                r = []
            for m in mods:
                m.train(bn == "batch")
            e = [step(x) for x in parent_eval]
            self.stats["steps_run"] += 1
            return _node(r, e)

        def child(j: int, ckey: tuple, parent: _Node | None, rep: Architecture) -> _Node | None:
            """The node after step ``j`` for prefix ``ckey`` (kept, computed, or None if over budget)."""
            got = self.nodes.get(ckey)
            if got is not None:
                self.stats["steps_reused"] += 1
                got.check()
                return got
            need = self._depth_bytes.get(j, 0)
            if not self._evict_for(need, pinned):
                return None
            net.set_active(rep)
            if parent is None:
                node = compute(plan.steps[0], [x for x, _ in recal or []], [x for x, _ in evals])
            else:
                node = compute(plan.steps[j], parent.recal, parent.eval)
                parent.check()
            self._depth_bytes[j] = max(self._depth_bytes.get(j, 0), node.nbytes)
            if not self._evict_for(node.nbytes, pinned):
                return None  # (first node at this depth, larger than what is left)
            self._keep(ckey, node)
            return node

        def visit(j: int, key_: tuple, node: _Node, group: list[Architecture]) -> float:
            """Score ``group`` (archs sharing ``key_``; ``node``: the acts after step ``j``); best objective."""
            best = float("-inf")
            if j == n:
                for arch in group:  # (one: archs are distinct)
                    finish(arch, n + 1, node)
                    best = max(best, objective(results[arch]))
            else:
                for opt, sub_it in itertools.groupby(group, key=lambda a: a.ops[j]):
                    sub = list(sub_it)
                    ckey = key_ + (opt,)
                    c = child(j + 1, ckey, node, sub[0])
                    if c is None:
                        for arch in sub:
                            finish(arch, j + 1, node)
                            best = max(best, objective(results[arch]))
                        continue
                    pinned.add(ckey)
                    try:
                        b = visit(j + 1, ckey, c, sub)
                    finally:
                        pinned.discard(ckey)
                    c.priority = max(c.priority, b)
                    best = max(best, b)
            return best

        root = child(0, (), None, order[0]) if order else None
        if root is None and order:
            return None
        if order:
            pinned.add(())
            root.priority = max(root.priority, visit(0, (), root, order))
            pinned.discard(())
            self._evict_for(0, pinned)
        return results
