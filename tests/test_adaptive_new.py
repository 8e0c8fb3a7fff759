"""CorrMatch threshold, queue distribution alignment and Adsh against literal float64
references (tests/adaptive_reference.py), over multi-step sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from adaptive_reference import RefAdsh, RefCorrMatch, RefDistAlignQueue
from test_adaptive import cls_batches, dense_batches, masked, rows

import pseudosel
import pseudosel.functional as F

# ---------------------------------------------------------------- CorrMatch


@pytest.mark.parametrize("momentum", [0.999, 0.9, 0.5])
def test_corrmatch_classification_matches_reference(momentum):
    selector = pseudosel.CorrMatchSelector(6, momentum=momentum).double()
    ref = RefCorrMatch(momentum=momentum, thresh_init=selector.thresh.item())  # float32 0.85
    worst = 0.0
    for t, probs in enumerate(cls_batches(steps=12)):
        sel = selector(probs)
        np.testing.assert_array_equal(sel.mask.numpy(), ref.step(probs.numpy()), f"step {t}")
        worst = max(worst, abs(selector.thresh.item() - ref.thresh))
    assert worst <= 1e-15


def test_corrmatch_dense_with_validity_matches_reference():
    selector = pseudosel.CorrMatchSelector(5, momentum=0.8).double()
    ref = RefCorrMatch(momentum=0.8, thresh_init=selector.thresh.item())
    for probs, valid in dense_batches(steps=12):
        sel = selector(probs, valid=valid)
        np.testing.assert_array_equal(masked(sel.mask, valid), ref.step(rows(probs, valid)))
        assert not sel.mask[~valid].any()
        assert abs(selector.thresh.item() - ref.thresh) <= 1e-15


def test_corrmatch_float32_module_tracks_reference():
    selector = pseudosel.CorrMatchSelector(5, momentum=0.9)
    ref = RefCorrMatch(momentum=0.9)
    for probs, valid in dense_batches(steps=8):
        selector(probs.float(), valid=valid)
        ref.step(rows(probs.float().double(), valid))
        assert abs(selector.thresh.item() - ref.thresh) <= 1e-6


def test_corrmatch_updates_before_selecting_and_skips_absent_classes():
    selector = pseudosel.CorrMatchSelector(3, momentum=0.5).double()
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]], dtype=torch.float64)
    sel = selector(probs)
    # class 2 predicted nowhere: batch = (0.9 + 0.7) / 2; τ = 0.5·0.85 + 0.5·0.8 = 0.825
    assert selector.thresh.item() == pytest.approx(0.825)
    assert sel.mask.tolist() == [True, False, False]
    # an ignored position does not count, even as a class's only prediction
    selector = pseudosel.CorrMatchSelector(3, momentum=0.5).double()
    selector(probs, valid=torch.tensor([True, True, False]))
    assert selector.thresh.item() == pytest.approx(0.5 * 0.85 + 0.5 * 0.9)


def test_corrmatch_all_ignored_and_eval_leave_state_unchanged():
    selector = pseudosel.CorrMatchSelector(4)
    probs = torch.randn(2, 4, 3, 3).softmax(1)
    selector(probs, valid=torch.zeros(2, 3, 3, dtype=torch.bool))
    assert selector.thresh.item() == pytest.approx(0.85)
    selector.eval()
    selector(probs)
    assert selector.thresh.item() == pytest.approx(0.85)
    selector.train()
    selector.update(probs)
    frozen = selector.thresh.clone()
    selector.eval()
    assert torch.equal(selector(probs).mask, probs.amax(1) >= frozen)


def test_corrmatch_module_equals_functional():
    module = pseudosel.CorrMatchSelector(5, momentum=0.9, thresh_init=0.7)
    state = F.corrmatch_init(thresh_init=0.7)
    for probs, valid in dense_batches(steps=4):
        probs = probs.float()
        got = module(probs, valid=valid)
        state = F.corrmatch_update(probs, state, valid=valid, momentum=0.9)
        expected = F.corrmatch_select(probs, state, valid=valid)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)


# ---------------------------------------------------------------- queue alignment


@pytest.mark.parametrize("queue_length", [1, 3, 5, 128])
@pytest.mark.parametrize("target", ["uniform", "model", "given"])
def test_alignment_queue_matches_reference(queue_length, target):
    k = 6
    given = torch.tensor([0.3, 0.2, 0.2, 0.1, 0.1, 0.1], dtype=torch.float64)
    option = {"uniform": None, "model": "model", "given": given}[target]
    module = pseudosel.DistributionAlignmentQueue(k, queue_length=queue_length, target=option)
    module = module.double()
    ref = RefDistAlignQueue(k, queue_length, target, given.numpy())
    ref.p_target = module.p_target.numpy().copy()  # 1/K and the given rows, float32-rounded
    worst = 0.0
    for t, probs in enumerate(cls_batches(steps=12)):
        labeled = cls_batches(n=8, k=k, steps=1, seed=100 + t)[0]
        got = module(probs, labeled)
        expected = ref.step(probs.numpy(), labeled.numpy())
        worst = max(worst, float(np.abs(got.numpy() - expected).max()))
        np.testing.assert_allclose(module.p_model.numpy(), ref.p_model, rtol=0, atol=1e-15)
        np.testing.assert_allclose(module.p_target.numpy(), ref.p_target, rtol=0, atol=1e-15)
        assert int(module.p_model_ptr) == ref.p_model_ptr
    assert worst <= 1e-13


def test_alignment_queue_dense_with_validity_matches_reference():
    module = pseudosel.DistributionAlignmentQueue(5, queue_length=4).double()
    ref = RefDistAlignQueue(5, 4)
    ref.p_target = module.p_target.numpy().copy()
    for probs, valid in dense_batches(steps=10):
        got = module(probs, valid=valid)
        expected = ref.step(rows(probs, valid))
        np.testing.assert_allclose(rows(got, valid), expected, rtol=0, atol=1e-13)
        np.testing.assert_allclose(module.p_model.numpy(), ref.p_model, rtol=0, atol=1e-15)


def test_alignment_queue_zero_rows_count_and_empty_batch_is_skipped():
    module = pseudosel.DistributionAlignmentQueue(2, queue_length=4).double()
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4]], dtype=torch.float64)
    module(probs)
    torch.testing.assert_close(module.p_model[0], torch.tensor([0.7, 0.3], dtype=torch.float64))
    assert module.p_model[1:].abs().sum() == 0 and int(module.p_model_ptr) == 1
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module(probs, valid=torch.zeros(2, dtype=torch.bool))
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key
    module.eval()
    module(probs)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key


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


# ---------------------------------------------------------------- Adsh


def imbalanced_set(n, k, epoch, seed=0):
    """An unlabelled set with a head class 0 and a long tail, sharper every epoch."""
    gen = torch.Generator().manual_seed(seed + epoch)
    weights = torch.tensor([0.5**c for c in range(k)], dtype=torch.float64)
    labels = torch.multinomial(weights, n, replacement=True, generator=gen)
    logits = torch.randn(n, k, generator=gen, dtype=torch.float64)
    logits[torch.arange(n), labels] += 2.0 + 0.5 * epoch
    return (logits * (1.0 + 0.3 * epoch)).softmax(1)


@pytest.mark.parametrize("calibration_class", [0, None])
@pytest.mark.parametrize("tau_1", [0.95, 0.8])
def test_adsh_matches_reference_over_epochs(tau_1, calibration_class):
    n, k, batch = 120, 6, 16
    selector = pseudosel.AdshSelector(
        k, n, tau_1=tau_1, calibration_class=calibration_class
    ).double()
    ref = RefAdsh(k, tau_1=tau_1, calibration_class=calibration_class)
    ref.s = selector.s.numpy().copy()  # τ₁ rounded to float32 at construction
    worst = 0.0
    for epoch in range(6):
        data = imbalanced_set(n, k, epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for start in range(0, n, batch):  # training steps: masking only
            probs = data[order[start : start + batch]]
            np.testing.assert_array_equal(selector(probs).mask.numpy(), ref.mask(probs.numpy()))
        for start in range(0, n, batch):  # the epoch-end pass, in batches, shuffled
            index = order[start : start + batch]
            selector.update(data[index], index)
        selector.calibrate()
        ref.epoch_end(data.numpy())
        worst = max(worst, float(np.abs(selector.s.numpy() - ref.s).max()))
    assert (
        worst <= 1e-15
    )  # the same entries are picked; torch's log and libm's may differ by an ulp
    assert len(set(np.round(ref.s, 6))) > 1  # class-wise thresholds actually differ


def test_adsh_float_rounding_quirk_and_rho_edge_cases():
    # n_0 = 49 with two head samples above τ₁: ρ = 1/49; ⌊49 · (1/49)⌋ = 0 in float64, so the
    # index is −1: the LAST (least confident) entry, as int(len(C) * rho) - 1 gives in USB
    k = 2
    conf0 = torch.linspace(0.99, 0.6, 49, dtype=torch.float64)
    conf0[2:] = conf0[2:].clamp_max(0.94)
    conf1 = torch.linspace(0.9, 0.55, 49, dtype=torch.float64)
    probs = torch.cat((torch.stack((conf0, 1 - conf0), 1), torch.stack((1 - conf1, conf1), 1)))
    for tau_1 in (0.95, 0.995, 0.5):  # ρ = 1/49; m = 0 (ρ = 1); m = 49 (ρ = 48/49)
        selector = pseudosel.AdshSelector(k, 98, tau_1=tau_1).double()
        ref = RefAdsh(k, tau_1=tau_1)
        selector.update(probs, torch.arange(98))
        selector.calibrate()
        ref.epoch_end(probs.numpy())
        np.testing.assert_allclose(selector.s.numpy(), ref.s, rtol=0, atol=1e-15)
    assert int(49 * (1 / 49)) == 0


def test_adsh_empty_class_keeps_score_and_ignored_rows_are_not_recorded():
    selector = pseudosel.AdshSelector(3, 4).double()
    probs = torch.tensor(
        [[0.97, 0.02, 0.01], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]],
        dtype=torch.float64,
    )
    selector.update(probs, torch.arange(4), valid=torch.tensor([True, True, True, False]))
    assert selector.prediction.tolist() == [0, 0, 1, -1]
    selector.calibrate()
    # ρ = 0 (one head sample passes) → every class takes its last entry; class 2 unseen
    torch.testing.assert_close(
        selector.thresholds()[:2], torch.tensor([0.9, 0.7], dtype=torch.float64)
    )
    assert selector.s[2].item() == pytest.approx(0.95)
    assert selector.prediction.tolist() == [-1] * 4  # records reset for the next pass


def test_adsh_module_equals_functional():
    data = imbalanced_set(50, 4, 2).float()
    selector = pseudosel.AdshSelector(4, 50)
    selector.update(data, torch.arange(50))
    selector.calibrate()
    conf, labels = data.max(1)
    state = F.adsh_calibrate(conf, labels, F.adsh_init(4))
    assert torch.equal(selector.s, state.s)
    valid = torch.ones(50, dtype=torch.bool)
    for a, b in zip(selector(data), F.adsh_select(data, state, valid=valid), strict=True):
        assert torch.equal(a, b)
