"""DNA's exhaustive cell ranking with and without prefix sharing, in one process, on dna-imagenet.

The recipe's smoke setting: the 19-layer DNA student at 224x224 on fake data, batch 2 (one
recalibration and one evaluation batch, as ``--smoke`` sets), a random EfficientNet-B7 teacher.
For each cell asked for, ``block_distill``'s ``block_table`` scores every candidate twice: by the
prefix walk (``share_prefixes: true``, the default) and by the per-candidate path it replaces
(``share_prefixes: false``, each candidate re-runs its whole cell); it checks that the two tables
are identical and prints the times, the layer passes and the ratio.

    python benchmarks/dna_prefix.py                    # cells 0, 1 and 5 (~1.5 min on 1 loaded thread)
    python benchmarks/dna_prefix.py --cells 0 1 2 3 4 5   # every cell (the per-candidate path: ~5 min)
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[0, 1, 5])
    ap.add_argument("--side", type=int, default=224, help="input resolution (the recipe's: 224)")
    ap.add_argument("--batch", type=int, default=2, help="recalibration/evaluation batch size")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import nascore_dna.plugin as plugin
    from nascore.config import apply_overrides, load_yaml
    from nascore.testing import make_context, make_registry
    from nascore_dna.evaluator import BlockDistillConfig, BlockDistillEvaluator

    reg = make_registry(plugin)
    data = load_yaml(reg.get("recipe", "dna-imagenet").factory)
    data = apply_overrides(data, [
        f"dataset={{name: fake, options: {{shape: [3, {args.side}, {args.side}], size: 48, test_size: 8}}}}",
        f"data.batch_size={args.batch}", f"data.eval_batch_size={args.batch}", "data.num_workers=0",
        "stages.0.trainer.options.teacher_weights=null"])
    ctx = make_context(data, registry=reg, smoke=True)
    ctx.stage_key = "1"
    opts = {**data["stages"][1]["evaluator"]["options"], "teacher": "torchvision:efficientnet_b7"}
    t0 = time.perf_counter()
    fast = BlockDistillEvaluator(BlockDistillConfig(**opts), ctx)
    blocks = fast.prepare(ctx)[0]
    prep = time.perf_counter() - t0
    plain = BlockDistillEvaluator(BlockDistillConfig(**opts, share_prefixes=False), ctx)
    plain._blocks, plain._teacher, plain._recal, plain._eval = fast._blocks, fast._teacher, fast._recal, fast._eval
    cells = sorted(set(args.cells))
    keep = {d for b in cells for d in blocks.decisions[b]}
    # cells not asked for: one candidate each (block_table scores every cell of the space)
    ctx.space = ctx.space.restrict({d: ctx.space.allowed[d][:1] for d in range(len(ctx.space.decisions)) if d not in keep})
    n_cand = [len(fast.block_keys(ctx, b)) for b in cells]

    t0 = time.perf_counter()
    got = fast.block_table(ctx)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    want = plain.block_table(ctx)
    t_plain = time.perf_counter() - t0
    same = all(got[b] == want[b] for b in cells)
    passes_plain = sum(n * len(blocks.decisions[b]) for b, n in zip(cells, n_cand))
    print(f"dna-imagenet cells {cells} at {args.side}x{args.side}, batch {args.batch} (1 recal + 1 eval batch), "
          f"{sum(n_cand):,} candidates ({', '.join(f'{n:,}' for n in n_cand)}); teacher features {prep:.1f}s")
    print(f"  per-candidate path: {t_plain:7.1f}s  {passes_plain:6,} choice-layer passes")
    print(f"  prefix walk:        {t_fast:7.1f}s  {fast.stats['nodes'] + fast.stats['leaves']:6,} step passes "
          f"({fast.stats['nodes']:,} prefixes kept, {fast.stats['leaves']:,} leaves, {fast.stats['plain']} per candidate)")
    print(f"  speed-up: {t_plain / t_fast:.2f}x   tables identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
