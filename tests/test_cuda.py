"""CUDA: same results as on the CPU, and no host synchronisation in a selection call.

Skipped without a CUDA device (see conftest.py); the same code paths run on the CPU above.
"""

from __future__ import annotations

import pytest
import torch
from probability_maps import classifier_outputs, smooth_maps

import pseudosel
import pseudosel.functional as F

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("select", [F.csl, F.threshold])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(select, dtype):
    probs = smooth_maps(2, 21, 40, 40, sharpness=6.0, seed=0).to(dtype)
    on_cpu = select(probs)
    on_gpu = select(probs.cuda())
    torch.testing.assert_close(on_gpu.weight.cpu(), on_cpu.weight, rtol=1e-4, atol=1e-5)
    assert torch.equal(on_gpu.labels.cpu(), on_cpu.labels)


@pytest.mark.parametrize("select", [F.csl, F.threshold])
def test_no_host_sync_with_value_checks_on(select):
    probs = classifier_outputs(512, 10, seed=1).cuda()
    dense = smooth_maps(4, 21, 64, 64, seed=2).cuda()
    select(probs)  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sel = select(dense)
        sel.ratio()
        pseudosel.select_reliable(probs, from_logits=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
