"""Adaptive selectors against literal float64 references, over multi-step sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from adaptive_reference import (
    RefDash,
    RefDistAlign,
    RefFlexMatch,
    RefFreeMatch,
    RefSoftMatch,
    RefU2PL,
    ref_adamatch,
)
from probability_maps import classifier_outputs, smooth_maps

import pseudosel
import pseudosel.functional as F
import pseudosel.kernels.blocks as blocks

STEPS = 8


def cls_batches(n=24, k=6, steps=STEPS, seed=0):
    """Classification batches growing more confident, as during training (float64)."""
    return [
        classifier_outputs(n, k, sharpness=1.0 + 1.5 * t, seed=seed + t, dtype=torch.float64)
        for t in range(steps)
    ]


def dense_batches(n=2, k=5, size=9, steps=STEPS, seed=0):
    out = []
    for t in range(steps):
        probs = smooth_maps(n, k, size, size, sharpness=2.0 + t, seed=seed + t, dtype=torch.float64)
        valid = torch.rand(n, size, size, generator=torch.Generator().manual_seed(t)) > 0.25
        out.append((probs, valid))
    return out


def rows(probs, valid=None):
    """(N, K, *spatial) → (n_valid, K) numpy rows of valid positions, in memory order."""
    flat = probs.movedim(1, -1).reshape(-1, probs.shape[1])
    if valid is not None:
        flat = flat[valid.flatten()]
    return flat.numpy()


def start_from(ref, selector, *names):
    """Give the reference the module's initial state (1/K is rounded to float32 there)."""
    for name in names:
        value = getattr(selector, name).numpy().copy()
        setattr(ref, name, value if value.ndim else value.item())


def masked(values, valid):
    return values.flatten()[valid.flatten()].numpy() if valid is not None else values.numpy()


# ---------------------------------------------------------------- FlexMatch


@pytest.mark.parametrize("warmup", [True, False])
@pytest.mark.parametrize("mapping", ["convex", "linear", "concave"])
def test_flexmatch_per_sample_matches_reference(warmup, mapping):
    num_unlabeled, k = 40, 6
    selector = pseudosel.FlexMatchSelector(
        k, num_unlabeled, tau=0.9, warmup=warmup, mapping=mapping
    ).double()
    ref = RefFlexMatch(k, num_unlabeled, tau=0.9, warmup=warmup, mapping=mapping)
    gen = torch.Generator().manual_seed(1)
    for t, probs in enumerate(cls_batches()):
        index = torch.randint(0, num_unlabeled, (len(probs),), generator=gen)  # duplicates too
        sel = selector(probs, index=index)
        expected = ref.step(probs.numpy(), index.numpy())
        np.testing.assert_array_equal(sel.mask.numpy(), expected, err_msg=f"step {t}")
        assert selector.selected_label.tolist() == ref.selected_label
        np.testing.assert_allclose(selector.classwise_acc.numpy(), ref.classwise_acc, rtol=1e-15)
        # incremental counts equal a full recount at every step
        recount = torch.bincount(selector.selected_label + 1, minlength=k + 1)
        assert selector.counts.tolist() == recount[1:].tolist() + [recount[0].item()]
        assert selector.counts.tolist() == ref.counts()
    assert (selector.selected_label >= 0).sum() > 10  # the curriculum actually moved


