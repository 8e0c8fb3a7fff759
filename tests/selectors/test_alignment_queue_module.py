"""DistributionAlignmentQueue as a module: equal to the functional stages; target='model'
needs the labelled batch."""

from __future__ import annotations

import pytest
import torch
from helpers.sequences import dense_batches

import pseudosel
import pseudosel.functional as F


def test_alignment_queue_module_equals_functional_and_needs_labeled_for_model():
    module = pseudosel.DistributionAlignmentQueue(5, queue_length=3)
    state = F.alignment_queue_init(5, queue_length=3)
    for probs, valid in dense_batches(steps=5):
        probs = probs.float()
        got = module(probs, valid=valid)
        state = F.alignment_queue_update(probs, state, valid=valid)
        assert torch.equal(got, F.align_queue(probs, state))
    with pytest.raises(ValueError, match="probs_labeled"):
        pseudosel.DistributionAlignmentQueue(5, target="model")(torch.full((2, 5), 0.2))
    with pytest.raises(ValueError, match="queue_length"):
        pseudosel.DistributionAlignmentQueue(5, queue_length=0)
