"""shrink_classes, shrinkmatch and shrunk_cross_entropy (ShrinkMatch) against a float64
per-position reference written from the paper (helpers/shrinkmatch_reference.py), against
the published ``shrink_loss`` (CIFAR/shrinkmatch.py, transcribed there) on the same
tensors, and the gradient against autograd on the restricted logits; ties, degenerate
inputs and bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from helpers.shrinkmatch_reference import (
    published_shrink_loss,
    reference_shrink,
    shrunk_loss_terms,
    sub_confidences,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import pseudosel
import pseudosel.functional as F

# margin kept from tau, relative to the compute dtype, where float32 sums may differ
MARGIN = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-5}


def draw_probs(n, k, spatial, seed, dtype, sharpness=None):
    gen = torch.Generator().manual_seed(seed)
    sharp = sharpness if sharpness is not None else 0.5 + 4.0 * torch.rand(1, generator=gen).item()
    logits = torch.randn(n, k, *spatial, generator=gen, dtype=torch.float64) * sharp
    return logits.softmax(1).to(dtype), gen


def positions(t):
    """(N, K, *spatial) → (P, K) rows in position order (N, *spatial)."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def is_clear(row, tau, margin):
    """No decision of the rule lies within ``margin`` of tau (confidence, every sub_conf)."""
    if abs(max(row) - tau) <= margin:
        return False
    return all(abs(v - tau) > margin for v in sub_confidences(row).values())


layouts = st.sampled_from([(), (3,), (2, 3)])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 7),
    k=st.integers(2, 12),
    spatial=layouts,
    tau=st.sampled_from([0.0, 0.5, 0.7, 0.9, 0.95, 1.0]),
    # a share below float32's normal range would underflow in the input dtype
    ratio=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)),
    masked=st.booleans(),
    dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_shrink_classes_equals_the_paper_reference(n, k, spatial, tau, ratio, masked, dtype, seed):
    probs, gen = draw_probs(n, k, spatial, seed, dtype)
    valid = torch.rand(n, *spatial, generator=gen) < 0.7 if masked else None
    if masked:  # nothing at an ignored position is read
        probs = torch.where(valid.unsqueeze(1), probs, float("nan"))
    shrunk = F.shrink_classes(probs, tau, ratio, valid=valid)
    want_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert shrunk.weight.dtype == want_dtype and shrunk.labels.dtype == torch.long
    assert shrunk.classes.shape == probs.shape and shrunk.weight.shape == (n, *spatial)
    assert torch.isfinite(shrunk.weight).all()
    rows = positions(probs.double()).tolist()
    valid_rows = (valid if masked else torch.ones(n, *spatial, dtype=torch.bool)).flatten()
    classes = positions(shrunk.classes).tolist()
    labels, weights = shrunk.labels.flatten().tolist(), shrunk.weight.flatten().tolist()
    for i, row in enumerate(rows):
        if not valid_rows[i]:
            assert weights[i] == 0 and not any(classes[i])
            continue
        if not is_clear(row, tau, MARGIN[dtype]):
            continue  # float32 sums may fall on either side of tau
        ref = reference_shrink(row, tau, ratio)
        assert labels[i] == ref.label
        assert {j for j, kept in enumerate(classes[i]) if kept} == ref.kept
        assert math.isclose(weights[i], ref.weight, rel_tol=1e-6, abs_tol=0.0)