def test_flexmatch_first_step_passes_everything_and_records_with_fixed_tau():
    selector = pseudosel.FlexMatchSelector(3, 4, tau=0.95)
    probs = torch.tensor([[0.4, 0.3, 0.3], [0.96, 0.02, 0.02], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    sel = selector(probs, index=torch.arange(4))
    assert sel.mask.all()  # β = 0 → T(k) = 0: the published early behaviour
    # only the sample above the FIXED τ = 0.95 is recorded, not those above their T(k) = 0
    assert selector.selected_label.tolist() == [-1, 0, -1, -1]
    # counts: σ = (1, 0, 0), unused 3 → warm-up β = σ / max(1, 3)
    assert selector.counts.tolist() == [1, 0, 0, 3]
    torch.testing.assert_close(selector.classwise_acc, torch.tensor([1 / 3, 0.0, 0.0]))
    torch.testing.assert_close(selector.thresholds(), 0.95 * torch.tensor([0.2, 0.0, 0.0]))


def test_flexmatch_classwise_dense_matches_reference():
    selector = pseudosel.FlexMatchSelector(5, tau=0.8).double()
    ref = RefFlexMatch(5, None, tau=0.8)
    for probs, valid in dense_batches():
        sel = selector(probs, valid=valid)
        expected = ref.step(rows(probs, valid))
        np.testing.assert_array_equal(masked(sel.mask, valid), expected)
        assert not sel.mask[~valid].any()
        assert selector.counts.tolist() == ref.counts()
        np.testing.assert_allclose(selector.classwise_acc.numpy(), ref.classwise_acc, rtol=1e-15)


def test_flexmatch_eval_mode_selects_without_recording():
    selector = pseudosel.FlexMatchSelector(6, 40)
    selector(cls_batches()[5], index=torch.arange(24))
    state = {k: v.clone() for k, v in selector.state_dict().items()}
    selector.eval()
    selector(cls_batches()[6], index=torch.arange(24))
    for key, value in selector.state_dict().items():
        assert torch.equal(value, state[key])


# ---------------------------------------------------------------- FreeMatch


@pytest.mark.parametrize(
    "options",
    [{}, {"use_quantile": True}, {"clip_thresh": True, "momentum": 0.5}],
    ids=["mean", "quantile", "clip"],
)
def test_freematch_matches_reference(options):
    selector = pseudosel.FreeMatchSelector(6, **options).double()
    ref = RefFreeMatch(6, **options)
    start_from(ref, selector, "time_p", "p_model", "label_hist")
    for probs in cls_batches():
        sel = selector(probs)
        np.testing.assert_array_equal(sel.mask.numpy(), ref.step(probs.numpy()))
        np.testing.assert_allclose(selector.time_p.item(), ref.time_p, rtol=1e-12)
        np.testing.assert_allclose(selector.p_model.numpy(), ref.p_model, rtol=1e-12)
        np.testing.assert_allclose(selector.label_hist.numpy(), ref.label_hist, rtol=1e-12)


def test_freematch_updates_before_selecting():
    # τ₀ = 1/K; after one update with m = 0.5 on confidences (0.9, 0.5): τ = 0.5/2 + 0.35
    selector = pseudosel.FreeMatchSelector(2, momentum=0.5).double()
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    sel = selector(probs)
    assert selector.time_p.item() == pytest.approx(0.25 + 0.35)
    # p̃ = (0.25 + 0.35, 0.25 + 0.15) → local factors (1, 0.4 / 0.6); 0.5 >= 0.6 fails
    assert sel.mask.tolist() == [True, False]


def test_freematch_dense_with_validity_matches_reference():
    selector = pseudosel.FreeMatchSelector(5, use_quantile=True).double()
    ref = RefFreeMatch(5, use_quantile=True)
    start_from(ref, selector, "time_p", "p_model", "label_hist")
    for probs, valid in dense_batches():
        sel = selector(probs, valid=valid)
        np.testing.assert_array_equal(masked(sel.mask, valid), ref.step(rows(probs, valid)))
        np.testing.assert_allclose(selector.p_model.numpy(), ref.p_model, rtol=1e-12)


# ---------------------------------------------------------------- SoftMatch


@pytest.mark.parametrize("n_sigma", [2.0, 0.7, 3.5])
@pytest.mark.parametrize("per_class", [False, True])
def test_softmatch_matches_reference(per_class, n_sigma):
    selector = pseudosel.SoftMatchSelector(
        6, momentum=0.9, n_sigma=n_sigma, per_class=per_class
    ).double()
    ref = RefSoftMatch(6, momentum=0.9, n_sigma=n_sigma, per_class=per_class)
    start_from(ref, selector, "mu", "var")
    for probs in cls_batches():
        sel = selector(probs)
        np.testing.assert_allclose(
            sel.weight.numpy(), ref.step(probs.numpy()), rtol=1e-10, atol=1e-14
        )
        np.testing.assert_allclose(selector.mu.numpy(), ref.mu, rtol=1e-12)
        np.testing.assert_allclose(selector.var.numpy(), ref.var, rtol=1e-10)
        assert torch.equal(sel.mask, sel.weight == 1)
    # n_sigma matters: a wider factor gives smaller weights below the mean
    if n_sigma != 2.0:
        default = pseudosel.SoftMatchSelector(6, per_class=per_class).double().eval()
        default.load_state_dict(selector.state_dict())
        selector.eval()
        uncertain = cls_batches()[0]  # early, unconfident predictions: weights below 1
        ours, theirs = selector(uncertain).weight, default(uncertain).weight
        wider = (theirs >= ours) if n_sigma > 2.0 else (theirs <= ours)
        assert wider.all() and not torch.equal(ours, theirs)


def test_softmatch_per_class_quirk_rare_classes_pull_towards_zero_one():
    selector = pseudosel.SoftMatchSelector(3, momentum=0.5, per_class=True).double()
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.1, 0.7, 0.2]], dtype=torch.float64)
    selector(probs)
    # class 0: two samples → mean 0.7, variance 0.02; classes 1 and 2: (0, 1) as in USB
    torch.testing.assert_close(
        selector.mu, torch.tensor([0.5 / 3 + 0.35, 0.5 / 3, 0.5 / 3], dtype=torch.float64)
    )
    torch.testing.assert_close(
        selector.var, torch.tensor([0.5 + 0.01, 1.0, 1.0], dtype=torch.float64)
    )


