"""The entropy split: U2PL's annealed share against numpy's percentile, and the fixed-share
functional."""

from __future__ import annotations

import numpy as np
import torch
from helpers.adaptive_reference import RefU2PL
from helpers.probability_maps import smooth_maps
from helpers.sequences import dense_batches, masked, rows

import pseudosel
import pseudosel.functional as F


def test_u2pl_split_matches_numpy_percentile(device):
    selector = pseudosel.EntropySplitSelector(4).to(device, torch.float64)
    ref = RefU2PL(4)
    for probs, valid in dense_batches(steps=6, device=device):
        sel = selector(probs, valid=valid)
        np.testing.assert_array_equal(masked(sel.mask, valid), ref.step(rows(probs, valid)))
    # after T steps α = 0, yet the maximum-entropy positions are still dropped (as in U2PL)
    probs, valid = dense_batches(steps=1, device=device)[0]
    sel = selector(probs, valid=valid)
    assert 0 < (valid & ~sel.mask).sum() <= 2


def test_entropy_split_functional_share(device):
    probs = smooth_maps(4, 5, 20, 20, seed=3).to(device)
    sel = F.entropy_split(probs, 0.3)
    assert abs(sel.ratio().item() - 0.7) < 0.01
    assert torch.equal(sel.score, -pseudosel.features.entropy(probs))
