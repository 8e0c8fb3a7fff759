"""Fixed threshold: FixMatch's rule, inclusive comparison, float32 compare for half inputs."""

from __future__ import annotations

import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps

import pseudosel.functional as F


def test_matches_fixmatch_rule(device):
    probs = classifier_outputs(500, 10, seed=1).to(device)
    sel = F.threshold(probs)
    confidence, labels = probs.max(1)
    assert torch.equal(sel.mask, confidence >= 0.95)
    assert torch.equal(sel.labels, labels)
    assert torch.equal(sel.weight, sel.mask.float())
    assert torch.equal(sel.score, confidence)
    assert 0 < sel.mask.sum() < 500


def test_threshold_is_inclusive(device):
    probs = torch.tensor([[0.75, 0.25], [0.25, 0.75], [0.5, 0.5]], device=device)
    sel = F.threshold(probs, tau=0.75)
    assert sel.mask.tolist() == [True, True, False]
    assert sel.labels.tolist() == [0, 1, 0]  # ties: lowest index
    assert F.threshold(probs, tau=0.0).mask.all()
    assert not F.threshold(probs, tau=1.0).mask.any()


def test_dense_input_with_validity(device):
    probs = smooth_maps(2, 5, 6, 7, sharpness=8.0, seed=0).to(device)
    valid = (torch.rand(2, 6, 7, generator=torch.Generator().manual_seed(1)) > 0.4).to(device)
    sel = F.threshold(probs, 0.8, valid=valid)
    assert sel.mask.shape == (2, 6, 7)
    assert torch.equal(sel.mask, (probs.amax(1) >= 0.8) & valid)
    assert (sel.weight[~valid] == 0).all() and (sel.score[~valid] == 0).all()
    assert sel.ratio().item() == pytest.approx((sel.mask.sum() / valid.sum()).item())


def test_bfloat16_is_compared_in_float32(device):
    # 0.95 is 0.94921875 in bfloat16: below a float32 tau of 0.95, so not selected.
    probs = torch.tensor([[0.95, 0.05]], dtype=torch.bfloat16, device=device)
    sel = F.threshold(probs)
    assert sel.score.dtype == torch.float32
    assert sel.score.item() == 0.94921875
    assert not sel.mask.item()
    assert F.threshold(probs, tau=0.949).mask.item()


@pytest.mark.parametrize("tau", [-0.1, 1.5, float("nan")])
def test_tau_out_of_range(tau):
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\]"):
        F.threshold(torch.tensor([[0.5, 0.5]]), tau)


def test_tau_of_wrong_type():
    with pytest.raises(TypeError, match="tau must be a real number, got bool"):
        F.threshold(torch.tensor([[0.5, 0.5]]), True)