def test_softmatch_single_position_batches_stay_finite():
    selector = pseudosel.SoftMatchSelector(3)
    for _ in range(3):
        sel = selector(torch.tensor([[0.5, 0.3, 0.2]]))
        assert torch.isfinite(selector.var) and torch.isfinite(sel.weight).all()
    sel = selector(torch.zeros(0, 3))
    assert torch.isfinite(selector.mu) and sel.weight.shape == (0,)


# ---------------------------------------------------------------- AdaMatch, Dash, U2PL, DA


def test_adamatch_matches_reference():
    selector = pseudosel.AdaMatchSelector(0.9)
    for t, probs in enumerate(cls_batches()):
        labeled = classifier_outputs(12, 6, sharpness=3.0, seed=100 + t, dtype=torch.float64)
        sel = selector(probs, labeled)
        np.testing.assert_array_equal(
            sel.mask.numpy(), ref_adamatch(probs.numpy(), labeled.numpy(), 0.9)
        )
        via_name = pseudosel.select_reliable(probs, "adamatch", probs_labeled=labeled, tau=0.9)
        via_module = pseudosel.select_reliable(probs, selector, probs_labeled=labeled)
        assert torch.equal(via_name.mask, sel.mask) and torch.equal(via_module.mask, sel.mask)


def hard_dash_mask(probs, rho):
    """The hard-label rule on its own: −log max p <= ρ (what the soft phase must not be)."""
    return -np.log(probs.max(1)) <= rho


def test_dash_follows_usb_soft_targets_until_rho_min_then_hard():
    # ρ: 2.0002, 1.0001, 0.50005, ..., floor 0.05 from the 7th update (step 12) on
    selector = pseudosel.DashSelector(2.0, update_every=2, gamma=2.0).double()
    ref = RefDash(2.0, 2, gamma=2.0)
    phases, soft_differs = [], False
    for t, probs in enumerate(cls_batches(steps=18)):
        sel = selector(probs)
        mask, loss = ref.step(probs.numpy())
        assert selector.rho.item() == pytest.approx(ref.rho, rel=1e-15), t
        assert bool(selector.use_hard_labels) == ref.use_hard_label, t
        np.testing.assert_array_equal(sel.mask.numpy(), mask, err_msg=f"step {t}")
        np.testing.assert_allclose(sel.score.numpy(), -loss, rtol=1e-12, atol=1e-15)
        assert torch.equal(sel.weight, sel.mask.double())
        assert torch.equal(sel.labels, probs.argmax(1))
        phases.append(ref.use_hard_label)
        if not ref.use_hard_label:
            soft_differs |= not np.array_equal(mask, hard_dash_mask(probs.numpy(), ref.rho))
    assert phases == [False] * 12 + [True] * 6 and ref.rho == 0.05
    assert soft_differs  # the soft phase really keeps fewer positions than the hard rule


