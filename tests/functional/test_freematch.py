"""FreeMatch's self-adaptive threshold against the literal float64 reference
(helpers/adaptive_reference.py), over multi-step sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.adaptive_reference import RefFreeMatch
from helpers.sequences import cls_batches, dense_batches, masked, numpy_of, rows, start_from

import pseudosel


@pytest.mark.parametrize(
    "options",
    [{}, {"use_quantile": True}, {"clip_thresh": True, "momentum": 0.5}],
    ids=["mean", "quantile", "clip"],
)
def test_freematch_matches_reference(options, device):
    selector = pseudosel.FreeMatchSelector(6, **options).to(device, torch.float64)
    ref = RefFreeMatch(6, **options)
    start_from(ref, selector, "time_p", "p_model", "label_hist")
    for probs in cls_batches(device=device):
        sel = selector(probs)
        np.testing.assert_array_equal(numpy_of(sel.mask), ref.step(numpy_of(probs)))
        np.testing.assert_allclose(selector.time_p.item(), ref.time_p, rtol=1e-12)
        np.testing.assert_allclose(numpy_of(selector.p_model), ref.p_model, rtol=1e-12)
        np.testing.assert_allclose(numpy_of(selector.label_hist), ref.label_hist, rtol=1e-12)


def test_freematch_dense_with_validity_matches_reference(device):
    selector = pseudosel.FreeMatchSelector(5, use_quantile=True).to(device, torch.float64)
    ref = RefFreeMatch(5, use_quantile=True)
    start_from(ref, selector, "time_p", "p_model", "label_hist")
    for probs, valid in dense_batches(device=device):
        sel = selector(probs, valid=valid)
        np.testing.assert_array_equal(masked(sel.mask, valid), ref.step(rows(probs, valid)))
        np.testing.assert_allclose(numpy_of(selector.p_model), ref.p_model, rtol=1e-12)