def test_reference_comparison_is_not_vacuous():
    """Many uncertain positions with a shrunk set, in float32, all compared."""
    probs, _ = draw_probs(400, 10, (), seed=3, dtype=torch.float32, sharpness=2.5)
    shrunk = F.shrink_classes(probs, 0.9, 0.5)
    compared = shrunk_count = 0
    for i, row in enumerate(probs.double().tolist()):
        if not is_clear(row, 0.9, MARGIN[torch.float32]):
            continue
        ref = reference_shrink(row, 0.9, 0.5)
        compared += 1
        shrunk_count += ref.weight > 0 and len(ref.kept) < 10
        assert set(shrunk.classes[i].nonzero().flatten().tolist()) == ref.kept
        assert math.isclose(shrunk.weight[i].item(), ref.weight, rel_tol=1e-6)
    assert compared >= 390 and shrunk_count >= 100


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 8),
    k=st.integers(2, 12),
    tau=st.sampled_from([0.6, 0.8, 0.95]),
    seed=st.integers(0, 2**16),
)
def test_the_published_shrink_loss_on_the_same_tensors(n, k, tau, seed):
    """Same total loss (Σ / B · certain_ratio) and the same removed rank c per uncertain
    sample as CIFAR/shrinkmatch.py's ``shrink_loss``; no exact ties (topk's order among
    them is unspecified), no decision within 1e-12 of tau."""
    probs, gen = draw_probs(n, k, (), seed, torch.float64)
    rows = probs.tolist()
    assume(all(len(set(row)) == k for row in rows))
    assume(all(is_clear(row, tau, 1e-12) for row in rows))
    logits = torch.randn(n, k, generator=gen, dtype=torch.float64) * 2
    ratio = 0.37
    total, removed = published_shrink_loss(probs, logits, tau)
    published = torch.as_tensor(total, dtype=torch.float64) / n * ratio
    shrunk = F.shrink_classes(probs, tau, ratio)
    loss = pseudosel.shrunk_cross_entropy(logits, shrunk, normalize="batch")
    torch.testing.assert_close(loss, published, rtol=1e-12, atol=1e-15)
    # c per uncertain sample: K + 1 − |kept| (rank 0 and ranks c .. K − 1 are kept)
    uncertain = probs.max(1).values < tau
    ours = (k + 1 - shrunk.classes.sum(1))[uncertain].tolist() if k > 2 else []
    assert ours == removed


def test_the_published_shrink_loss_in_float32():
    probs, gen = draw_probs(64, 10, (), seed=11, dtype=torch.float32, sharpness=2.5)
    keep = [is_clear(row, 0.95, 1e-5) for row in probs.double().tolist()]
    probs = probs[torch.tensor(keep)]
    logits = torch.randn(probs.shape[0], 10, generator=gen)
    total, removed = published_shrink_loss(probs, logits, 0.95)
    shrunk = F.shrink_classes(probs, 0.95)
    loss = pseudosel.shrunk_cross_entropy(logits, shrunk)
    torch.testing.assert_close(loss, total / probs.shape[0], rtol=1e-5, atol=1e-7)
    uncertain = probs.max(1).values < 0.95
    assert (11 - shrunk.classes.sum(1))[uncertain].tolist() == removed
    assert len(removed) >= 20 and total > 0


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 6),
    k=st.integers(2, 9),
    spatial=layouts,
    masked=st.booleans(),
    normalize=st.sampled_from(["batch", "valid", "selected", "weight"]),
    seed=st.integers(0, 2**16),
)
def test_loss_and_gradient_equal_the_reference(n, k, spatial, masked, normalize, seed):
    """Value against the float64 per-position reference; gradient against autograd of
    F.cross_entropy on each position's restricted logits."""
    probs, gen = draw_probs(n, k, spatial, seed, torch.float64)
    valid = torch.rand(n, *spatial, generator=gen) < 0.7 if masked else None
    logits = torch.randn(n, k, *spatial, generator=gen, dtype=torch.float64) * 2
    if masked:  # not finite at ignored positions: no effect on the value or the gradient
        logits = torch.where(valid.unsqueeze(1), logits, float("inf"))
    logits.requires_grad_(True)
    shrunk = F.shrink_classes(probs, 0.8, 0.6, valid=valid)
    loss = pseudosel.shrunk_cross_entropy(logits, shrunk, normalize=normalize)
    loss.backward()

    rows, zrows = positions(probs).tolist(), positions(logits.detach()).tolist()
    valid_rows = (valid if masked else torch.ones(n, *spatial, dtype=torch.bool)).flatten()
    leaf = positions(logits.detach()).clone().requires_grad_(True)
    terms, weights, total = [], [], 0.0
    restricted = []
    for i, row in enumerate(rows):
        if not valid_rows[i]:
            continue
        ref = reference_shrink(row, 0.8, 0.6)
        weights.append(ref.weight)
        terms.append(ref.weight * shrunk_loss_terms(zrows[i], ref) if ref.weight else 0.0)
        if ref.weight:
            kept = sorted(ref.kept, key=lambda j: j != ref.label)  # the label first
            sub = leaf[i, kept]
            restricted.append(ref.weight * TF.cross_entropy(sub[None], torch.zeros(1).long()))
    total = math.fsum(terms)
    denominator = {
        "batch": float(max(len(rows), 0)),
        "valid": float(sum(bool(v) for v in valid_rows)),
        "selected": float(sum(w > 0 for w in weights)),
        "weight": math.fsum(weights),
    }[normalize]
    want = total / denominator if denominator > 0 else 0.0
    assert math.isclose(loss.item(), want, rel_tol=1e-10, abs_tol=1e-12)
    if restricted and denominator > 0:
        (torch.stack(restricted).sum() / denominator).backward()
        expected = leaf.grad
    else:
        expected = torch.zeros_like(leaf)
    torch.testing.assert_close(positions(logits.grad), expected, rtol=1e-10, atol=1e-12)


