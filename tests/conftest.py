"""Core tests: one thread (two cores oversubscribed run 100x slower), no auto-loaded plugins."""

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Each test sees a registry built for it, never one left by another test."""
    from nascore.registry import set_registry

    set_registry(None)
    yield
    set_registry(None)
