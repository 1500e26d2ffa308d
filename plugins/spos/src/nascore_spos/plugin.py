"""Hook implementations of nascore-spos: the ``spos`` and ``spos-testbed`` recipes.

The trainer (``spos``), the evaluator (``accuracy``) and the selectors (``evolution``, ``random``)
SPOS uses live in the nascore core: other methods' recipes (ABS, Cream, RLNAS) train with the same
trainer, and every plugin installs alone on top of the core. Nothing heavy is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nascore import hookimpl

RECIPES = Path(__file__).parent / "recipes"


@hookimpl
def register_recipes(register: Any) -> None:
    register("spos", str(RECIPES / "spos.yaml"),
             summary="SPOS on mnist5k: supernet (shufflenet space) -> evolution under a MACs limit -> export -> retrain")
    register("spos-testbed", str(RECIPES / "spos-testbed.yaml"),
             summary="SPOS on the cost-matched test bed tiny_matched (rank it: nascore rank tiny_matched --run DIR)")
    register("spos-channel", str(RECIPES / "spos-channel.yaml"),
             summary="SPOS block + channel search on mnist5k: each layer's block and mid channels (0.2x..2.0x)")
    register("spos-imagenet", str(RECIPES / "spos-imagenet.yaml"),
             summary="SPOS block + channel search at paper scale: 20-layer ShuffleNetV2 at 224, ImageNet from a local root")
