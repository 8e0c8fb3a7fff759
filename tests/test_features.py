"""Features: hand-computed cases, the residual variants, precision hazards, errors."""

from __future__ import annotations

import contextlib
import inspect
import math

import numpy as np
import pytest
import torch
from helpers.csl_reference import reference_features
from helpers.probability_maps import classifier_outputs, smooth_maps
from helpers.tolerances import DTYPES, HALF_DTYPES, compute_dtype, dtype_id, numpy_of
from hypothesis import given
from hypothesis import strategies as st

import pseudosel.features as features
import pseudosel.kernels.blocks as blocks
from pseudosel.features import csl_features, entropy, margin, max_confidence, residual_moments


def t(*rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def test_csl_features_hand_computed_three_classes():
    # r = 0.4, residuals (0.3, 0.1): population variance 0.01, g = 2^2 / (2 * 0.4) = 5.
    c, s, labels = csl_features(t([0.6, 0.3, 0.1]), residual="theory")
    assert c.item() == pytest.approx(0.6)
    assert s.item() == pytest.approx(0.05)
    assert labels.item() == 0
    # the authors' code: mean 0.2 over the residuals, squares over all three slots with the
    # arg-max zeroed, (0.01 + 0.01 + 0.04) / 2 = 0.03, times g = 5
    _, s_reference, _ = csl_features(t([0.6, 0.3, 0.1]), residual="reference")
    assert s_reference.item() == pytest.approx(0.15)


def test_csl_features_hand_computed_four_classes():
    # k* = 1, r = 0.5, residuals (0.1, 0.3, 0.1): variance 2/225, g = 9 / (2 * 0.5) = 9.
    c, s, labels = csl_features(t([0.1, 0.5, 0.3, 0.1]), residual="theory")
    assert (c.item(), labels.item()) == (pytest.approx(0.5), 1)
    assert s.item() == pytest.approx(9 * 2 / 225)


def test_reference_residual_variant_adds_r_over_2_k_minus_1():
    _, theory, _ = csl_features(t([0.1, 0.5, 0.3, 0.1]), residual="theory")
    _, reference, _ = csl_features(t([0.1, 0.5, 0.3, 0.1]), residual="reference")
    assert (reference - theory).item() == pytest.approx(0.5 / (2 * 3))


def test_g_scale_multiplies_s():
    _, s1, _ = csl_features(t([0.6, 0.3, 0.1]), residual="theory")
    _, s_half, _ = csl_features(t([0.6, 0.3, 0.1]), residual="theory", g_scale=0.5)
    _, ref_half, _ = csl_features(t([0.6, 0.3, 0.1]), residual="reference", g_scale=0.5)
    assert s_half.item() == pytest.approx(0.5 * s1.item())
    assert ref_half.item() == pytest.approx(0.5 * (0.05 + 0.4 / 4))


def test_default_residual_is_the_authors_code():
    assert inspect.signature(csl_features).parameters["residual"].default == "reference"
    probs = smooth_maps(2, 7, 6, 5, sharpness=4.0, seed=1, dtype=torch.float64)
    _, s, _ = csl_features(probs)
    _, reference, _ = csl_features(probs, residual="reference")
    _, theory, _ = csl_features(probs, residual="theory")
    assert torch.equal(s, reference)
    r, _ = residual_moments(probs, probs.argmax(1))
    torch.testing.assert_close(s - theory, r / (2 * 6), rtol=1e-10, atol=1e-15)


def test_ties_take_the_lowest_index_and_keep_the_tied_mass_in_the_residual():
    # k* = 0; the other 0.4 is a residual class: r = 0.6, variance of (0.4, 0.2) = 0.01.
    c, s, labels = csl_features(t([0.4, 0.4, 0.2]), residual="theory")
    assert labels.item() == 0
    assert c.item() == pytest.approx(0.4)
    assert s.item() == pytest.approx((2**2 / (2 * 0.6)) * 0.01)


def test_one_hot_and_uniform_have_zero_spread():
    probs = t([0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25])
    c, s, labels = csl_features(probs, residual="theory")
    assert c.tolist() == [1.0, 0.25]
    assert s.tolist() == [0.0, 0.0]
    assert labels.tolist() == [1, 0]
    # reference: only the zeroed slot's r / (2 (K - 1)) = 0.75 / 6, and 0 for one-hot
    _, s, _ = csl_features(probs, residual="reference")
    assert s.tolist() == [0.0, 0.125]


def test_two_classes_give_s_exactly_zero():
    probs = torch.rand(50, 2, 3).softmax(1)
    c, s, labels = csl_features(probs, residual="theory")
    assert torch.equal(s, torch.zeros_like(s))
    assert torch.equal(c, probs.amax(1))
    # reference: s = r / 2 exactly, r the other class's probability
    _, s, _ = csl_features(probs, residual="reference")
    assert torch.equal(s, probs.amin(1) / 2)


def test_residual_mass_survives_when_confidence_rounds_to_one():
    # In float32, 1 - 3e-9 rounds to 1.0: 1 - c would be 0 and g = inf in the authors' code.
    probs = torch.tensor([[1.0, 1e-9, 2e-9]], dtype=torch.float32)
    assert probs[0, 0].item() == 1.0
    c, s, _ = csl_features(probs, residual="theory")
    r, squares = residual_moments(probs, torch.zeros(1, dtype=torch.long))
    assert r.item() == pytest.approx(3e-9, rel=1e-6)
    expected = (2 * (1e-18 + 4e-18) / 3e-9 - 3e-9) / 2
    assert s.item() == pytest.approx(expected, rel=1e-4)
    assert torch.isfinite(s).all()


@pytest.mark.parametrize("residual", ["theory", "reference"])
@pytest.mark.parametrize("g_scale", [1.0, 0.5])
def test_matches_literal_reference_on_maps(residual, g_scale, device):
    probs = smooth_maps(2, 7, 12, 10, sharpness=5.0, seed=3, dtype=torch.float64).to(device)
    c, s, labels = csl_features(probs, residual=residual, g_scale=g_scale)
    ref_c, ref_s, ref_labels = reference_features(numpy_of(probs), residual, g_scale)
    np.testing.assert_allclose(numpy_of(c), ref_c, rtol=0, atol=1e-15)
    np.testing.assert_allclose(numpy_of(s), ref_s, rtol=1e-10, atol=1e-15)
    np.testing.assert_array_equal(numpy_of(labels), ref_labels)


@given(
    st.integers(1, 6),
    st.integers(2, 12),
    st.floats(0.1, 30.0),
    st.sampled_from(DTYPES),
    st.sampled_from(["theory", "reference"]),
)
def test_s_is_bounded(n, k, sharpness, dtype, residual):
    probs = classifier_outputs(n, k, sharpness=sharpness, seed=n * k, dtype=dtype)
    c, s, labels = csl_features(probs, residual=residual)
    r, _ = residual_moments(probs, labels)
    assert c.dtype == s.dtype == compute_dtype(dtype)
    bound = r * (k - 2) / 2
    if residual == "reference":
        bound = bound + r / (2 * (k - 1))
    assert (s >= 0).all()
    assert (s <= bound * (1 + 1e-6) + 1e-12).all()


# softmax(scale · randn) from near-uniform to near-one-hot, for both residual variants
SCALES = pytest.mark.parametrize(
    "scale", [0.01, 1.0, 30.0], ids=["near-uniform", "softmax-randn", "near-one-hot"]
)
RESIDUALS = pytest.mark.parametrize("residual", ["theory", "reference"])


def float32_softmax(shape, scale: float, seed: int) -> torch.Tensor:
    """float32 softmax(scale · randn) of ``shape``, drawn in float64."""
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).softmax(1).float()