def test_dash_hard_labels_option_is_the_hard_rule_from_the_start():
    selector = pseudosel.DashSelector(2.0, update_every=3, gamma=2.0, hard_labels=True).double()
    ref = RefDash(2.0, 3, gamma=2.0, hard_labels=True)
    for t, probs in enumerate(cls_batches(steps=12)):
        sel = selector(probs)
        mask, loss = ref.step(probs.numpy())
        assert bool(selector.use_hard_labels)
        np.testing.assert_array_equal(sel.mask.numpy(), mask, err_msg=f"step {t}")
        np.testing.assert_array_equal(mask, hard_dash_mask(probs.numpy(), ref.rho))
        np.testing.assert_allclose(sel.score.numpy(), np.log(probs.numpy().max(1)), rtol=1e-12)
    assert ref.rho > 0.05  # never reached ρ_min, hard all along


def test_dash_dense_with_validity_matches_reference():
    selector = pseudosel.DashSelector(1.0, update_every=2, gamma=2.0, T=0.7).double()
    ref = RefDash(1.0, 2, gamma=2.0, T=0.7)
    for probs, valid in dense_batches(steps=12):
        sel = selector(probs, valid=valid)
        mask, loss = ref.step(rows(probs, valid))
        np.testing.assert_array_equal(masked(sel.mask, valid), mask)
        np.testing.assert_allclose(masked(sel.score, valid), -loss, rtol=1e-12, atol=1e-15)
        assert not sel.mask[~valid].any() and (sel.score[~valid] == 0).all()
    assert ref.use_hard_label


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_dash_half_and_single_precision_compute_in_float32(dtype):
    selector = pseudosel.DashSelector(0.8, update_every=100)
    ref = RefDash(0.8, 100)
    probs = cls_batches(steps=4)[3].to(dtype)
    sel = selector(probs)
    mask, loss = ref.step(probs.double().numpy())  # the module's rounded inputs
    assert sel.score.dtype == sel.weight.dtype == torch.float32
    np.testing.assert_allclose(sel.score.double().numpy(), -loss, rtol=2e-5, atol=1e-6)
    away = np.abs(loss - ref.rho) > 1e-4
    np.testing.assert_array_equal(sel.mask.numpy()[away], mask[away])


