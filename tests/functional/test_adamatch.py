"""AdaMatch's relative threshold against the literal float64 reference
(helpers/adaptive_reference.py), by module, by name and through select_reliable."""

from __future__ import annotations

import numpy as np
import torch
from helpers.adaptive_reference import ref_adamatch
from helpers.probability_maps import classifier_outputs
from helpers.sequences import cls_batches, numpy_of

import pseudosel


def test_adamatch_matches_reference(device):
    selector = pseudosel.AdaMatchSelector(0.9)
    for t, probs in enumerate(cls_batches(device=device)):
        labeled = classifier_outputs(12, 6, sharpness=3.0, seed=100 + t, dtype=torch.float64).to(
            device
        )
        sel = selector(probs, labeled)
        np.testing.assert_array_equal(
            numpy_of(sel.mask), ref_adamatch(numpy_of(probs), numpy_of(labeled), 0.9)
        )
        via_name = pseudosel.select_reliable(probs, "adamatch", probs_labeled=labeled, tau=0.9)
        via_module = pseudosel.select_reliable(probs, selector, probs_labeled=labeled)
        assert torch.equal(via_name.mask, sel.mask) and torch.equal(via_module.mask, sel.mask)
