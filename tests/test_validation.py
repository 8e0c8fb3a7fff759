"""The input contract: every documented bad input raises the documented error."""

from __future__ import annotations

import pytest
import torch
from helpers.tolerances import DTYPES
from hypothesis import given, settings
from hypothesis import strategies as st

import pseudosel.functional as F
from pseudosel import select_reliable
from pseudosel.validation import check_probability_values, resolve_valid, sum_tolerance

SELECTORS = [F.threshold, F.csl]


@pytest.mark.parametrize("select", SELECTORS)
def test_shape_and_dtype_errors(select):
    with pytest.raises(ValueError, match=r"probs must have a class dimension at dim 1 .*\(8,\)"):
        select(torch.rand(8))
    with pytest.raises(ValueError, match=r"size >= 2.*\(3, 1, 4\)"):
        select(torch.ones(3, 1, 4))
    with pytest.raises(TypeError, match="probs must be a floating-point tensor.*torch.int32"):
        select(torch.ones(3, 2, dtype=torch.int32))
    with pytest.raises(TypeError, match="probs must be a torch.Tensor, got ndarray"):
        select(torch.ones(3, 2).numpy())


@pytest.mark.parametrize("select", SELECTORS)
def test_valid_mask_errors(select):
    probs = torch.full((2, 3, 4, 5), 1 / 3)
    with pytest.raises(
        TypeError, match="valid must be a torch.bool tensor, got dtype torch.float32"
    ):
        select(probs, valid=torch.ones(2, 4, 5))
    with pytest.raises(
        ValueError, match=r"valid must have shape \(2, 4, 5\) \(the shape of probs \(2, 3, 4, 5\)"
    ):
        select(probs, valid=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="valid must be a torch.Tensor"):
        select(probs, valid=[[True]])


@pytest.mark.parametrize("select", SELECTORS)
@pytest.mark.parametrize(
    "row,what",
    [
        ([0.5, 0.6], "sum 1.1"),
        ([1.2, -0.2], "sum 1, minimum -0.2"),
        ([float("nan"), 0.5], "sum nan"),
        ([float("inf"), 0.0], "sum inf"),
    ],
)
def test_value_errors_name_the_position(select, row, what):
    probs = torch.tensor([[0.5, 0.5], row, [0.3, 0.7]])
    with pytest.raises(ValueError, match=rf"from_logits=True.*position \(1,\): {what}"):
        select(probs)
    # ignored positions are not checked, and validate=False skips the check
    select(probs, valid=torch.tensor([True, False, True]))
    select(probs, validate=False)


def test_tolerance_is_dtype_aware():
    assert sum_tolerance(torch.float32) == sum_tolerance(torch.float64) == 1e-3
    assert sum_tolerance(torch.float16) == pytest.approx(6 * 2**-10)
    assert sum_tolerance(torch.bfloat16) == pytest.approx(6 * 2**-7)
    # a bfloat16 softmax over many classes sums to 1 only coarsely, and must pass
    probs = torch.randn(64, 100, generator=torch.Generator().manual_seed(0)).softmax(1)
    F.csl(probs.bfloat16())
    F.threshold(probs.half())
    with pytest.raises(ValueError):
        F.csl(torch.tensor([[0.6, 0.402]]))  # 2e-3 off in float32


@pytest.mark.parametrize(
    "options,message",
    [
        ({"alpha": 0.0}, r"alpha must be in \(0, inf\), got 0.0"),
        ({"alpha": float("inf")}, r"alpha must be in \(0, inf\), got inf"),
        ({"scope": "image"}, "scope must be one of 'auto', 'sample', 'batch', got 'image'"),
        ({"cluster_rule": "mean"}, "cluster_rule must be one of 'confidence', 'linear', 'neglog'"),
        ({"residual": None}, "residual must be one of 'theory', 'reference', got None"),
        ({"g_scale": -1}, r"g_scale must be in \(0, inf\)"),
        ({"min_var": -1e-3}, r"min_var must be in \[0, inf\), got -0.001"),
        ({"eps": 0}, r"eps must be in \(0, inf\), got 0"),
    ],
)
def test_csl_option_errors(options, message):
    with pytest.raises(ValueError, match=message):
        F.csl(torch.full((2, 3), 1 / 3), **options)


