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


@pytest.mark.parametrize("per_class", [False, True])
def test_softmatch_matches_reference(per_class):
    selector = pseudosel.SoftMatchSelector(6, momentum=0.9, per_class=per_class).double()
    ref = RefSoftMatch(6, momentum=0.9, per_class=per_class)
    start_from(ref, selector, "mu", "var")
    for probs in cls_batches():
        sel = selector(probs)
        np.testing.assert_allclose(
            sel.weight.numpy(), ref.step(probs.numpy()), rtol=1e-10, atol=1e-14
        )
        np.testing.assert_allclose(selector.mu.numpy(), ref.mu, rtol=1e-12)
        np.testing.assert_allclose(selector.var.numpy(), ref.var, rtol=1e-10)
        assert torch.equal(sel.mask, sel.weight == 1)


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


def test_dash_schedule_and_masks_match_reference():
    selector = pseudosel.DashSelector(2.0, update_every=3, gamma=2.0).double()
    ref = RefDash(2.0, 3, gamma=2.0)
    for probs in cls_batches(steps=20):
        sel = selector(probs)
        np.testing.assert_array_equal(sel.mask.numpy(), ref.step(probs.numpy()))
        assert selector.rho.item() == pytest.approx(ref.rho, rel=1e-15)
    assert ref.rho == 0.05 and bool(selector.use_hard_labels)


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
