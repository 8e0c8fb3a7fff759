"""No selector synchronises with the host: every selector's training step (and
SelectionStats, see test_metrics.py) runs under a guard that makes host reads raise.

Value checks are excluded (``validate=False``): by design (DESIGN.md) they raise a plain
``ValueError`` in CPU eager mode and become device-side assertions on CUDA and under
``torch.compile``, where they add no host synchronisation (tests/test_compile*.py).
"""

from __future__ import annotations

import pytest
import torch
from host_sync_guard import forbid_host_sync
from probability_maps import classifier_outputs, smooth_maps
from selector_zoo import CASES, outputs_of

import pseudosel


@pytest.mark.parametrize("case", [c for c in CASES if not c.convex], ids=lambda c: c.name)
def test_training_steps_never_read_the_device_from_the_host(case):
    module, step = case.build(5, validate=False)
    batches = []
    for i in range(4):
        if case.dense:
            probs = smooth_maps(2, 5, 6, 6, sharpness=3.0, seed=i)
        else:
            probs = classifier_outputs(12, 5, seed=i)
        valid = torch.rand(
            probs.shape[0], *probs.shape[2:], generator=torch.Generator().manual_seed(i)
        )
        batches.append((probs, valid < 0.7))
    batches.append((batches[0][0], torch.zeros_like(batches[0][1])))  # fully ignored
    results = []
    with forbid_host_sync():
        for probs, valid in batches:
            results.append(step(probs, valid))
    for result in results:  # checked outside the guard
        for out in outputs_of(result):
            if out.is_floating_point():
                assert torch.isfinite(out).all()


def test_select_reliable_by_name_never_reads_the_device():
    probs = smooth_maps(2, 5, 8, 8, seed=3)
    ignore = torch.zeros(2, 8, 8, dtype=torch.uint8)
    ignore[:, :2] = 255
    with forbid_host_sync():
        for name in ("csl", "threshold", "entropy_split"):
            pseudosel.select_reliable(probs, name, ignore_mask=ignore, validate=False)
        pseudosel.select_reliable(probs.log(), "csl", from_logits=True, validate=False)