def test_csl_option_type_errors():
    with pytest.raises(TypeError, match="alpha must be a real number, got str"):
        F.csl(torch.full((2, 3), 1 / 3), alpha="2")


UNSIGNED = [torch.uint8, torch.uint16, torch.uint32, torch.uint64]


@pytest.mark.parametrize("dtype", UNSIGNED, ids=str)
def test_negative_ignore_index_on_an_unsigned_mask_is_refused(dtype):
    # -1 would wrap around to the dtype's maximum and silently ignore those positions
    probs = torch.full((2, 3, 2), 1 / 3)
    mask = torch.tensor([[0, 255], [1, 2]]).to(dtype)
    top = torch.iinfo(dtype).max
    with pytest.raises(
        ValueError,
        match=rf"ignore_index=-1 is outside the range \[0, {top}\] of ignore_mask's dtype "
        rf"{dtype}",
    ):
        select_reliable(probs, "threshold", ignore_mask=mask, ignore_index=-1)
    with pytest.raises(ValueError, match="ignore_index=-1 is outside"):
        resolve_valid(probs, ignore_mask=mask, ignore_index=-1)


def test_ignore_index_outside_a_signed_dtype_is_refused():
    probs = torch.full((1, 3, 2), 1 / 3)
    mask = torch.tensor([[-1, 3]], dtype=torch.int8)
    with pytest.raises(ValueError, match=r"ignore_index=255 .*\[-128, 127\].*torch.int8"):
        resolve_valid(probs, ignore_mask=mask)  # the default 255 does not fit int8
    assert resolve_valid(probs, ignore_mask=mask, ignore_index=-1).tolist() == [[False, True]]


def test_ignore_index_in_range_selects_the_right_positions():
    probs = torch.full((1, 3, 3), 1 / 3)
    mask = torch.tensor([[0, 255, 7]], dtype=torch.uint8)
    assert resolve_valid(probs, ignore_mask=mask).tolist() == [[True, False, True]]
    assert resolve_valid(probs, ignore_mask=mask, ignore_index=7).tolist() == [[True, True, False]]
    sel = select_reliable(probs, "threshold", ignore_mask=mask.long(), ignore_index=-1)
    assert sel.valid.all()


@pytest.mark.parametrize("value", [None, 255.0, True, "255"], ids=repr)
@pytest.mark.parametrize("with_mask", [True, False])
def test_ignore_index_must_be_an_int(value, with_mask):
    probs = torch.full((2, 3), 1 / 3)
    mask = torch.tensor([0, 255]) if with_mask else None
    name = type(value).__name__
    with pytest.raises(TypeError, match=rf"ignore_index must be an int.* got {name}") as error:
        select_reliable(probs, "threshold", ignore_mask=mask, ignore_index=value)
    assert not str(error.value).startswith("valid")  # it used to blame valid=
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        resolve_valid(probs, ignore_mask=mask, ignore_index=value)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(2, 6),
    st.integers(0, 3),
    st.sampled_from([0.0, 0.0, 5e-4, -5e-4, 2e-3, -2e-3, 0.02]),
    st.sampled_from(DTYPES),
    st.sampled_from(["none", "nan", "inf", "negative"]),
)
def test_all_valid_check_agrees_with_the_per_position_check(n, k, size, shift, dtype, bad):
    # without ignored positions the check reduces to the row sums' extremes and the
    # smallest entry; it must fail exactly where the per-position check fails, with the
    # same message (which then names the position)
    gen = torch.Generator().manual_seed(n * 100 + k * 10 + size)
    probs = torch.randn(n, k, *([size] * (size > 0)), generator=gen).softmax(1).to(dtype)
    flat = probs.view(-1)
    flat[k // 2] = flat[k // 2] + shift
    if bad != "none":
        flat[-1] = {"nan": float("nan"), "inf": float("inf"), "negative": -1e-6}[bad]
    valid = torch.ones(n, *probs.shape[2:], dtype=torch.bool)

    def verdict(all_valid):
        try:
            check_probability_values(probs, valid, all_valid=all_valid)
        except ValueError as error:
            return str(error)
        return None

    fast, per_position = verdict(True), verdict(False)
    assert fast == per_position
    if bad != "none":
        assert fast is not None