def test_dash_soft_loss_handles_zero_probabilities_and_one_hot_rows():
    probs = torch.tensor(
        [[1.0, 0.0, 0.0], [0.7, 0.3, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    sel = F.dash_select(probs, torch.tensor(0.5), valid=torch.ones(4, dtype=torch.bool))
    # q = p² / Σ p²: (0.49, 0.09) / 0.58 for the second row
    second = -(0.49 * np.log(0.7) + 0.09 * np.log(0.3)) / 0.58
    np.testing.assert_allclose(sel.score.numpy(), [0.0, -second, -np.log(2), 0.0], atol=1e-15)
    assert sel.mask.tolist() == [True, True, False, True]
    assert torch.isfinite(sel.score).all()


def test_dash_functional_phase_flag_tensor_or_bool():
    probs = cls_batches(steps=3)[2]
    valid = torch.rand(len(probs), generator=torch.Generator().manual_seed(0)) > 0.2
    rho = torch.tensor(0.6, dtype=torch.float64)
    for flag in (True, False):
        by_bool = F.dash_select(probs, rho, valid=valid, use_hard_labels=flag)
        by_tensor = F.dash_select(probs, rho, valid=valid, use_hard_labels=torch.tensor(flag))
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


def test_dash_eval_mode_keeps_state_and_phase():
    selector = pseudosel.DashSelector(1.0, update_every=1, gamma=4.0)
    for probs in cls_batches(steps=4):
        selector(probs.float())
    assert bool(selector.use_hard_labels)  # 4th update: 1.0001 / 4³ < 0.05
    state = {k: v.clone() for k, v in selector.state_dict().items()}
    selector.eval()
    probs = cls_batches(steps=5)[4].float()
    sel = selector(probs)
    expected = F.dash_select(probs, selector.rho, valid=sel.valid, use_hard_labels=True)
    assert torch.equal(sel.mask, expected.mask) and torch.equal(sel.score, expected.score)
    for key, value in selector.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert "T=0.5, hard_labels=False" in repr(selector)


def test_dash_builds_no_graph_and_does_not_sync():
    from host_sync_guard import forbid_host_sync

    selector = pseudosel.DashSelector(1.0, update_every=2, validate=False)
    logits = torch.randn(16, 5, requires_grad=True)
    with forbid_host_sync():
        for _ in range(3):
            sel = selector(logits.softmax(1))
        direct = F.dash_select(
            logits.softmax(1),
            selector.rho,
            valid=sel.valid,
            use_hard_labels=selector.use_hard_labels,
            validate=False,  # value checks read the host on a CPU (device-side elsewhere)
        )
    assert not sel.score.requires_grad and not sel.weight.requires_grad
    assert not direct.score.requires_grad
    assert all(b.grad_fn is None for b in selector.buffers())
    assert int(selector.step) == 3 and int(selector.update_count) == 2


def test_u2pl_split_matches_numpy_percentile():
    selector = pseudosel.EntropySplitSelector(4).double()
    ref = RefU2PL(4)
    for probs, valid in dense_batches(steps=6):
        sel = selector(probs, valid=valid)
        np.testing.assert_array_equal(masked(sel.mask, valid), ref.step(rows(probs, valid)))
    # after T steps α = 0, yet the maximum-entropy positions are still dropped (as in U2PL)
    probs, valid = dense_batches(steps=1)[0]
    sel = selector(probs, valid=valid)
    assert 0 < (valid & ~sel.mask).sum() <= 2


def test_entropy_split_functional_share():
    probs = smooth_maps(4, 5, 20, 20, seed=3)
    sel = F.entropy_split(probs, 0.3)
    assert abs(sel.ratio().item() - 0.7) < 0.01
    assert torch.equal(sel.score, -pseudosel.features.entropy(probs))


@pytest.mark.parametrize("target", [None, "model"])
def test_distribution_alignment_matches_reference(target):
    align = pseudosel.DistributionAlignment(6, momentum=0.9, target=target).double()
    ref = RefDistAlign(6, momentum=0.9, target_model=target == "model")
    start_from(ref, align, "p_target")
    for t, probs in enumerate(cls_batches()):
        labeled = classifier_outputs(12, 6, seed=50 + t, dtype=torch.float64)
        aligned = align(probs, labeled)
        np.testing.assert_allclose(
            aligned.numpy(), ref.step(probs.numpy(), labeled.numpy()), rtol=1e-12
        )
    np.testing.assert_allclose(align.p_model.numpy(), ref.p_model, rtol=1e-12)


def test_distribution_alignment_dense_keeps_shape_and_normalisation():
    probs, valid = dense_batches()[0]
    aligned = pseudosel.DistributionAlignment(5)(probs, valid=valid)
    assert aligned.shape == probs.shape
    torch.testing.assert_close(aligned.sum(1), torch.ones_like(aligned.sum(1)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
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
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(blocked.score, whole.score, rtol=tol, atol=tol)
    # q ∝ p^(1/T): the loss of (0.7, 0.3) is −Σ q·log p
    second = -(0.7 ** (1 / 0.7) * np.log(0.7) + 0.3 ** (1 / 0.7) * np.log(0.3))
    second /= 0.7 ** (1 / 0.7) + 0.3 ** (1 / 0.7)
    assert blocked.score[0, 0, 0] == 0
    if dtype == torch.float64:
        np.testing.assert_allclose(blocked.score[1, 3, 4].item(), -second, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_masked_class_sums_blocked_equal_one_block(monkeypatch, dtype):
    # eager CPU blocks zero ignored positions into one reused buffer; NaN/Inf there never
    # reach the sums, and the blocked sums equal the one-block ones
    from pseudosel.functional.alignment import masked_class_sums

    probs = smooth_maps(3, 6, 14, 15, sharpness=6.0, seed=4).to(dtype)
    valid = torch.rand(3, 14, 15, generator=torch.Generator().manual_seed(0)) > 0.3
    probs[0, :, 1, 1] = float("nan")
    probs[2, 2, 5, 5] = float("inf")
    valid[0, 1, 1] = valid[2, 5, 5] = False
    work = torch.float64 if dtype == torch.float64 else torch.float32
    whole = masked_class_sums(probs, valid, work)
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 300)
    assert len(blocks.position_blocks(probs.reshape(3, 6, -1))) > 1
    blocked = masked_class_sums(probs, valid, work)
    expected = torch.where(valid[:, None], probs.double(), 0.0).sum((0, 2, 3))
    assert torch.isfinite(blocked).all()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(blocked, whole, rtol=tol, atol=tol)
    torch.testing.assert_close(blocked.double(), expected, rtol=tol, atol=tol)
