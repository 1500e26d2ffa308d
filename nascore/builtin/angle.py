"""The ``angle`` evaluator (ABS, RLNAS): how far an architecture's weights moved from initialisation.

``angle(a) = arccos(cos_sim(V(a, W0), V(a, Wt)))`` where ``V(a, W)`` is the weight vector of
architecture ``a`` built from the supernet weights ``W``; ``W0`` is the supernet at
initialisation (:attr:`nascore.roles.Context.initial_weights`, recorded before any training) and
``Wt`` the current weights. A larger angle ranks higher. The evaluator reads no data at all (no
images, no labels), which is what lets RLNAS search without labelled data.

How ``V`` is built (ABS, Hu et al. 2020, §3.3 and Algorithm 1; RLNAS ``weight_angle.py``):

* **chain** spaces (``tiny_chain``, ``mobilenet``, ``shufflenet``, …): the path's parameters in the
  supernet's documented order (:meth:`nascore.space.Supernet.active_parameters`) — fixed layers
  and the chosen op of every layer — flattened and concatenated; normalisation-layer parameters
  are left out; a parameter-free op (identity/``skip``) appends nothing.
* **cell** spaces (``nb201``, ``tiny_cell``; "block-like weight vector construction"): the fixed
  layers (stem, reduction blocks, classifier), then, for every input→output path of the cell DAG
  and every cell of the network, the concatenated weights of the path's edges: a convolution
  appends its weights, ``skip_connect`` appends nothing, ``avg_pool_kxk`` appends a constant
  ``C×k×k`` kernel of ``1/k²`` (the same in W0 and Wt), and ``none`` cuts the path (it appends
  nothing). An architecture whose every path is cut has angle 0.

Options: ``bias`` (conv/linear biases in, the default; the ABS chain code uses weights only),
``norm_params`` (normalisation affine parameters in; the RLNAS NB-201 code keeps the stem and
reduction BN) and ``fixed`` (default true, the papers' construction; false leaves the fixed layers
out — on small supernets they train at every step, rotate most, and make the angle favour
architectures with fewer parameterised ops, see the nascore-abs README).

Because the angle only needs ``<V0, Vt>``, ``|V0|²`` and ``|Vt|²``, and ``V`` is a concatenation
of (possibly repeated) parameter tensors, the evaluator computes those three sums per parameter
once per call and adds them up per architecture — thousands of architectures per second on a
CPU. :func:`weight_vectors` builds the explicit vectors (the reference the tests check the fast
path against).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from nascore.arch import Architecture, option_members
from nascore.errors import NascoreError
from nascore.hookspecs import hookimpl
from nascore.space import Supernet, Zero

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
)
POOL_TYPES: tuple[type[nn.Module], ...] = (nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd)


class AngleConfig(BaseModel):
    """Options of the ``angle`` evaluator."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["auto", "chain", "cell"] = Field(
        "auto", description="vector construction: auto = cell for NB201-like cell spaces, else chain")
    bias: bool = Field(
        True, description="include conv/linear biases (the ABS chain code uses weights only; RLNAS NB201 keeps the classifier bias)")
    norm_params: bool = Field(
        False, description="include BatchNorm/LayerNorm affine parameters (RLNAS NB201 code keeps the stem/reduction BN; ABS drops them)")
    fixed: bool = Field(
        True, description="include the fixed layers (stem, reductions, head) as the papers do; false: only the chosen ops' weights")


Stats = tuple[float, float, float]  # (<w0, wt>, |w0|², |wt|²)


def _add(a: Stats, b: Stats, times: int = 1) -> Stats:
    return (a[0] + times * b[0], a[1] + times * b[1], a[2] + times * b[2])


def angle_from_stats(s: Stats) -> float:
    """arccos of the cosine similarity; 0 for an empty vector or a zero vector."""
    dot, n0, nt = s
    if n0 <= 0.0 or nt <= 0.0:
        return 0.0
    cos = dot / math.sqrt(n0 * nt)
    return math.acos(min(1.0, max(-1.0, cos)))


def _cell_space(space: Any) -> bool:
    return hasattr(space, "edges") and hasattr(space, "nodes")


def cell_paths(nodes: int) -> list[list[int]]:
    """Every input→output node sequence of a cell DAG where node ``i`` takes every ``j < i``."""
    out: list[list[int]] = []

    def walk(path: list[int]) -> None:
        last = path[-1]
        if last == nodes - 1:
            out.append(path)
            return
        for nxt in range(last + 1, nodes):
            walk(path + [nxt])

    walk([0])
    return out


