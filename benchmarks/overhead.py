"""Overhead of a nascore supernet training step vs a plain hand-written PyTorch loop.

    python benchmarks/overhead.py                 # ~1.5-3 min on one CPU thread
    python benchmarks/overhead.py --steps 10 --reps 3

Both sides train the ShuffleNet space (``shufflenet`` defaults: 20 layers × 4 SPOS blocks) at
3×32×32, batch 64, on one thread, with the same math: cross-entropy with label smoothing 0.1,
gradient-norm clipping at 5, SGD momentum 0.9 with weight decay 4e-5 on conv/linear weights only.

* **nascore**: ``SposTrainer.fit`` — the whole loop a user runs (uniform path sampling from the
  seeded RNG, ``set_active`` on the ChoiceLayers, LR schedule, forward/backward, clearing the grads
  of unused ops, clipping, the step, metrics, progress), reading batches from ``ctx.data``.
* **plain**: what one writes by hand for SPOS: an ``nn.Module`` holding a ``ModuleList`` of the
  candidate blocks per layer (deep copies of the supernet's, so identical weights and the same
  block code) whose ``forward(x, choice)`` indexes ``blocks[i][choice[i]]``; a ``for`` loop of
  ``zero_grad(set_to_none=True)``, forward, loss, backward, clip, ``step``. It trains **the same
  sequence of paths** (recorded from the nascore sampler, handed over as index lists, so the plain
  loop spends no time sampling) on **the same batches** (pre-gathered into a list, so it spends no
  time indexing data). Switching the path by indexing is how a hand-written supernet loop does it;
  building a standalone child per path would be a strawman (every path is new in a 4^20 space).
  Unused blocks get no gradient (``set_to_none``), so SGD skips them exactly as in nascore.

Each repetition runs ``--steps`` steps of each side back to back (the order alternates), each with
a fresh optimizer. A nascore repetition is one whole ``fit``, so its fixed costs (building the
optimizer, the end-of-stage checkpoint's ``state_dict``, ~20 ms on this supernet) are included and
amortised over ``--steps`` steps only (in a real run: over thousands). The table shows median
images/s and the median of the per-repetition ratios, printed alone as ``ratio X.XX`` (nascore ÷
plain; 1.00 = no overhead). Sampling cost is timed separately over many draws per sampler, and so
is nascore's per-step bookkeeping (sample + ``set_active`` + clearing unused grads), which is the
noise-free part of the overhead.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "spos" / "src"))


class PlainSupernet(nn.Module):
    """A hand-written SPOS supernet: the same modules, path chosen by indexing."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.stem = copy.deepcopy(net.stem)
        self.blocks = nn.ModuleList(
            nn.ModuleList(copy.deepcopy(m) for m in layer.candidates.values()) for layer in net.layers
        )
        self.last_conv = copy.deepcopy(net.last_conv)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = copy.deepcopy(net.dropout)
        self.classifier = copy.deepcopy(net.classifier)

    def forward(self, x: torch.Tensor, choice: list[int]) -> torch.Tensor:
        x = self.stem(x)
        for blocks, c in zip(self.blocks, choice):
            x = blocks[c](x)
        x = self.pool(self.last_conv(x)).flatten(1)
        return self.classifier(self.dropout(x))


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": decay}, {"params": rest, "weight_decay": 0.0}]


def plain_steps(model: PlainSupernet, batches: list[tuple[torch.Tensor, torch.Tensor]], paths: list[list[int]],
                lr: float) -> None:
    opt = torch.optim.SGD(param_groups(model), lr=lr, momentum=0.9, weight_decay=4e-5)
    model.train()
    for (x, y), choice in zip(batches, paths):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, choice), y, label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 5.0)
        opt.step()


def make_ctx(steps: int, batch: int, sampler: str = "uniform") -> Any:
    import nascore_spos.plugin as plugin
    from nascore.registry import build_registry
    from nascore.pipeline.run import open_run

    reg = build_registry(load_entry_points=False, extra=[(plugin, "spos")])
    cfg = {
        "name": "overhead", "seed": 0, "device": "cpu",
        "space": {"name": "shufflenet"},
        "dataset": {"name": "synthetic", "options": {"shape": [3, 32, 32], "size": 4 * batch * steps, "test_size": 0}},
        "data": {"batch_size": batch, "val_fraction": 0.05, "archval_fraction": 0.05},
        "checkpoint_every": 10**9, "log_every": 10**9,
        "stages": [{"kind": "train", "trainer": {"name": "spos", "options": {
            "sampler": sampler, "epochs": 1, "steps_per_epoch": steps, "lr": 0.05, "schedule": "constant"}}}],
    }
    ctx = open_run(cfg, run_dir=None, registry=reg, quiet=True)
    ctx.stage_key = "0"
    return ctx


