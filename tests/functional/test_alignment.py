"""Distribution alignment (ReMixMatch / AdaMatch style) against the literal float64
reference (helpers/adaptive_reference.py); the blocked CPU class sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.adaptive_reference import RefDistAlign
from helpers.probability_maps import classifier_outputs, smooth_maps
from helpers.sequences import cls_batches, dense_batches, numpy_of, start_from
from helpers.tolerances import compute_dtype, tolerance

import pseudosel
import pseudosel.kernels.blocks as blocks


@pytest.mark.parametrize("target", [None, "model"])
def test_distribution_alignment_matches_reference(target, device):
    align = pseudosel.DistributionAlignment(6, momentum=0.9, target=target)
    align = align.to(device, torch.float64)
    ref = RefDistAlign(6, momentum=0.9, target_model=target == "model")
    start_from(ref, align, "p_target")
    for t, probs in enumerate(cls_batches(device=device)):
        labeled = classifier_outputs(12, 6, seed=50 + t, dtype=torch.float64).to(device)
        aligned = align(probs, labeled)
        np.testing.assert_allclose(
            numpy_of(aligned), ref.step(numpy_of(probs), numpy_of(labeled)), rtol=1e-12
        )
    np.testing.assert_allclose(numpy_of(align.p_model), ref.p_model, rtol=1e-12)


def test_distribution_alignment_dense_keeps_shape_and_normalisation(device):
    probs, valid = dense_batches(device=device)[0]
    aligned = pseudosel.DistributionAlignment(5).to(device)(probs, valid=valid)
    assert aligned.shape == probs.shape
    torch.testing.assert_close(aligned.sum(1), torch.ones_like(aligned.sum(1)))


def test_masked_class_sums_blocked_equal_one_block(monkeypatch, dtype):
    # eager CPU blocks zero ignored positions into one reused buffer; NaN/Inf there never
    # reach the sums, and the blocked sums equal the one-block ones
    from pseudosel.functional.alignment import masked_class_sums

    probs = smooth_maps(3, 6, 14, 15, sharpness=6.0, seed=4).to(dtype)
    valid = torch.rand(3, 14, 15, generator=torch.Generator().manual_seed(0)) > 0.3
    probs[0, :, 1, 1] = float("nan")
    probs[2, 2, 5, 5] = float("inf")
    valid[0, 1, 1] = valid[2, 5, 5] = False
    work = compute_dtype(dtype)
    whole = masked_class_sums(probs, valid, work)
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 300)
    assert len(blocks.position_blocks(probs.reshape(3, 6, -1))) > 1
    blocked = masked_class_sums(probs, valid, work)
    expected = torch.where(valid[:, None], probs.double(), 0.0).sum((0, 2, 3))
    assert torch.isfinite(blocked).all()
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(blocked, whole, rtol=rtol, atol=atol)
    torch.testing.assert_close(blocked.double(), expected, rtol=rtol, atol=atol)