def test_half_precision_logits_and_probabilities():
    probs, gen = draw_probs(32, 6, (4,), seed=5, dtype=torch.bfloat16, sharpness=3.0)
    logits = torch.randn(32, 6, 4, generator=gen).to(torch.bfloat16).requires_grad_(True)
    shrunk = F.shrink_classes(probs, 0.9)
    loss = pseudosel.shrunk_cross_entropy(logits, shrunk)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()
    wide = pseudosel.shrunk_cross_entropy(logits.detach().float(), shrunk)
    torch.testing.assert_close(loss, wide)


def test_ties_keep_the_higher_index_and_label_the_lower():
    """Stable sort: among equal probabilities the lower class index ranks first — it is the
    label when the maxima tie, and it is removed first when the cut splits a tie."""
    # ranks: class 0 (0.6), class 1 (0.2), class 2 (0.1), class 3 (0.1); tau 0.8 → c = 3
    shrunk = F.shrink_classes(torch.tensor([[0.6, 0.2, 0.1, 0.1]], dtype=torch.float64), 0.8)
    assert shrunk.classes.tolist() == [[True, False, False, True]]
    assert shrunk.weight.tolist() == [0.6]
    # tied maxima: class 0 is the label, class 1 is rank 1 (removed)
    shrunk = F.shrink_classes(torch.tensor([[0.45, 0.45, 0.05, 0.05]]), 0.8)  # c = 2
    assert shrunk.labels.tolist() == [0] and shrunk.classes.tolist() == [[True, False, True, True]]
    assert F.shrinkmatch(torch.tensor([[0.45, 0.45, 0.05, 0.05]])).labels.tolist() == [0]


