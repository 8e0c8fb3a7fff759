"""CorrMatch's global threshold against the literal float64 reference
(helpers/adaptive_reference.py), over multi-step sequences; hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.adaptive_reference import RefCorrMatch
from helpers.sequences import cls_batches, dense_batches, masked, numpy_of, rows

import pseudosel


@pytest.mark.parametrize("momentum", [0.999, 0.9, 0.5])
def test_corrmatch_classification_matches_reference(momentum, device):
    selector = pseudosel.CorrMatchSelector(6, momentum=momentum).to(device, torch.float64)
    ref = RefCorrMatch(momentum=momentum, thresh_init=selector.thresh.item())  # float32 0.85
    worst = 0.0
    for t, probs in enumerate(cls_batches(steps=12, device=device)):
        sel = selector(probs)
        np.testing.assert_array_equal(numpy_of(sel.mask), ref.step(numpy_of(probs)), f"step {t}")
        worst = max(worst, abs(selector.thresh.item() - ref.thresh))
    assert worst <= 1e-15


def test_corrmatch_dense_with_validity_matches_reference(device):
    selector = pseudosel.CorrMatchSelector(5, momentum=0.8).to(device, torch.float64)
    ref = RefCorrMatch(momentum=0.8, thresh_init=selector.thresh.item())
    for probs, valid in dense_batches(steps=12, device=device):
        sel = selector(probs, valid=valid)
        np.testing.assert_array_equal(masked(sel.mask, valid), ref.step(rows(probs, valid)))
        assert not sel.mask[~valid].any()
        assert abs(selector.thresh.item() - ref.thresh) <= 1e-15


def test_corrmatch_float32_module_tracks_reference(device):
    selector = pseudosel.CorrMatchSelector(5, momentum=0.9).to(device)
    ref = RefCorrMatch(momentum=0.9)
    for probs, valid in dense_batches(steps=8, device=device):
        selector(probs.float(), valid=valid)
        ref.step(rows(probs.float().double(), valid))
        assert abs(selector.thresh.item() - ref.thresh) <= 1e-6


def test_corrmatch_updates_before_selecting_and_skips_absent_classes(device):
    selector = pseudosel.CorrMatchSelector(3, momentum=0.5).to(device, torch.float64)
    probs = torch.tensor(
        [[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]], dtype=torch.float64, device=device
    )
    sel = selector(probs)
    # class 2 predicted nowhere: batch = (0.9 + 0.7) / 2; τ = 0.5·0.85 + 0.5·0.8 = 0.825
    assert selector.thresh.item() == pytest.approx(0.825)
    assert sel.mask.tolist() == [True, False, False]
    # an ignored position does not count, even as a class's only prediction
    selector = pseudosel.CorrMatchSelector(3, momentum=0.5).to(device, torch.float64)
    selector(probs, valid=torch.tensor([True, True, False], device=device))
    assert selector.thresh.item() == pytest.approx(0.5 * 0.85 + 0.5 * 0.9)