def sample_cost(sampler: str, draws: int) -> float:
    """Milliseconds per ``sample_arch`` call of the spos trainer on the ShuffleNet space."""
    from nascore_spos.trainer import SposConfig, SposTrainer

    ctx = make_ctx(1, 8, sampler)
    tr = SposTrainer(SposConfig(sampler=sampler), ctx)
    tr.rng = random.Random(0)
    tr.setup(ctx)
    for _ in range(200):
        tr.sample_arch(ctx)
    t = time.perf_counter()
    for _ in range(draws):
        tr.sample_arch(ctx)
    return (time.perf_counter() - t) / draws * 1e3


def bookkeeping_cost(ctx: Any, draws: int) -> float:
    """Milliseconds per step of what nascore adds around the math: sample a path, activate it in
    the ChoiceLayers, list the unused candidates' parameters (whose grads are then cleared)."""
    from nascore_spos.trainer import SposConfig, SposTrainer

    tr = SposTrainer(SposConfig(), ctx)
    tr.rng = random.Random(0)
    net = ctx.supernet
    t = time.perf_counter()
    for _ in range(draws):
        arch = tr.sample_arch(ctx)
        net.set_active(arch)
        tr.clear_inactive_grads(ctx, arch)
    return (time.perf_counter() - t) / draws * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="training steps per side per repetition")
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--draws", type=int, default=20000, help="sampler calls timed per sampler")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from nascore_spos.trainer import SposTrainer

    ctx = make_ctx(args.steps, args.batch)
    trainer = ctx.build("trainer", ctx.cfg.stages[0].trainer, "stages[0].trainer")
    assert isinstance(trainer, SposTrainer)
    net = ctx.supernet
    plain = PlainSupernet(net)
    # the path sequence fit() will train (its RNG is reseeded from the stage seed at every fit)
    rec = SposTrainer(trainer.cfg, ctx)
    rec.rng = random.Random(ctx.stage_seed("sampler"))
    paths = []
    for _ in range(args.steps):
        arch = rec.sample_arch(ctx)
        paths.append([ctx.space.decisions[i].options.index(o) for i, o in enumerate(arch.ops)])
    batches = list(ctx.data.batches("train", epoch=0, limit=args.steps))
    assert len(batches) == args.steps, "not enough data for --steps"
    print(f"{ctx.space.describe()}; input {tuple(ctx.data.input_shape)}, batch {args.batch}, "
          f"{args.steps} steps x {args.reps} reps per side, torch {torch.__version__}, 1 thread", flush=True)

    def run_nascore() -> float:
        t = time.perf_counter()
        trainer.step = 0
        trainer.fit(ctx)
        return args.steps * args.batch / (time.perf_counter() - t)

    def run_plain() -> float:
        t = time.perf_counter()
        plain_steps(plain, batches, paths, 0.05)
        return args.steps * args.batch / (time.perf_counter() - t)

    run_nascore(), run_plain()  # warm-up (allocator, first-call costs)
    ours, theirs, ratios = [], [], []
    for rep in range(args.reps):
        if rep % 2 == 0:
            a = run_nascore()
            b = run_plain()
        else:
            b = run_plain()
            a = run_nascore()
        ours.append(a)
        theirs.append(b)
        ratios.append(a / b)
        print(f"  rep {rep}: nascore {a:7.1f} img/s   plain {b:7.1f} img/s   ratio {a / b:.3f}", flush=True)

    samplers = {s: sample_cost(s, args.draws) for s in ("uniform", "flops_binned", "fair")}
    book = bookkeeping_cost(ctx, max(args.draws // 10, 100))
    rows = [("loop", "images/s (median)", "ms/step"),
            ("plain PyTorch", f"{statistics.median(theirs):.1f}", f"{1e3 * args.batch / statistics.median(theirs):.1f}"),
            ("nascore spos", f"{statistics.median(ours):.1f}", f"{1e3 * args.batch / statistics.median(ours):.1f}")]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print()
    for r in rows:
        print("  ".join(v.ljust(w[i]) for i, v in enumerate(r)))
    print()
    print("path sampling (ms per path): " + ", ".join(f"{k} {v:.4f}" for k, v in samplers.items()))
    print(f"sampling {samplers['uniform']:.4f} ms per path (uniform; target <= 0.1)")
    print(f"bookkeeping {book:.3f} ms per step (sample + set_active + clear unused grads), "
          f"{100 * book / (1e3 * args.batch / statistics.median(theirs)):.2f}% of a plain step")
    print(f"ratio {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