def test_hand_cases_and_degenerate_inputs():
    # certain (all classes, weight 0); shrunk at c = 2; no c reaches tau (c = K − 1, weight 0)
    probs = torch.tensor(
        [[0.97, 0.02, 0.01, 0.0], [0.60, 0.37, 0.02, 0.01], [0.4, 0.3, 0.2, 0.1]],
        dtype=torch.float64,
    )
    shrunk = F.shrink_classes(probs, 0.95)
    assert shrunk.classes.tolist() == [
        [True, True, True, True],
        [True, False, True, True],
        [True, False, False, True],  # 0.4 / 0.5 < 0.95: the published loop stops at K − 1
    ]
    assert shrunk.weight.tolist() == [0.0, 0.6, 0.0]
    # K = 2: nothing to shrink
    two = F.shrink_classes(torch.tensor([[0.6, 0.4], [0.99, 0.01]]))
    assert two.weight.tolist() == [0.0, 0.0] and two.classes.all()
    # binary sigmoid output: two classes
    binary = F.shrink_classes(torch.tensor([[0.7], [0.2]]), 0.9, activation="sigmoid")
    assert binary.classes.shape == (2, 2) and not binary.weight.any()
    # tau = 0: every valid position certain; tau = 1: a sub_conf reaches 1 only with a 0 tail
    assert not F.shrink_classes(probs, 0.0).weight.any()
    exact = F.shrink_classes(torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64), 1.0)
    assert exact.weight.tolist() == [0.5] and exact.classes.tolist() == [[True, False, True]]
    # empty batch and all-ignored batch: finite, zero loss and zero gradient
    empty = F.shrink_classes(torch.zeros(0, 5))
    logits = torch.zeros(0, 5, requires_grad=True)
    assert pseudosel.shrunk_cross_entropy(logits, empty).item() == 0.0
    nan = torch.full((3, 4, 2), float("nan"))
    none = F.shrink_classes(nan, valid=torch.zeros(3, 2, dtype=torch.bool))
    assert not none.classes.any() and not none.weight.any()
    logits = torch.full((3, 4, 2), float("nan"), requires_grad=True)
    loss = pseudosel.shrunk_cross_entropy(logits, none, normalize="valid")
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(3, 4, 2))


def test_certain_ratio_number_or_tensor():
    probs, _ = draw_probs(50, 8, (), seed=2, dtype=torch.float32, sharpness=2.0)
    one = F.shrink_classes(probs, 0.9)
    half = F.shrink_classes(probs, 0.9, 0.5)
    tensor = F.shrink_classes(probs, 0.9, torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(half.weight, one.weight * 0.5)
    assert torch.equal(tensor.weight, half.weight) and torch.equal(tensor.classes, one.classes)
    assert one.weight.gt(0).sum() >= 5


def test_shrinkmatch_is_the_certain_set():
    probs, gen = draw_probs(40, 5, (3,), seed=4, dtype=torch.float32, sharpness=3.0)
    valid = torch.rand(40, 3, generator=gen) < 0.8
    sel = F.shrinkmatch(probs, 0.7, valid=valid)
    confidence, labels = probs.max(1)
    assert torch.equal(sel.mask, valid & (confidence >= 0.7))
    assert torch.equal(sel.weight, sel.mask.float()) and torch.equal(sel.labels, labels)
    shrunk = F.shrink_classes(probs, 0.7, valid=valid)
    assert not (shrunk.weight > 0)[sel.mask].any()  # the two sets are disjoint
    assert torch.equal(shrunk.labels[valid], sel.labels[valid])


def test_bad_arguments_name_themselves():
    probs = torch.tensor([[0.6, 0.3, 0.1]])
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\], got 1.5"):
        F.shrink_classes(probs, 1.5)
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\], got -0.1"):
        F.shrinkmatch(probs, -0.1)
    with pytest.raises(TypeError, match="tau must be a real number, got str"):
        F.shrink_classes(probs, "0.9")
    with pytest.raises(ValueError, match=r"certain_ratio must be in \[0, 1\], got 2"):
        F.shrink_classes(probs, 0.9, 2)
    with pytest.raises(TypeError, match=r"certain_ratio must be .* 0-dim tensor, got a .*\(3,\)"):
        F.shrink_classes(probs, 0.9, torch.ones(3))
    shrunk = F.shrink_classes(probs)
    with pytest.raises(ValueError, match=r"logits .* \(1, 4\) must match .* \(1, 3\)"):
        pseudosel.shrunk_cross_entropy(torch.zeros(1, 4), shrunk)
    with pytest.raises(TypeError, match="shrunk must be a pseudosel.ShrunkClasses"):
        pseudosel.shrunk_cross_entropy(torch.zeros(1, 3), F.shrinkmatch(probs))
    with pytest.raises(TypeError, match="logits must be a floating-point"):
        pseudosel.shrunk_cross_entropy(torch.zeros(1, 3, dtype=torch.long), shrunk)
    with pytest.raises(ValueError, match="normalize"):
        pseudosel.shrunk_cross_entropy(torch.zeros(1, 3), shrunk, normalize="mean")
