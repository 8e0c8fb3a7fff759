"""Queue distribution alignment (SimMatch / CoMatch style) against the literal float64
reference (helpers/adaptive_reference.py), over multi-step sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.adaptive_reference import RefDistAlignQueue
from helpers.sequences import cls_batches, dense_batches, numpy_of, rows

import pseudosel


@pytest.mark.parametrize("queue_length", [1, 3, 5, 128])
@pytest.mark.parametrize("target", ["uniform", "model", "given"])
def test_alignment_queue_matches_reference(queue_length, target, device):
    k = 6
    given = torch.tensor([0.3, 0.2, 0.2, 0.1, 0.1, 0.1], dtype=torch.float64)
    option = {"uniform": None, "model": "model", "given": given}[target]
    module = pseudosel.DistributionAlignmentQueue(k, queue_length=queue_length, target=option)
    module = module.to(device, torch.float64)
    ref = RefDistAlignQueue(k, queue_length, target, given.numpy())
    ref.p_target = numpy_of(module.p_target).copy()  # 1/K and the given rows, float32-rounded
    worst = 0.0
    for t, probs in enumerate(cls_batches(steps=12, device=device)):
        labeled = cls_batches(n=8, k=k, steps=1, seed=100 + t, device=device)[0]
        got = module(probs, labeled)
        expected = ref.step(numpy_of(probs), numpy_of(labeled))
        worst = max(worst, float(np.abs(numpy_of(got) - expected).max()))
        np.testing.assert_allclose(numpy_of(module.p_model), ref.p_model, rtol=0, atol=1e-15)
        np.testing.assert_allclose(numpy_of(module.p_target), ref.p_target, rtol=0, atol=1e-15)
        assert int(module.p_model_ptr) == ref.p_model_ptr
    assert worst <= 1e-13


def test_alignment_queue_dense_with_validity_matches_reference(device):
    module = pseudosel.DistributionAlignmentQueue(5, queue_length=4).to(device, torch.float64)
    ref = RefDistAlignQueue(5, 4)
    ref.p_target = numpy_of(module.p_target).copy()
    for probs, valid in dense_batches(steps=10, device=device):
        got = module(probs, valid=valid)
        expected = ref.step(rows(probs, valid))
        np.testing.assert_allclose(rows(got, valid), expected, rtol=0, atol=1e-13)
        np.testing.assert_allclose(numpy_of(module.p_model), ref.p_model, rtol=0, atol=1e-15)


def test_alignment_queue_zero_rows_count_and_empty_batch_is_skipped(device):
    module = pseudosel.DistributionAlignmentQueue(2, queue_length=4).to(device, torch.float64)
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4]], dtype=torch.float64, device=device)
    module(probs)
    torch.testing.assert_close(
        module.p_model[0].cpu(), torch.tensor([0.7, 0.3], dtype=torch.float64)
    )
    assert module.p_model[1:].abs().sum() == 0 and int(module.p_model_ptr) == 1
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module(probs, valid=torch.zeros(2, dtype=torch.bool, device=device))
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key
    module.eval()
    module(probs)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key
