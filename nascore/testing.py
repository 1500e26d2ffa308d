"""Helpers for testing nascore and plugins (opt in with ``pytest_plugins = ["nascore.testing"]``).

Tests never depend on what happens to be pip-installed: :func:`make_registry` builds a registry of
the built-ins plus exactly the plugin modules a test names, through the same loading code the CLI
uses; :func:`run_config` runs a whole pipeline into a temporary folder with it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from nascore.registry import Registry, build_registry


def make_registry(*plugins: ModuleType | tuple[ModuleType, str]) -> Registry:
    """Built-ins plus ``plugins`` (modules of hookimpls), no entry points."""
    extra = [(p, p.__name__) if isinstance(p, ModuleType) else p for p in plugins]
    return build_registry(load_entry_points=False, extra=extra)


def run_config(
    data: dict[str, Any], run_dir: Path | None, *, plugins: Iterable[ModuleType] = (), smoke: bool = False,
    registry: Registry | None = None,
) -> Any:
    """Validate and run ``data`` (a config dict); returns the finished context (a ``nascore.pipeline.context.RunContext``)."""
    from nascore.pipeline.run import open_run, run_pipeline

    reg = registry or make_registry(*plugins)
    ctx = open_run(data, run_dir=run_dir, registry=reg, smoke=smoke, quiet=True, overwrite=True)
    try:
        run_pipeline(ctx)
    finally:
        ctx.log.close()
    return ctx


def make_context(data: dict[str, Any], *, plugins: Iterable[ModuleType] = (), run_dir: Path | None = None) -> Any:
    """A RunContext for ``data`` without running any stage (unit tests of components)."""
    from nascore.pipeline.run import open_run

    return open_run(data, run_dir=run_dir, registry=make_registry(*plugins), quiet=True, overwrite=True)


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A minimal valid config on the tiny chain space and synthetic data (edit ``stages``)."""
    cfg: dict[str, Any] = {
        "name": "test",
        "seed": 0,
        "device": "cpu",
        "space": {"name": "tiny_chain"},
        "dataset": {"name": "synthetic"},
        "data": {"batch_size": 32},
        "stages": [{"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}}],
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture(autouse=False)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(0)
