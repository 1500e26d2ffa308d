"""Width cost tables vs fvcore at ImageNet size: ``python benchmarks/width_cost.py [--archs 18]``.

Builds the SPOS ImageNet block + channel space (20 layers, scales 0.2..1.6, 224x224), times the
cost table, and checks it against fvcore on the all-min and all-max architectures plus random ones.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from nascore.arch import Architecture
from nascore.builtin.shufflenet import SPOS_IMAGENET, ShuffleNetSpace
from nascore.cost import check_table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", type=int, default=18)
    args = ap.parse_args()
    torch.set_num_threads(1)
    scales = [round(0.2 * i, 1) for i in range(1, 9)]
    space = ShuffleNetSpace(**SPOS_IMAGENET, channel_scales=scales, input_shape=(3, 224, 224), num_classes=1000)
    t = time.time()
    table = space.cost_table()
    print(f"table built in {time.time() - t:.2f} s")
    rng = random.Random(0)
    archs = [Architecture([d.options[0] for d in space.decisions]), Architecture([d.options[-1] for d in space.decisions])]
    archs += [space.sample(rng) for _ in range(args.archs)]
    t = time.time()
    rows = check_table(space, archs)
    print(f"check_table {time.time() - t:.1f} s: {sum(r['ok'] for r in rows)}/{len(rows)} exact, MACs "
          f"{min(r['fvcore_macs'] for r in rows):,}..{max(r['fvcore_macs'] for r in rows):,}")
    t = time.time()
    for a in archs:
        table.cost(a)
    print(f"cost(): {(time.time() - t) / len(archs) * 1e6:.0f} us per architecture")


if __name__ == "__main__":
    main()
