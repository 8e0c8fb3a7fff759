"""weighted_cross_entropy: each normalisation by hand, agreement with torch, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.tolerances import HALF_DTYPES, dtype_id

import pseudosel
from pseudosel import Selection, weighted_cross_entropy


def make_selection(labels, weight, mask=None, valid=None, device="cpu"):
    labels = torch.as_tensor(labels, device=device)
    weight = torch.as_tensor(weight, dtype=torch.float64, device=device)
    mask = weight == 1 if mask is None else torch.as_tensor(mask, device=device)
    valid = torch.ones_like(mask) if valid is None else torch.as_tensor(valid, device=device)
    return Selection(labels, weight, mask, torch.zeros_like(weight), valid)


def test_each_normalisation_by_hand(device):
    logits = torch.tensor(
        [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]], dtype=torch.float64, device=device
    )
    sel = make_selection(
        [0, 1, 0, 1], [1.0, 0.5, 1.0, 0.0], valid=[True, True, True, False], device=device
    )
    ce = [
        math.log(1 + math.exp(-2)),
        math.log(1 + math.exp(-1)),
        math.log(2),
        math.log(1 + math.exp(4)),
    ]
    total = 1.0 * ce[0] + 0.5 * ce[1] + 1.0 * ce[2]  # the ignored row counts for nothing
    expected = {
        "valid": total / 3,
        "selected": total / 2,
        "weight": total / 2.5,
        "batch": total / 4,
    }
    for normalize, value in expected.items():
        loss = weighted_cross_entropy(logits, sel, normalize=normalize)
        assert loss.item() == pytest.approx(value, rel=1e-12), normalize


def test_equals_torch_mean_when_everything_is_selected(device):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 5, 6, generator=gen).to(device)
    labels = torch.randint(0, 7, (4, 5, 6), generator=gen).to(device)
    sel = make_selection(labels, torch.ones(4, 5, 6), device=device)
    expected = F.cross_entropy(logits, labels)
    for normalize in ("valid", "selected", "weight", "batch"):
        got = weighted_cross_entropy(logits, sel, normalize=normalize)
        torch.testing.assert_close(got, expected)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 2, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.rand(3, 2, 2, dtype=torch.float64, generator=gen)
    valid = torch.rand(3, 2, 2, generator=gen) > 0.3
    sel = make_selection(
        torch.randint(0, 4, (3, 2, 2), generator=gen), weight, mask=weight > 0.5, valid=valid
    )
    for normalize in ("valid", "selected", "weight", "batch"):
        assert torch.autograd.gradcheck(
            lambda x, n=normalize: weighted_cross_entropy(x, sel, normalize=n), (logits,)
        )


def test_gradient_reaches_logits_only():
    logits = torch.randn(5, 3, requires_grad=True)
    weight = torch.rand(5, requires_grad=True)
    sel = Selection(
        torch.zeros(5, dtype=torch.long),
        weight,
        weight > 2,
        torch.zeros(5),
        torch.ones(5, dtype=torch.bool),
    )
    weighted_cross_entropy(logits, sel).backward()
    assert logits.grad is not None and weight.grad is None


@pytest.mark.parametrize("normalize", ["valid", "selected", "weight", "batch"])
def test_zero_denominators_give_zero_without_nan(normalize, device):
    logits = torch.randn(4, 3, device=device, requires_grad=True)
    nothing_valid = make_selection([0, 1, 2, 0], [0.0] * 4, valid=[False] * 4, device=device)
    soft_only = make_selection([0, 1, 2, 0], [0.3] * 4, device=device)  # soft weights only
    for sel in (nothing_valid, soft_only):
        loss = weighted_cross_entropy(logits, sel, normalize=normalize)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    empty = weighted_cross_entropy(
        torch.randn(0, 3, device=device),
        make_selection(torch.zeros(0, dtype=torch.long), torch.zeros(0), device=device),
        normalize=normalize,
    )
    assert empty.item() == 0


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=dtype_id)
def test_works_with_a_real_selection_and_half_logits(dtype, device):
    probs = torch.randn(2, 5, 8, 8, device=device).softmax(1)
    sel = pseudosel.select_reliable(probs)
    logits = torch.randn(2, 5, 8, 8, dtype=dtype, device=device, requires_grad=True)
    loss = weighted_cross_entropy(logits, sel)
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad.dtype == dtype


def test_errors():
    sel = make_selection([0, 1], [1.0, 1.0])
    with pytest.raises(
        ValueError, match=r"logits \(N, K, \*spatial\) \(3, 2\) must match .* \(2,\)"
    ):
        weighted_cross_entropy(torch.randn(3, 2), sel)
    with pytest.raises(ValueError, match="normalize must be one of 'valid', 'selected'"):
        weighted_cross_entropy(torch.randn(2, 2), sel, normalize="mean")
    with pytest.raises(TypeError, match="logits must be a floating-point"):
        weighted_cross_entropy(torch.ones(2, 2, dtype=torch.long), sel)
    with pytest.raises(TypeError, match="selection must be a pseudosel.Selection"):
        weighted_cross_entropy(torch.randn(2, 2), (sel.labels, sel.weight))
