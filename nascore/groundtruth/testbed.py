"""Test-bed ground truth (every architecture of a tiny space trained standalone) and rank metrics.

``nascore/resources/testbed/<space>_<dataset>.json`` (written by ``benchmarks/make_testbed.py``)
holds, per canonical architecture string, the standalone accuracy averaged over seeds, with its
MACs/params and the metadata of the run that produced it. Method tests compare a supernet's
ranking against it with :func:`kendall_tau` (tau-b, ties handled) and :func:`topk_hit_rate`;
the fixture's ``meta.seed_tau`` is the seed-to-seed tau, i.e. the noise ceiling of any method.
"""

from __future__ import annotations

import importlib.resources
import json
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from nascore.errors import DatasetError


@lru_cache(maxsize=8)
def load_testbed_file(name: str) -> dict[str, Any]:
    """The whole fixture ``name`` (e.g. ``"tiny_chain_mnist5k"``): ``{"meta": ..., "archs": ...}``."""
    res = importlib.resources.files("nascore").joinpath("resources", "testbed", f"{name}.json")
    try:
        return json.loads(res.read_text(encoding="utf-8"))
    except FileNotFoundError:
        folder = importlib.resources.files("nascore").joinpath("resources", "testbed")
        have = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json")) if folder.is_dir() else []
        raise DatasetError(
            f"no test-bed fixture {name!r} (have: {', '.join(have) or 'none'})",
            hint="generate it with `python benchmarks/make_testbed.py --space SPACE`",
        ) from None


def load_testbed(name: str = "tiny_chain_mnist5k", metric: str = "acc") -> dict[str, float]:
    """``{arch string: metric}`` of a fixture; ``metric`` is ``acc`` (eval split, seed mean),
    ``test_acc``, ``macs`` or ``params``."""
    archs = load_testbed_file(name)["archs"]
    return {a: float(v[metric]) for a, v in archs.items()}


def _rank_pairs(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(xs) != len(ys):
        raise ValueError(f"kendall_tau: {len(xs)} x values but {len(ys)} y values")
    return [float(v) for v in xs], [float(v) for v in ys]


def _count_ties(values: Sequence[float]) -> int:
    """Number of tied pairs in sorted ``values``."""
    total, run = 0, 1
    for a, b in zip(values, values[1:]):
        if a == b:
            run += 1
        else:
            total += run * (run - 1) // 2
            run = 1
    return total + run * (run - 1) // 2


def _merge_count(v: list[float]) -> tuple[list[float], int]:
    """Sort ``v`` (merge sort), returning the number of inversions (discordant pairs)."""
    n = len(v)
    if n < 2:
        return v, 0
    left, a = _merge_count(v[: n // 2])
    right, b = _merge_count(v[n // 2 :])
    merged: list[float] = []
    swaps = a + b
    i = j = 0
    while i < len(left) and j < len(right):
        if right[j] < left[i]:
            merged.append(right[j])
            swaps += len(left) - i
            j += 1
        else:
            merged.append(left[i])
            i += 1
    merged.extend(left[i:])
    merged.extend(right[j:])
    return merged, swaps


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Kendall's tau-b of two aligned sequences (Knight's O(n log n); ties as in scipy).

    NaN if fewer than 2 items or either side is constant (tau-b is undefined there).
    """
    x, y = _rank_pairs(xs, ys)
    n = len(x)
    if n < 2:
        return math.nan
    pairs = sorted(zip(x, y))
    n0 = n * (n - 1) // 2
    n1 = _count_ties([p[0] for p in pairs])  # ties in x
    n3 = _count_ties(pairs)  # joint ties: runs of equal (x, y) in the sorted pairs
    sorted_y, swaps = _merge_count([p[1] for p in pairs])  # y ordered by (x, y): inversions = discordant
    n2 = _count_ties(sorted_y)
    denom = math.sqrt((n0 - n1) * (n0 - n2))
    if denom == 0:
        return math.nan
    return (n0 - n1 - n2 + n3 - 2 * swaps) / denom


def topk_hit_rate(pred: Sequence[float], truth: Sequence[float], k: int) -> float:
    """Share of the ``k`` best by ``pred`` that are among the ``k`` best by ``truth`` (higher = better).

    Items tied with the k-th best true value all count as top-k (a tie is not a miss); ties in
    ``pred`` at the cut are broken by position.
    """
    p, t = _rank_pairs(pred, truth)
    if not 0 < k <= len(p):
        raise ValueError(f"k must be in 1..{len(p)}, got {k}")
    chosen = sorted(range(len(p)), key=lambda i: (-p[i], i))[:k]
    cut = sorted(t, reverse=True)[k - 1]
    return sum(1 for i in chosen if t[i] >= cut) / k


def align(pred: Mapping[str, float], truth: Mapping[str, float]) -> tuple[list[float], list[float]]:
    """Two aligned lists over the keys both mappings have (e.g. a method's scores vs the fixture)."""
    keys = [k for k in truth if k in pred]
    return [float(pred[k]) for k in keys], [float(truth[k]) for k in keys]