class VectorLayout:
    """Which parameters (by name) make up ``V(arch)`` for one supernet, and how often.

    ``parts(arch)`` yields ``(name, times)`` for parameter tensors and ``(("const", n, value),
    times)`` for constant pooling kernels (``n`` elements equal to ``value``), in vector order.
    """

    def __init__(self, net: Supernet, cfg: AngleConfig) -> None:
        self.net = net
        self.cfg = cfg
        space = net.space
        mode = cfg.mode
        if mode == "auto":
            mode = "cell" if _cell_space(space) else "chain"
        if mode == "cell" and not _cell_space(space):
            raise NascoreError(
                f"angle mode 'cell' needs a cell space (with edges and nodes); {space.name!r} is a chain",
                hint="use mode: auto or chain",
            )
        self.mode = mode
        self.names = {id(p): n for n, p in net.named_parameters()}
        skip: set[int] = set()
        for m in net.modules():
            if isinstance(m, NORM_TYPES) and not cfg.norm_params:
                skip.update(id(p) for p in m.parameters(recurse=False))
        if not cfg.bias:
            skip.update(id(p) for n, p in net.named_parameters() if n.endswith("bias"))
        choice_ids: set[int] = set()
        for d in range(len(space.decisions)):
            for layer in net.choice_layers(d):
                choice_ids.update(id(p) for p in layer.parameters())
        if not cfg.fixed:
            skip.update(id(p) for p in net.parameters() if id(p) not in choice_ids)
        self.skip = skip
        if mode == "cell":
            self.paths = cell_paths(space.nodes)
            self.edge_index = {tuple(e): d for d, e in enumerate(space.edges)}
            self.fixed = [n for n, p in net.named_parameters() if id(p) not in choice_ids and id(p) not in skip]
            self.n_cells = len(net.choice_layers(0)) if space.decisions else 0
            self._cand_cache: dict[tuple[int, int, str], list[tuple[Any, int]] | None] = {}

    # -- chain ---------------------------------------------------------------------------------
    def _chain_parts(self, arch: Architecture) -> Iterator[tuple[Any, int]]:
        for name, p in self.net.active_parameters(arch):
            if id(p) not in self.skip:
                yield name, 1

    # -- cell ----------------------------------------------------------------------------------
    def _cell_channels(self, cell: int, layer: nn.Module) -> int:
        space = self.net.space
        if hasattr(space, "stage_channels") and hasattr(space, "n_cells"):
            return int(space.stage_channels()[cell // space.n_cells])
        for p in layer.parameters():
            if p.dim() >= 2:
                return int(p.shape[0])
        raise NascoreError(
            f"angle: cannot tell the channels of cell {cell} for the constant pooling kernel",
            hint="give the space stage_channels() and n_cells, or add a parameterised op to the edge",
        )

    def _edge_parts(self, cell: int, d: int, op: str) -> list[tuple[Any, int]] | None:
        """The vector parts of op ``op`` on edge ``d`` of cell ``cell``; None if it cuts the path."""
        key = (cell, d, op)
        if key in self._cand_cache:
            return self._cand_cache[key]
        layer = self.net.choice_layers(d)[cell]
        cand = layer.candidates[op]
        parts: list[tuple[Any, int]] | None
        if op == "none" or isinstance(cand, Zero):
            parts = None
        else:
            parts = [(self.names[id(p)], 1) for p in cand.parameters() if id(p) not in self.skip]
            if not any(True for _ in cand.parameters()):
                pools = [m for m in cand.modules() if isinstance(m, POOL_TYPES)]
                if pools:
                    k = pools[0].kernel_size
                    area = math.prod(k) if isinstance(k, (tuple, list)) else int(k) ** 2
                    c = self._cell_channels(cell, layer)
                    parts = [(("const", c * area, 1.0 / area), 1)]
        self._cand_cache[key] = parts
        return parts

    def _cell_parts(self, arch: Architecture) -> Iterator[tuple[Any, int]] | None:
        for opt in arch.ops:
            if not isinstance(opt, str):
                raise NascoreError(
                    f"angle's cell construction takes one op per edge, got the set {sorted(opt)}",
                    hint="score single-op cells, or use mode: chain (concatenates every chosen op)",
                )
        out: list[tuple[Any, int]] = []
        live = 0
        for path in self.paths:
            edges = [self.edge_index[(path[k], path[k - 1])] for k in range(1, len(path))]
            if any(arch.ops[d] == "none" for d in edges):
                continue
            cut = False
            for cell in range(self.n_cells):
                for d in edges:
                    parts = self._edge_parts(cell, d, arch.ops[d])
                    if parts is None:
                        cut = True
                        break
                    out.extend(parts)
                if cut:
                    break
            if not cut:
                live += 1
        if live == 0:
            return None
        return iter([(n, 1) for n in self.fixed] + out)

    def parts(self, arch: Architecture) -> Iterator[tuple[Any, int]] | None:
        """The vector's parts for ``arch``; None when every path is cut (angle 0)."""
        if self.mode == "chain":
            return self._chain_parts(arch)
        return self._cell_parts(arch)


def _param_stats(net: nn.Module, w0: Mapping[str, torch.Tensor], names: set[str]) -> dict[str, Stats]:
    """``(<w0, wt>, |w0|², |wt|²)`` per parameter name, in float64, one device sync."""
    params = dict(net.named_parameters())
    missing = [n for n in names if n not in w0]
    if missing:
        raise NascoreError(
            f"angle: the initial weights lack {len(missing)} parameter(s) of the supernet, e.g. {missing[0]!r}",
            hint="W0 must come from the same space and options; start a new run (or delete checkpoints/w0.pt)",
        )
    order = sorted(names)
    if not order:
        return {}
    rows = []
    with torch.no_grad():
        for n in order:
            wt = params[n].detach().reshape(-1).double()
            a = w0[n].reshape(-1).to(wt.device, torch.float64)
            rows.append(torch.stack([torch.dot(a, wt), torch.dot(a, a), torch.dot(wt, wt)]))
        values = torch.stack(rows).cpu().tolist()
    return {n: (v[0], v[1], v[2]) for n, v in zip(order, values)}


class AngleEvaluator:
    """Scores architectures by the angle of their weight vector between W0 and now (no data read)."""

    metric = "angle"
    higher_is_better = True

    def __init__(self, cfg: AngleConfig | None = None, ctx: Any = None) -> None:
        self.cfg = cfg or AngleConfig()
        self._layout: VectorLayout | None = None
        self._stats_key: Any = None
        self._stats_w0: Any = None
        self._stats: dict[str, Stats] = {}
        self.evaluations = 0

    def layout(self, net: Supernet) -> VectorLayout:
        if self._layout is None or self._layout.net is not net:
            self._layout = VectorLayout(net, self.cfg)
            self._stats_key = None
        return self._layout

    def angles(self, net: Supernet, w0: Mapping[str, torch.Tensor], archs: Sequence[Architecture]) -> list[float]:
        """The angle of each architecture between weights ``w0`` (by name) and ``net``'s current ones."""
        layout = self.layout(net)
        key = tuple(p._version for p in net.parameters())  # bumped by every in-place update
        if key != self._stats_key or w0 is not self._stats_w0:
            names = {n for n, p in net.named_parameters() if id(p) not in layout.skip}
            self._stats = _param_stats(net, w0, names)
            self._stats_key, self._stats_w0 = key, w0
        out = []
        for arch in archs:
            parts = layout.parts(arch)
            if parts is None:
                out.append(0.0)
                continue
            total: Stats = (0.0, 0.0, 0.0)
            for part, times in parts:
                if isinstance(part, tuple):  # constant pooling kernel: n elements equal to value
                    _, n, value = part
                    s = n * value * value
                    total = _add(total, (s, s, s), times)
                else:
                    total = _add(total, self._stats[part], times)
            out.append(angle_from_stats(total))
        self.evaluations += len(archs)
        return out

    def score(self, archs: Sequence[Architecture], ctx: Any) -> list[dict[str, float]]:
        return [{"angle": a} for a in self.angles(ctx.supernet, ctx.initial_weights, archs)]


def weight_vectors(
    net: Supernet, w0: Mapping[str, torch.Tensor], arch: Architecture, cfg: AngleConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The explicit vectors ``(V(arch, W0), V(arch, Wt))`` (float64), in construction order.

    The evaluator never builds them (it sums per-parameter dot products instead); tests and
    anyone inspecting the construction do. Both are empty when every path is cut.
    """
    layout = VectorLayout(net, cfg or AngleConfig())
    params = dict(net.named_parameters())
    a: list[torch.Tensor] = []
    b: list[torch.Tensor] = []
    parts = layout.parts(arch)
    for part, times in parts or []:
        for _ in range(times):
            if isinstance(part, tuple):
                _, n, value = part
                const = torch.full((n,), value, dtype=torch.float64)
                a.append(const)
                b.append(const.clone())
            else:
                a.append(w0[part].reshape(-1).double().cpu())
                b.append(params[part].detach().reshape(-1).double().cpu())
    empty = torch.zeros(0, dtype=torch.float64)
    return (torch.cat(a) if a else empty), (torch.cat(b) if b else empty)


def make_angle(cfg: AngleConfig, ctx: Any = None) -> AngleEvaluator:
    """The angle metric between the supernet's initial and current weights (reads no data)."""
    return AngleEvaluator(cfg, ctx)


@hookimpl
def register_evaluators(register: Any) -> None:
    register("angle", make_angle, config=AngleConfig,
             summary="ABS/RLNAS angle between a path's initial and current weights (larger = better; reads no data)")
