"""top_ratio (Dense Teacher's region selection): against a float64 reference written from
the paper and against the published code's rule on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps
from hypothesis import given, settings
from hypothesis import strategies as st

import pseudosel
import pseudosel.functional as F


def reference(probs: np.ndarray, valid: np.ndarray, ratio: float) -> np.ndarray:
    """float64, literal: rank the confidences of all valid positions of the batch and keep
    the int(n · ratio) largest (a position tied with the last kept one is kept too)."""
    confidence = probs.max(axis=1)
    values = np.sort(confidence[valid])[::-1]
    kept = int(len(values) * ratio)
    if kept == 0:
        return np.zeros_like(valid)
    return valid & (confidence >= values[kept - 1])


def published_rule(probs: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' region selection as their code runs it over a flattened batch: the
    top count_num = int(n · ratio) of the max scores by torch.topk; fg_num their sum."""
    flat = probs.movedim(1, -1).reshape(-1, probs.shape[1])
    count_num = int(flat.size(0) * ratio)
    max_vals = torch.max(flat, 1)[0]
    sorted_vals, sorted_inds = torch.topk(max_vals, flat.size(0))
    mask = torch.zeros_like(max_vals)
    mask[sorted_inds[:count_num]] = 1.0
    return mask.bool().reshape(probs.shape[0], *probs.shape[2:]), sorted_vals[:count_num].sum()


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.37, 1.0])
@pytest.mark.parametrize("layout", ["dense", "classification"])
def test_equals_the_published_rule(ratio, layout):
    probs = (
        smooth_maps(3, 6, 20, 17, seed=1, dtype=torch.float64)
        if layout == "dense"
        else classifier_outputs(500, 10, seed=1, dtype=torch.float64)
    )
    sel = F.top_ratio(probs, ratio)
    mask, fg_num = published_rule(probs, ratio)
    assert torch.equal(sel.mask, mask)  # continuous scores: no ties at the cut
    torch.testing.assert_close(sel.weight.sum(), fg_num)  # Σ weight is their normaliser
    confidence = probs.amax(1)
    assert torch.equal(sel.weight, torch.where(mask, confidence, 0.0))
    assert torch.equal(sel.labels, probs.argmax(1))


@settings(max_examples=60)
@given(
    st.integers(0, 5),
    st.integers(2, 6),
    st.sampled_from([(), (1,), (4, 3)]),
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 0.5, 1.0]),
    st.integers(0, 2**31 - 1),
)
def test_matches_the_float64_reference(n, k, spatial, ratio, keep, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, *spatial, generator=gen, dtype=torch.float64)
    logits = (logits * 2).round()  # ties, including at the cut
    probs = logits.softmax(1)
    valid = torch.rand(n, *spatial, generator=gen) < keep
    sel = F.top_ratio(probs, ratio, valid=valid)
    expected = reference(probs.numpy(), valid.numpy(), ratio)
    np.testing.assert_array_equal(sel.mask.numpy(), expected)
    assert not sel.mask[~valid].any() and (sel.weight[~valid] == 0).all()
    assert torch.isfinite(sel.weight).all() and torch.isfinite(sel.score).all()


def test_ignored_positions_with_nan_take_no_part():
    probs = smooth_maps(2, 4, 8, 8, seed=2)
    valid = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(3)) > 0.4
    poisoned = probs.clone()
    poisoned.movedim(1, -1)[~valid] = float("nan")
    clean, dirty = F.top_ratio(probs, 0.2, valid=valid), F.top_ratio(poisoned, 0.2, valid=valid)
    assert torch.equal(clean.mask, dirty.mask)
    assert int(clean.mask.sum()) == int(valid.sum() * 0.2)


def test_by_name_with_its_value_option_and_errors():
    probs = classifier_outputs(40, 5, seed=0)
    assert torch.equal(
        pseudosel.select_reliable(probs, "top_ratio", ratio=0.25).mask,
        F.top_ratio(probs, 0.25).mask,
    )
    assert pseudosel.registry.selector_spec("top_ratio").value_option == "ratio"
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\], got 1.5"):
        F.top_ratio(probs, 1.5)
    with pytest.raises(ValueError, match="from_logits=True"):
        F.top_ratio(probs.log(), 0.1)
    # a detector's per-class sigmoid scores are no distribution: validate=False reads them
    scores = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    assert int(F.top_ratio(scores, 0.5, validate=False).mask.sum()) == 36
