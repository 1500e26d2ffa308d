"""TNAS's operation tree: per decision, a tree whose leaves are ops and whose inner nodes are groups.

A node is an op name (a leaf: the decision is made) or a tuple of child nodes (a group: the
decision still holds the union of its leaves, run as a mixed op). One level of the architecture
tree replaces the node of each expanded decision by one of its children. Trees come from

* :func:`alpha_tree` — the official code's default (``grouping: alpha``): after a warm-up of the
  mixed-op supernet, per edge keep the ops with α > 0, leave ``none`` out, sort by α and group as
  ``[top-2, rest]`` (``get_groups_from_alphas`` in ``search-cell-tnas.py``);
* :func:`fixed_tree` — a hand-written binary tree, from the config or :data:`NB201_TREE`:
  (conv1x1 | conv3x3) | (skip | avg-pool), the fixed grouping in the official config's comment.
  Like the code's α grouping it leaves ``none`` out (ops that are not leaves are pruned from the
  search); give a tree with ``none`` to search it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

from nascore.errors import ConfigError

Node = Union[str, tuple]

# The fixed binary operation tree of the official config's comment: convs vs parameter-free ops;
# ``none`` is not a leaf, so it is pruned (as the code's α grouping never groups it).
NB201_TREE: Node = (("nor_conv_1x1", "nor_conv_3x3"), ("skip_connect", "avg_pool_3x3"))
NB201_PRUNED = ("none",)


def leaves(node: Node) -> tuple[str, ...]:
    """The ops under ``node`` (in tree order)."""
    if isinstance(node, str):
        return (node,)
    return tuple(op for child in node for op in leaves(child))


def children(node: Node) -> tuple[Node, ...]:
    """The nodes one level below ``node`` (a leaf has none)."""
    return () if isinstance(node, str) else tuple(node)


def is_leaf(node: Node) -> bool:
    return isinstance(node, str)


def depth(node: Node) -> int:
    """Levels needed to reach a leaf on the longest branch (0 for a leaf)."""
    return 0 if isinstance(node, str) else 1 + max(depth(c) for c in node)


def normalize(node: Any) -> Node:
    """Lists become tuples; groups with one child collapse into that child."""
    if isinstance(node, str):
        return node
    if not isinstance(node, (list, tuple)) or not node:
        raise ConfigError([f"operation tree: a node is an op name or a non-empty list of nodes, got {node!r}"],
                          source="tnas options")
    kids = tuple(normalize(c) for c in node)
    return kids[0] if len(kids) == 1 else kids


def prune(node: Node, keep: set[str]) -> Node | None:
    """``node`` with only the ops in ``keep`` (empty groups removed, singletons collapsed)."""
    if isinstance(node, str):
        return node if node in keep else None
    kids = tuple(k for k in (prune(c, keep) for c in node) if k is not None)
    if not kids:
        return None
    return kids[0] if len(kids) == 1 else kids


def balanced(ops: Sequence[str]) -> Node:
    """A balanced binary tree over ``ops`` in their order (the default for unknown op sets)."""
    ops = tuple(ops)
    if len(ops) == 1:
        return ops[0]
    half = (len(ops) + 1) // 2
    return (balanced(ops[:half]), balanced(ops[half:]))


def fixed_tree(allowed: Sequence[str], tree: Any = None, decision: str = "") -> Node:
    """The operation tree of one decision: ``tree`` (or the default) restricted to ``allowed``.

    Without ``tree``: :data:`NB201_TREE` over the NB201 ops (``none`` pruned), a balanced binary
    tree over any other ops. Allowed ops that are not leaves of a given tree are pruned from the search (as the
    official code prunes ops whose α ≤ 0); an op may appear only once.
    """
    if tree is None:
        known = prune(NB201_TREE, set(allowed))
        rest = [o for o in allowed if o not in set(leaves(NB201_TREE)) and o not in NB201_PRUNED]
        if known is None:
            return balanced(rest or list(allowed))
        return known if not rest else (known, balanced(rest))
    node = normalize(tree)
    ops = leaves(node)
    dup = sorted({o for o in ops if ops.count(o) > 1})
    where = f" of decision {decision}" if decision else ""
    if dup:
        raise ConfigError([f"operation tree: op(s) {dup} appear more than once in {list_form(node)}"], source="tnas options")
    pruned = prune(node, set(allowed))
    if pruned is None:
        raise ConfigError([f"operation tree {list_form(node)} holds none of the allowed ops{where} ({list(allowed)})"],
                          source="tnas options")
    return pruned


def unknown_ops(tree: Any, ops: Sequence[str]) -> list[str]:
    """Leaves of ``tree`` that are not ops of the space (typos)."""
    return [o for o in leaves(normalize(tree)) if o not in set(ops)]


def alpha_tree(allowed: Sequence[str], alpha: dict[str, float], top: int = 2) -> Node:
    """The official code's α grouping for one edge (see module docstring).

    Ops with α ≤ 0 are pruned, ``none`` is never grouped (it is only kept when nothing else has a
    positive α); the rest, sorted by α, become ``(top-2 group, rest group)``, or single leaves when
    two or fewer remain.
    """
    positive = [o for o in allowed if alpha.get(o, 0.0) > 0 and o != "none"]
    ranked = sorted(positive, key=lambda o: (-alpha[o], allowed.index(o)))
    if not ranked:
        if "none" in allowed:
            return "none"
        return max(allowed, key=lambda o: (alpha.get(o, 0.0), -list(allowed).index(o)))
    if len(ranked) > top:
        return normalize((tuple(ranked[:top]), tuple(ranked[top:])))
    return normalize(tuple(ranked))


def list_form(node: Node) -> Any:
    """JSON-able form (nested lists) of a node."""
    return node if isinstance(node, str) else [list_form(c) for c in node]
