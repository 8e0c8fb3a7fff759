"""dual_threshold (Efficient Teacher): against the published ``select_targets`` loop
(``models/loss/ssod/ssod_loss.py``) on the same boxes, with global and per-class thresholds."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pseudosel
import pseudosel.functional as F
from pseudosel.detection import pad_detections


def published_select_targets(scores, labels, low, high):
    """The code's per-box loop: score >= high[class] → reliable; elif >= low[class] →
    uncertain; else dropped."""
    reliable, uncertain = [], []
    for score, label in zip(scores.tolist(), labels.tolist(), strict=True):
        if score >= high[label]:
            reliable.append(True)
            uncertain.append(False)
        elif score >= low[label]:
            reliable.append(False)
            uncertain.append(True)
        else:
            reliable.append(False)
            uncertain.append(False)
    return torch.tensor(reliable, dtype=torch.bool), torch.tensor(uncertain, dtype=torch.bool)


@settings(max_examples=60)
@given(
    counts=st.lists(st.integers(0, 12), min_size=1, max_size=4),
    classes=st.integers(2, 6),
    per_class=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_published_rule_on_padded_boxes(counts, classes, per_class, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = [torch.rand(n, generator=gen).clamp_min(1e-6) for n in counts]  # > 0: see pad
    labels = [torch.randint(0, classes, (n,), generator=gen) for n in counts]
    if per_class:
        low = torch.rand(classes, generator=gen) * 0.4
        high = low + torch.rand(classes, generator=gen) * 0.5
    else:
        low, high = 0.1, 0.6
    batch = pad_detections(scores, labels, num_classes=classes)
    sel = F.dual_threshold(batch.scores, low, high, valid=batch.valid, validate=False)
    uncertain = F.uncertain_positions(sel, low)
    per_class_low = low.tolist() if per_class else [low] * classes
    per_class_high = high.tolist() if per_class else [high] * classes
    for i, (s, lab) in enumerate(zip(scores, labels, strict=True)):
        want_reliable, want_uncertain = published_select_targets(
            s, lab, per_class_low, per_class_high
        )
        n = len(s)
        assert torch.equal(sel.mask[i, :n], want_reliable)
        assert torch.equal(uncertain[i, :n], want_uncertain)
        assert not sel.mask[i, n:].any() and not uncertain[i, n:].any()


def test_reference_float64_on_probabilities():
    gen = torch.Generator().manual_seed(0)
    probs = torch.randn(64, 5, generator=gen, dtype=torch.float64).mul(2).softmax(1)
    sel = F.dual_threshold(probs, 0.3, 0.7)
    confidence = probs.max(1).values
    assert torch.equal(sel.mask, confidence >= 0.7)
    assert torch.equal(sel.weight, (confidence >= 0.7).double())
    assert torch.equal(F.uncertain_positions(sel, 0.3), (confidence >= 0.3) & (confidence < 0.7))
    assert torch.equal(sel.score, confidence)


def test_by_name_and_the_value_option():
    probs = torch.tensor([[0.9, 0.1], [0.65, 0.35], [0.5, 0.5]])
    sel = pseudosel.select_reliable(probs, "dual_threshold", low=0.5, high=0.6)
    assert sel.mask.tolist() == [True, True, False]
    assert F.uncertain_positions(sel, 0.5).tolist() == [False, False, True]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p: F.dual_threshold(p, 0.7, 0.6), ValueError,
         "low must not exceed high, got low=0.7 > high=0.6"),
        (lambda p: F.dual_threshold(p, high=1.5), ValueError, r"high must be in \[0, 1\], got 1.5"),
        (lambda p: F.dual_threshold(p, low=torch.zeros(2, 2)), TypeError,
         r"low must be a number or a floating \(K,\) tensor"),
        (lambda p: F.uncertain_positions(p), TypeError,
         "selection must be a pseudosel.Selection, got Tensor"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.tensor([[0.9, 0.1]]))


def test_per_class_thresholds_must_match_the_classes():
    probs = torch.tensor([[0.9, 0.05, 0.05]])
    with pytest.raises(ValueError, match="high must hold one threshold per class: 3 classes"):
        F.dual_threshold(probs, high=torch.tensor([0.5, 0.6]))
    sel = F.dual_threshold(
        probs, low=torch.tensor([0.1, 0.1, 0.1]), high=torch.tensor([0.95, 0.5, 0.5])
    )
    assert sel.mask.tolist() == [False]
    assert F.uncertain_positions(sel, torch.tensor([0.1, 0.1, 0.1])).tolist() == [True]


def test_the_module_keeps_its_low_for_the_uncertain_set():
    selector = pseudosel.DualThresholdSelector(low=0.3, high=0.7)
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.5, 0.5]])
    certain = selector(probs)
    assert certain.mask.tolist() == [True, False, False]
    assert selector.uncertain(certain).tolist() == [False, True, True]
    assert torch.equal(certain.mask, F.dual_threshold(probs, 0.3, 0.7).mask)
    with pytest.raises(ValueError, match="low must not exceed high"):
        pseudosel.DualThresholdSelector(low=0.8, high=0.7)
