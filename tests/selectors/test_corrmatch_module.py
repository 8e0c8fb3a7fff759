"""CorrMatchSelector as a module: all-ignored batches and eval mode leave the state alone;
the module equals the functional stages."""

from __future__ import annotations

import pytest
import torch
from helpers.sequences import dense_batches

import pseudosel
import pseudosel.functional as F


def test_corrmatch_all_ignored_and_eval_leave_state_unchanged():
    selector = pseudosel.CorrMatchSelector(4)
    probs = torch.randn(2, 4, 3, 3).softmax(1)
    selector(probs, valid=torch.zeros(2, 3, 3, dtype=torch.bool))
    assert selector.thresh.item() == pytest.approx(0.85)
    selector.eval()
    selector(probs)
    assert selector.thresh.item() == pytest.approx(0.85)
    selector.train()
    selector.update(probs)
    frozen = selector.thresh.clone()
    selector.eval()
    assert torch.equal(selector(probs).mask, probs.amax(1) >= frozen)


def test_corrmatch_module_equals_functional():
    module = pseudosel.CorrMatchSelector(5, momentum=0.9, thresh_init=0.7)
    state = F.corrmatch_init(thresh_init=0.7)
    for probs, valid in dense_batches(steps=4):
        probs = probs.float()
        got = module(probs, valid=valid)
        state = F.corrmatch_update(probs, state, valid=valid, momentum=0.9)
        expected = F.corrmatch_select(probs, state, valid=valid)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
