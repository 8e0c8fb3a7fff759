"""Dash's decaying ρ_t against the literal float64 reference (helpers/adaptive_reference.py):
USB's soft targets until ρ_min, then hard labels; every input dtype; the blocked CPU loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.adaptive_reference import RefDash
from helpers.probability_maps import smooth_maps
from helpers.sequences import cls_batches, dense_batches, masked, numpy_of, rows
from helpers.tolerances import compute_dtype, tolerance

import pseudosel
import pseudosel.functional as F
import pseudosel.kernels.blocks as blocks


def hard_dash_mask(probs, rho):
    """The hard-label rule on its own: −log max p <= ρ (what the soft phase must not be)."""
    return -np.log(probs.max(1)) <= rho


def test_dash_follows_usb_soft_targets_until_rho_min_then_hard(device):
    # ρ: 2.0002, 1.0001, 0.50005, ..., floor 0.05 from the 7th update (step 12) on
    selector = pseudosel.DashSelector(2.0, update_every=2, gamma=2.0).to(device, torch.float64)
    ref = RefDash(2.0, 2, gamma=2.0)
    phases, soft_differs = [], False
    for t, probs in enumerate(cls_batches(steps=18, device=device)):
        sel = selector(probs)
        mask, loss = ref.step(numpy_of(probs))
        assert selector.rho.item() == pytest.approx(ref.rho, rel=1e-15), t
        assert bool(selector.use_hard_labels) == ref.use_hard_label, t
        np.testing.assert_array_equal(numpy_of(sel.mask), mask, err_msg=f"step {t}")
        np.testing.assert_allclose(numpy_of(sel.score), -loss, rtol=1e-12, atol=1e-15)
        assert torch.equal(sel.weight, sel.mask.double())
        assert torch.equal(sel.labels, probs.argmax(1))
        phases.append(ref.use_hard_label)
        if not ref.use_hard_label:
            soft_differs |= not np.array_equal(mask, hard_dash_mask(numpy_of(probs), ref.rho))
    assert phases == [False] * 12 + [True] * 6 and ref.rho == 0.05
    assert soft_differs  # the soft phase really keeps fewer positions than the hard rule


def test_dash_hard_labels_option_is_the_hard_rule_from_the_start(device):
    selector = pseudosel.DashSelector(2.0, update_every=3, gamma=2.0, hard_labels=True)
    selector = selector.to(device, torch.float64)
    ref = RefDash(2.0, 3, gamma=2.0, hard_labels=True)
    for t, probs in enumerate(cls_batches(steps=12, device=device)):
        sel = selector(probs)
        mask, loss = ref.step(numpy_of(probs))
        assert bool(selector.use_hard_labels)
        np.testing.assert_array_equal(numpy_of(sel.mask), mask, err_msg=f"step {t}")
        np.testing.assert_array_equal(mask, hard_dash_mask(numpy_of(probs), ref.rho))
        np.testing.assert_allclose(numpy_of(sel.score), np.log(numpy_of(probs).max(1)), rtol=1e-12)
    assert ref.rho > 0.05  # never reached ρ_min, hard all along


def test_dash_dense_with_validity_matches_reference(device):
    selector = pseudosel.DashSelector(1.0, update_every=2, gamma=2.0, T=0.7)
    selector = selector.to(device, torch.float64)
    ref = RefDash(1.0, 2, gamma=2.0, T=0.7)
    for probs, valid in dense_batches(steps=12, device=device):
        sel = selector(probs, valid=valid)
        mask, loss = ref.step(rows(probs, valid))
        np.testing.assert_array_equal(masked(sel.mask, valid), mask)
        np.testing.assert_allclose(masked(sel.score, valid), -loss, rtol=1e-12, atol=1e-15)
        assert not sel.mask[~valid].any() and (sel.score[~valid] == 0).all()
    assert ref.use_hard_label


def test_dash_computes_every_input_dtype_in_its_compute_dtype(dtype, device):
    # half and single precision in float32, float64 in float64
    selector = pseudosel.DashSelector(0.8, update_every=100).to(device)
    ref = RefDash(0.8, 100)
    probs = cls_batches(steps=4, device=device)[3].to(dtype)
    sel = selector(probs)
    mask, loss = ref.step(numpy_of(probs.double()))  # the module's rounded inputs
    assert sel.score.dtype == sel.weight.dtype == compute_dtype(dtype)
    rtol, atol = tolerance(dtype)
    np.testing.assert_allclose(numpy_of(sel.score.double()), -loss, rtol=rtol, atol=atol)
    away = np.abs(loss - ref.rho) > 1e-4
    np.testing.assert_array_equal(numpy_of(sel.mask)[away], mask[away])


def test_dash_soft_loss_handles_zero_probabilities_and_one_hot_rows(device):
    probs = torch.tensor(
        [[1.0, 0.0, 0.0], [0.7, 0.3, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
        device=device,
    )
    valid = torch.ones(4, dtype=torch.bool, device=device)
    sel = F.dash_select(probs, torch.tensor(0.5, device=device), valid=valid)
    # q = p² / Σ p²: (0.49, 0.09) / 0.58 for the second row
    second = -(0.49 * np.log(0.7) + 0.09 * np.log(0.3)) / 0.58
    np.testing.assert_allclose(numpy_of(sel.score), [0.0, -second, -np.log(2), 0.0], atol=1e-15)
    assert sel.mask.tolist() == [True, True, False, True]
    assert torch.isfinite(sel.score).all()


def test_dash_functional_phase_flag_tensor_or_bool(device):
    probs = cls_batches(steps=3, device=device)[2]
    valid = torch.rand(len(probs), generator=torch.Generator().manual_seed(0)) > 0.2
    valid = valid.to(device)
    rho = torch.tensor(0.6, dtype=torch.float64, device=device)
    for flag in (True, False):
        by_bool = F.dash_select(probs, rho, valid=valid, use_hard_labels=flag)
        by_tensor = F.dash_select(
            probs, rho, valid=valid, use_hard_labels=torch.tensor(flag, device=device)
        )
        for got, want in zip(by_tensor, by_bool, strict=True):
            assert torch.equal(got, want)
    soft = F.dash_select(probs, rho, valid=valid)  # default: USB's soft targets
    hard = F.dash_select(probs, rho, valid=valid, use_hard_labels=True)
    assert (soft.score <= hard.score).all()  # ℓ_soft >= ℓ_hard: the soft phase keeps less
    assert not (soft.mask & ~hard.mask).any() and soft.mask.sum() < hard.mask.sum()
    with pytest.raises(ValueError, match=r"T must be in \(0, inf\), got 0"):
        F.dash_select(probs, rho, valid=valid, T=0)
    with pytest.raises(ValueError, match="T must be in"):
        pseudosel.DashSelector(1.0, update_every=1, T=-1.0)
    with pytest.raises(TypeError, match="hard_labels must be a bool"):
        pseudosel.DashSelector(1.0, update_every=1, hard_labels=1)


def test_dash_blocked_soft_loss_equals_one_block(monkeypatch, dtype):
    # eager CPU blocks keep s and e in two reused buffers and sum e·s (s clamped where
    # p = 0) instead of xlogy(e, e): the same loss as one whole-input block, and finite
    probs = smooth_maps(3, 6, 14, 15, sharpness=6.0, seed=9).to(dtype)
    probs[0, :, 0, 0] = torch.tensor([1.0, 0, 0, 0, 0, 0])
    probs[1, :, 3, 4] = torch.tensor([0.7, 0.3, 0, 0, 0, 0], dtype=torch.float64).to(dtype)
    valid = torch.ones(3, 14, 15, dtype=torch.bool)
    rho = torch.tensor(0.4)
    whole = F.dash_select(probs, rho, valid=valid, T=0.7)
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 300)
    assert len(blocks.position_blocks(probs.reshape(3, 6, -1))) > 1
    blocked = F.dash_select(probs, rho, valid=valid, T=0.7)
    assert torch.isfinite(blocked.score).all()
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(blocked.score, whole.score, rtol=rtol, atol=atol)
    # q ∝ p^(1/T): the loss of (0.7, 0.3) is −Σ q·log p
    second = -(0.7 ** (1 / 0.7) * np.log(0.7) + 0.3 ** (1 / 0.7) * np.log(0.3))
    second /= 0.7 ** (1 / 0.7) + 0.3 ** (1 / 0.7)
    assert blocked.score[0, 0, 0] == 0
    if dtype == torch.float64:
        np.testing.assert_allclose(blocked.score[1, 3, 4].item(), -second, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dash_phase_read_on_the_host_rounds_rho_min_as_the_tensor_comparison(dtype):
    """On the CPU the module reads ρ as a number to choose the loss: ρ_min is rounded to
    ρ's dtype first, as ``rho <= rho_min`` rounds it — a ρ_min just below ρ that rounds to
    it means hard labels, in both forms."""
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]], dtype=dtype)
    probe = pseudosel.DashSelector(0.05, update_every=1).to(dtype)
    probe(probs)
    rho = probe.rho.item()
    rho_min = rho - 1e-12 if dtype == torch.float32 else rho  # rounds to ρ in float32
    selector = pseudosel.DashSelector(0.05, update_every=1, rho_min=rho_min).to(dtype)
    selection = selector(probs)
    assert bool(selector.use_hard_labels) and selector.rho.item() == rho
    hard_loss = -torch.log(probs.max(1).values)
    assert torch.equal(selection.score, -hard_loss)


@pytest.mark.parametrize("T", [0.05, 0.5, 5.0, 1e30, 1e37, 3e38])
def test_dash_soft_loss_is_finite_and_right_up_to_the_largest_temperature(T):
    """A class with p = 0 adds nothing at any T the dtype holds: as T grows the soft
    target tends to uniform over the classes with p > 0 (u's floor then lies beyond
    float32's range, and u / T is clamped instead)."""
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    score = F.dash_select(probs, torch.tensor(1.0), T=T).score
    q = probs.double() ** (1.0 / T)
    q = torch.where(probs > 0, q if T < 1e3 else (probs > 0).double(), 0.0)
    q = q / q.sum(1, keepdim=True)
    expected = (torch.special.xlogy(q, probs.double())).sum(1)
    torch.testing.assert_close(score.double(), expected, rtol=1e-5, atol=1e-6)
