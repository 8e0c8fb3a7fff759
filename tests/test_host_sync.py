"""No selector synchronises with the host: every selector's training step (and
SelectionStats, see test_metrics.py) runs under a guard that makes host reads raise.

Value checks are excluded (``validate=False``): by design (DESIGN.md) they raise a plain
``ValueError`` in CPU eager mode and become device-side assertions on CUDA and under
``torch.compile``, where they add no host synchronisation (tests/test_compile*.py).
"""

from __future__ import annotations

import pytest
import torch
from helpers.host_sync_guard import forbid_host_sync
from helpers.probability_maps import classifier_outputs, smooth_maps
from helpers.selector_zoo import CASES, NEEDS_A_MASK, case_batch, outputs_of

import pseudosel
from pseudosel.registry import selector_spec


@pytest.mark.parametrize("case", [c for c in CASES if not c.convex], ids=lambda c: c.name)
def test_training_steps_never_read_the_device_from_the_host(case):
    module, step = case.build(5, validate=False)
    batches = [case_batch(case, i) for i in range(4)]
    batches.append((batches[0][0], torch.zeros_like(batches[0][1])))  # fully ignored
    results = []
    with forbid_host_sync():
        for probs, valid in batches:
            results.append(step(probs, valid))
    for result in results:  # checked outside the guard
        for out in outputs_of(result):
            if out.is_floating_point():
                assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if not c.convex and c.name not in NEEDS_A_MASK],
    ids=lambda c: c.name,
)
def test_plain_input_steps_never_read_the_device_from_the_host(case):
    """Without a mask (nothing ignored) selectors take shorter paths: the GPU's must not
    read the device either."""
    module, step = case.build(5, validate=False)
    with forbid_host_sync():
        for seed in range(3):
            step(case_batch(case, seed)[0], None)


def test_select_reliable_by_name_never_reads_the_device():
    """Every stateless selector of the registry by name (those needing optional packages
    aside: cvxpy solves on the host), with the labelled batch where it needs one."""
    probs = smooth_maps(2, 5, 8, 8, seed=3)
    labeled = classifier_outputs(6, 5, seed=4)
    ignore = torch.zeros(2, 8, 8, dtype=torch.uint8)
    ignore[:, :2] = 255
    names = [
        name
        for name in pseudosel.available_selectors(stateful=False)
        if not selector_spec(name).requires
    ]
    with forbid_host_sync():
        for name in names:
            extra = {"probs_labeled": labeled} if "labeled" in selector_spec(name).needs else {}
            pseudosel.select_reliable(probs, name, ignore_mask=ignore, validate=False, **extra)
        pseudosel.select_reliable(probs.log(), "csl", from_logits=True, validate=False)
