"""MACs/accuracy Pareto fronts: the front itself, its hypervolume, a table and a plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nascore.cost import human


def pareto_front(points: Sequence[Any], macs: Any = lambda c: c.macs, acc: Any = lambda c: c.score) -> list[Any]:
    """The non-dominated items (fewer MACs and higher accuracy are better), cheapest first.

    An item is dominated when another has no more MACs and no lower accuracy and is strictly better
    in one; of items equal in both, the first is kept.
    """
    ordered = sorted(points, key=lambda p: (macs(p), -acc(p)))
    front: list[Any] = []
    best = float("-inf")
    for p in ordered:
        if acc(p) > best:
            front.append(p)
            best = acc(p)
    return front


def hypervolume(points: Sequence[tuple[float, float]], ref_macs: float, ref_acc: float = 0.0) -> float:
    """Area dominated by ``(macs, acc)`` points up to the reference ``(ref_macs, ref_acc)``,
    normalised by ``ref_macs`` (so 1.0 = accuracy 1 at zero MACs when accuracies are in [0, 1])."""
    pts = sorted((m, a) for m, a in points if m <= ref_macs and a > ref_acc)
    if not pts or ref_macs <= 0:
        return 0.0
    area, best = 0.0, ref_acc
    for i, (m, a) in enumerate(pts):
        best = max(best, a)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref_macs
        area += (nxt - m) * (best - ref_acc)
    return area / ref_macs


def front_table(rows: Sequence[dict[str, Any]]) -> str:
    """A readable table of front rows ``{macs, acc, arch, carried}``, cheapest first."""
    head = ("MACs", "acc", "carried", "architecture")
    body = [(human(r["macs"]), f"{100 * r['acc']:.2f}%", "yes" if r.get("carried") else "", r["arch"]) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("    " + line for line in lines)


def plot_round(path: Path, r: int, evaluated: Sequence[tuple[float, float]], history: Sequence[dict[str, Any]],
               ref_macs: float) -> Path:
    """``plots/nse_round<r>.png``: this round's evaluated archs, its front, and earlier fronts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    if evaluated:
        ax.scatter([m / 1e6 for m, _ in evaluated], [100 * a for _, a in evaluated], s=10, c="0.75",
                   label=f"round {r}: evaluated")
    n = len(history)
    for i, h in enumerate(history):
        pts = sorted((row["macs"] / 1e6, 100 * row["acc"]) for row in h["front"])
        if not pts:
            continue
        last = i == n - 1
        xs = [p[0] for p in pts] + [ref_macs / 1e6]
        ys = [p[1] for p in pts] + [pts[-1][1]]
        ax.step(xs, ys, where="post", color="tab:red" if last else "tab:blue", alpha=1.0 if last else 0.25 + 0.5 * i / max(n, 1),
                lw=2 if last else 1, label=f"round {h['round']} front (HV {h['hypervolume']:.3f})" if last or i == 0 else None)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color="tab:red" if last else "tab:blue",
                   alpha=1.0 if last else 0.4)
    ax.set_xlabel("MACs (M, fvcore)")
    ax.set_ylabel("supernet accuracy (%)")
    ax.set_title(f"NSE round {r}: MACs / accuracy Pareto front")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    else:  # an empty round (nothing sampled met the constraint) says so instead of an empty legend
        ax.text(0.5, 0.5, f"round {r}: no sampled architecture met the constraint", transform=ax.transAxes,
                ha="center", va="center", color="0.4")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
