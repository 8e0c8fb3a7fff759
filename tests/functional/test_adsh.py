"""Adsh's class-wise thresholds against the literal float64 reference
(helpers/adaptive_reference.py), over epochs of an imbalanced set; USB's rounding quirk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.adaptive_reference import RefAdsh
from helpers.sequences import imbalanced_set, numpy_of

import pseudosel


@pytest.mark.parametrize("calibration_class", [0, None])
@pytest.mark.parametrize("tau_1", [0.95, 0.8])
def test_adsh_matches_reference_over_epochs(tau_1, calibration_class, device):
    n, k, batch = 120, 6, 16
    selector = pseudosel.AdshSelector(k, n, tau_1=tau_1, calibration_class=calibration_class)
    selector = selector.to(device, torch.float64)
    ref = RefAdsh(k, tau_1=tau_1, calibration_class=calibration_class)
    ref.s = numpy_of(selector.s).copy()  # τ₁ rounded to float32 at construction
    worst = 0.0
    for epoch in range(6):
        data = imbalanced_set(n, k, epoch, device=device)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).to(device)
        for start in range(0, n, batch):  # training steps: masking only
            probs = data[order[start : start + batch]]
            np.testing.assert_array_equal(numpy_of(selector(probs).mask), ref.mask(numpy_of(probs)))
        for start in range(0, n, batch):  # the epoch-end pass, in batches, shuffled
            index = order[start : start + batch]
            selector.update(data[index], index)
        selector.calibrate()
        ref.epoch_end(numpy_of(data))
        worst = max(worst, float(np.abs(numpy_of(selector.s) - ref.s).max()))
    # the same entries are picked; torch's log and libm's may differ by an ulp
    assert worst <= 1e-15
    assert len(set(np.round(ref.s, 6))) > 1  # class-wise thresholds actually differ


def test_adsh_float_rounding_quirk_and_rho_edge_cases(device):
    # n_0 = 49 with two head samples above τ₁: ρ = 1/49; ⌊49 · (1/49)⌋ = 0 in float64, so the
    # index is −1: the LAST (least confident) entry, as int(len(C) * rho) - 1 gives in USB
    k = 2
    conf0 = torch.linspace(0.99, 0.6, 49, dtype=torch.float64)
    conf0[2:] = conf0[2:].clamp_max(0.94)
    conf1 = torch.linspace(0.9, 0.55, 49, dtype=torch.float64)
    probs = torch.cat((torch.stack((conf0, 1 - conf0), 1), torch.stack((1 - conf1, conf1), 1)))
    for tau_1 in (0.95, 0.995, 0.5):  # ρ = 1/49; m = 0 (ρ = 1); m = 49 (ρ = 48/49)
        selector = pseudosel.AdshSelector(k, 98, tau_1=tau_1).to(device, torch.float64)
        ref = RefAdsh(k, tau_1=tau_1)
        selector.update(probs.to(device), torch.arange(98, device=device))
        selector.calibrate()
        ref.epoch_end(probs.numpy())
        np.testing.assert_allclose(numpy_of(selector.s), ref.s, rtol=0, atol=1e-15)
    assert int(49 * (1 / 49)) == 0


def test_adsh_empty_class_keeps_score_and_ignored_rows_are_not_recorded(device):
    selector = pseudosel.AdshSelector(3, 4).to(device, torch.float64)
    probs = torch.tensor(
        [[0.97, 0.02, 0.01], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]],
        dtype=torch.float64,
        device=device,
    )
    valid = torch.tensor([True, True, True, False], device=device)
    selector.update(probs, torch.arange(4, device=device), valid=valid)
    assert selector.prediction.tolist() == [0, 0, 1, -1]
    selector.calibrate()
    # ρ = 0 (one head sample passes) → every class takes its last entry; class 2 unseen
    torch.testing.assert_close(
        selector.thresholds()[:2].cpu(), torch.tensor([0.9, 0.7], dtype=torch.float64)
    )
    assert selector.s[2].item() == pytest.approx(0.95)
    assert selector.prediction.tolist() == [-1] * 4  # records reset for the next pass
