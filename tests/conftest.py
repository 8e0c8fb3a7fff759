"""Shared pytest configuration: hypothesis profile and the cuda marker."""

from __future__ import annotations

import pytest
import torch
import usb_support
from hypothesis import HealthCheck, settings

# semilearn (USB) must import before pseudosel.integrations.usb is collected: tests/usb_support.py
usb_support.install_import_shims()

settings.register_profile(
    "pseudosel",
    deadline=None,  # first calls pay for lazy imports and allocator warm-up
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("pseudosel")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