def assert_s_within_float32_ulps(s32, s64, ulps: int = 8) -> torch.Tensor:
    """float32 s within ``ulps`` units in the last place of float64 s wherever s is above
    float32's subnormal range; returns where it is."""
    normal = s64 > 10 * torch.finfo(torch.float32).tiny
    error = (s32.double() - s64).abs() / s64
    assert (error[normal] <= ulps * torch.finfo(torch.float32).eps).all()
    return normal


@RESIDUALS
@SCALES
def test_float32_s_is_float64_s_to_a_few_units_in_the_last_place(scale, residual):
    # The one-pass ((K - 1) Σ p² / r - r) / 2 cancelled here (errors up to 2% near-uniform)
    # or underflowed (near-one-hot); two-pass with scaled deviations: < 5 units measured.
    probs = float32_softmax((4, 21, 64, 64), scale, seed=0)
    c32, s32, labels32 = csl_features(probs, residual=residual)
    c64, s64, labels64 = csl_features(probs.double(), residual=residual)
    assert torch.equal(labels32, labels64) and torch.equal(c32.double(), c64)
    normal = assert_s_within_float32_ulps(s32, s64)
    assert normal.double().mean() > 0.999


@pytest.mark.parametrize("shape", [(3, 5, 40, 37), (700, 9), (2, 300, 7)])
def test_blocked_cpu_path_equals_one_pass(monkeypatch, shape):
    gen = torch.Generator().manual_seed(0)
    probs = (torch.randn(shape, generator=gen) * 4).softmax(1)
    labels = probs.argmax(1)
    r_one, q_one = residual_moments(probs, labels)
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 512)
    r_blocks, q_blocks = residual_moments(probs, labels)
    torch.testing.assert_close(r_blocks, r_one, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(q_blocks, q_one, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("residual", ["theory", "reference"])
def test_blocked_features_equal_one_pass(monkeypatch, dtype, residual):
    probs = smooth_maps(3, 7, 20, 30, sharpness=8.0, seed=4).to(dtype)
    probs[0, :, 0, 0] = torch.tensor([0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.05])  # a tie
    one_pass = csl_features(probs, residual=residual, g_scale=0.7)
    confidence_one, labels_one = features.confidence_and_labels(probs)
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 700)
    assert len(blocks.position_blocks(probs.reshape(3, 7, -1))) == 16  # blocked, capped
    blocked = csl_features(probs, residual=residual, g_scale=0.7)
    assert torch.equal(blocked[0], one_pass[0]) and torch.equal(blocked[2], one_pass[2])
    torch.testing.assert_close(blocked[1], one_pass[1], rtol=1e-5, atol=1e-7)
    assert blocked[2][0, 0, 0] == 0  # lowest index of the tie
    confidence, labels = features.confidence_and_labels(probs)
    assert torch.equal(confidence, confidence_one) and torch.equal(labels, labels_one)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=dtype_id)
