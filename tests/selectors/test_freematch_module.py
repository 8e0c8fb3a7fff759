"""FreeMatchSelector as a module: a training call updates with the batch, then selects."""

from __future__ import annotations

import pytest
import torch

import pseudosel


def test_freematch_updates_before_selecting():
    # τ₀ = 1/K; after one update with m = 0.5 on confidences (0.9, 0.5): τ = 0.5/2 + 0.35
    selector = pseudosel.FreeMatchSelector(2, momentum=0.5).double()
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    sel = selector(probs)
    assert selector.time_p.item() == pytest.approx(0.25 + 0.35)
    # p̃ = (0.25 + 0.35, 0.25 + 0.15) → local factors (1, 0.4 / 0.6); 0.5 >= 0.6 fails
    assert sel.mask.tolist() == [True, False]