def test_half_inputs_are_computed_in_float32(dtype, device):
    probs = smooth_maps(1, 5, 6, 6, seed=1).to(device).to(dtype)
    c, s, _ = csl_features(probs)
    assert c.dtype == s.dtype == torch.float32
    c64, s64, _ = csl_features(probs.double())
    torch.testing.assert_close(s.double(), s64, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(c.double(), c64)


def test_max_confidence_entropy_margin_hand_computed():
    probs = t([0.7, 0.2, 0.1], [0.5, 0.5, 0.0])
    assert max_confidence(probs).tolist() == [0.7, 0.5]
    expected = [-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)), math.log(2)]
    np.testing.assert_allclose(entropy(probs).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(margin(probs).numpy(), [0.5, 0.0], atol=1e-15)


def test_entropy_of_one_hot_is_zero_and_of_uniform_is_log_k():
    probs = t([0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(entropy(probs).numpy(), [0.0, math.log(3)], atol=1e-12)


def test_dense_features_keep_the_position_shape():
    probs = smooth_maps(2, 4, 5, 6, seed=0)
    for value in (max_confidence(probs), entropy(probs), margin(probs), *csl_features(probs)):
        assert value.shape == (2, 5, 6)


@pytest.mark.parametrize("fn", [max_confidence, entropy, margin, csl_features])
def test_bad_shapes_and_dtypes_raise_named_errors(fn):
    with pytest.raises(ValueError, match=r"probs must have a class dimension at dim 1.*\(8,\)"):
        fn(torch.rand(8))
    with pytest.raises(ValueError, match=r"size >= 2.*\(4, 1\)"):
        fn(torch.ones(4, 1))
    with pytest.raises(TypeError, match="floating-point.*torch.int64"):
        fn(torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor.*list"):
        fn([[0.5, 0.5]])


def test_bad_feature_options_raise():
    probs = t([0.6, 0.3, 0.1])
    with pytest.raises(ValueError, match="residual must be one of 'theory', 'reference'"):
        csl_features(probs, residual="authors")
    with pytest.raises(ValueError, match=r"g_scale must be in \(0, inf\), got 0"):
        csl_features(probs, g_scale=0)
    with pytest.raises(TypeError, match="g_scale must be a real number"):
        csl_features(probs, g_scale="1")


@RESIDUALS
@SCALES
def test_compiled_features_match_float64_to_a_few_units_in_the_last_place(scale, residual):
    # Under torch.compile (K <= 64) the features are one pointwise kernel: the plane walk
    # and the spread's sums written out class by class. Same precision contract as eager.
    probs = float32_softmax((2, 21, 24, 24), scale, seed=1)
    probs[0, :, 0, 0] = 0.0
    probs[0, 3, 0, 0] = probs[0, 5, 0, 0] = 0.5  # a tie: the lower index wins
    probs[1, :, 0, 0] = torch.tensor([1.0, 1e-9, 2e-9] + [0.0] * 18)  # c rounds to 1
    compiled = torch.compile(
        lambda p: csl_features(p, residual=residual, g_scale=0.7), fullgraph=True
    )
    c32, s32, labels32 = compiled(probs)
    c64, s64, labels64 = csl_features(probs.double(), residual=residual, g_scale=0.7)
    assert labels32[0, 0, 0] == 3
    assert torch.equal(labels32, labels64) and torch.equal(c32.double(), c64)
    assert torch.equal(labels32, probs.argmax(1))
    normal = assert_s_within_float32_ulps(s32, s64)
    assert ((s32[~normal].double() - s64[~normal]).abs() <= 1e-37).all()


def test_blocked_entropy_matches_float64_xlogy(monkeypatch, dtype):
    # eager CPU blocks compute p·log(max(p, tiny)) in a scratch buffer instead of xlogy:
    # equal to the float64 reference to float32 rounding, 0 at p = 0, NaN kept
    probs = smooth_maps(3, 7, 20, 30, sharpness=8.0, seed=5).to(dtype)
    probs[0, :, 0, 0] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0])
    probs[0, :, 0, 1] = torch.tensor([1.0 - 1e-39, 1e-39, 0, 0, 0, 0, 0]).to(dtype)
    probs[1, 3, 2, 2] = float("nan")
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 700)
    assert len(blocks.position_blocks(probs.reshape(3, 7, -1))) > 1
    result = entropy(probs)
    wide = probs.double()
    expected = -torch.special.xlogy(wide, wide).sum(1)
    assert result.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isnan(result[1, 2, 2]) and torch.isnan(expected[1, 2, 2])
    finite = ~torch.isnan(expected)
    torch.testing.assert_close(result.double()[finite], expected[finite], rtol=1e-6, atol=1e-30)
    assert result[0, 0, 0] == 0


def test_shared_features_compute_the_arg_max_once_per_unmodified_tensor(monkeypatch):
    import pseudosel

    calls = []
    original = features._confidence_and_labels
    monkeypatch.setattr(
        features, "_confidence_and_labels", lambda p: calls.append(p) or original(p)
    )
    probs = smooth_maps(2, 5, 6, 7, seed=1)
    first = features.confidence_and_labels(probs)
    features.confidence_and_labels(probs)
    assert len(calls) == 2  # outside the block: no sharing
    with features.shared_features():
        a = features.confidence_and_labels(probs)
        b = features.confidence_and_labels(probs)
        assert a[0] is b[0] and a[1] is b[1] and len(calls) == 3
        assert torch.equal(a[0], first[0]) and torch.equal(a[1], first[1])
        probs[0, :, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])  # modified in place
        c = features.confidence_and_labels(probs)
        assert len(calls) == 4 and c[1][0, 0, 0] == 4
        features.confidence_and_labels(probs.clone())  # another tensor
        assert len(calls) == 5
    # a selector step that updates its statistics, then selects: one arg-max
    for selector in (
        pseudosel.FreeMatchSelector(5),
        pseudosel.SoftMatchSelector(5),
        pseudosel.FlexMatchSelector(5),
        pseudosel.CorrMatchSelector(5, momentum=0.9),
    ):
        calls.clear()
        selector(probs)
        assert len(calls) == 1, type(selector).__name__


@pytest.mark.parametrize("inside", [True, False], ids=["under-inference-mode", "made-under-it"])
def test_selector_steps_take_inference_tensors(inside):
    # teacher outputs are often made under torch.inference_mode: such tensors have no
    # version counter, so the shared arg-max must not key on it (it is skipped for them)
    import pseudosel

    probs = smooth_maps(2, 5, 6, 7, seed=2)
    with torch.inference_mode():
        teacher = probs.clone()
    for selector in (
        pseudosel.FreeMatchSelector(5),
        pseudosel.SoftMatchSelector(5),
        pseudosel.FlexMatchSelector(5),
        pseudosel.CorrMatchSelector(5, momentum=0.9),
    ):
        expected = type(selector)(
            5, **({"momentum": 0.9} if "Corr" in type(selector).__name__ else {})
        )(probs)
        context = torch.inference_mode() if inside else contextlib.nullcontext()
        with context:
            result = selector(teacher)
            selector.eval()
            selector(teacher)
        assert torch.equal(result.labels, expected.labels), type(selector).__name__
        assert torch.equal(result.weight, expected.weight), type(selector).__name__
