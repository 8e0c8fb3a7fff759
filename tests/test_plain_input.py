"""Plain input — no mask, nothing ignored — takes shorter paths: the value check read as
three numbers on the host (eager CPU), modules handing their front door's result to their
stages, selections and statistics that skip their masking, one-process means. Each must
give exactly what the general path gives, which this file pins:

- every selector of the zoo (registry-driven: a new selector joins), over several training
  steps, without a mask and with an all-True ``valid``: equal outputs and states, bit for bit;
- the host-side value check against the tensor-valued one, on valid and broken inputs;
- ``prepare(prepared=)`` and the nested ``no_grad``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from helpers.selector_zoo import CASES, NEEDS_A_MASK, case_batch, outputs_of, state_of
from hypothesis import given, settings
from hypothesis import strategies as st

from pseudosel._grad import no_grad
from pseudosel.inputs import prepare
from pseudosel.validation import (
    check_probability_values,
    probability_vectors_ok,
    probability_vectors_ok_on_host,
)

STEPS = 4
# every zoo case on each layout it takes; not the convex ones (slow, and a reference path),
# nor those whose test steps need a mask
PLAIN = [
    pytest.param(case, layout, id=f"{case.name}-{layout}")
    for case in CASES
    if not case.convex and case.name not in NEEDS_A_MASK
    for layout in ("classification", "dense")
    if (case.dense if layout == "dense" else case.classification)
]


@pytest.mark.parametrize(("case", "layout"), PLAIN)
def test_no_mask_equals_an_all_true_mask_bit_for_bit(case, layout):
    case = case if layout == "dense" else replace(case, dense=False)  # (N, K) batches
    plain_module, plain = case.build(5)
    masked_module, masked = case.build(5)
    for seed in range(STEPS):
        probs, _ = case_batch(case, seed)
        everything = torch.ones((probs.shape[0], *probs.shape[2:]), dtype=torch.bool)
        outputs = zip(
            outputs_of(plain(probs, None)), outputs_of(masked(probs, everything)), strict=True
        )
        for ours, theirs in outputs:
            assert torch.equal(ours, theirs), f"{case.name}, step {seed}"
        states = zip(state_of(plain_module, plain), state_of(masked_module, masked), strict=True)
        for ours, theirs in states:
            assert torch.equal(ours, theirs), f"{case.name} state, step {seed}"


def _broken(kind: str, probs: torch.Tensor) -> torch.Tensor:
    broken = probs.clone()
    if kind == "negative":
        broken[1, 0] -= 2 * broken[1, 0] + 1e-3
    elif kind == "nan":
        broken[0, 1] = float("nan")
    elif kind == "inf":
        broken[-1, -1] = float("inf")
    elif kind == "unnormalised":
        broken[2] *= 1.1  # beyond every dtype's tolerance (bfloat16's is 0.047)
    elif kind == "logits":
        broken = torch.randn_like(probs)
    return broken


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["valid", "negative", "nan", "inf", "unnormalised", "logits"])
def test_the_host_check_gives_the_device_verdict(kind, dtype):
    probs = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(0)).softmax(1)
    probs = probs.to(dtype) if kind == "valid" else _broken(kind, probs.to(dtype))
    valid = torch.ones(6, 3, dtype=torch.bool)
    expected = bool(probability_vectors_ok(probs, valid, all_valid=True))
    assert probability_vectors_ok_on_host(probs) == expected
    assert expected == (kind == "valid")


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 9),
    k=st.integers(2, 7),
    shift=st.floats(-3e-3, 3e-3, allow_nan=False),
    negative=st.booleans(),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
)
def test_the_host_check_agrees_at_the_tolerance_edge(n, k, shift, negative, dtype):
    """Rows whose sums straddle 1 ± tolerance, and entries just below 0."""
    gen = torch.Generator().manual_seed(n * 31 + k)
    probs = torch.rand(n, k, generator=gen, dtype=torch.float64).softmax(1)
    probs[0] *= 1 + shift
    if negative:
        probs[-1, 0] = -1e-30
    probs = probs.to(dtype)
    valid = torch.ones(n, dtype=torch.bool)
    assert probability_vectors_ok_on_host(probs) == bool(
        probability_vectors_ok(probs, valid, all_valid=True)
    )


_PLANTED = {
    "nothing": None,
    "-0.0": -0.0,
    "a tiny negative": -1e-30,
    "a subnormal negative": -1e-40,
    "a subnormal": 1e-40,
    "NaN": float("nan"),
    "NaN with its sign bit": -float("nan"),
    "inf": float("inf"),
    "-inf": -float("inf"),
}


def _laid_out(probs: torch.Tensor, layout: str) -> torch.Tensor:
    """``probs`` (N, K) with the same values in another memory layout."""
    if layout == "transposed":  # column-major
        return probs.t().contiguous().t()
    if layout == "strided":  # every other row of a larger tensor, at an offset
        spread = torch.zeros(2 * probs.shape[0] + 1, probs.shape[1], dtype=probs.dtype)
        spread[1::2] = probs
        return spread[1::2]
    if layout == "dense channels-last":  # (N, K, 1, 2): each row twice, channels last
        dense = probs[:, :, None, None].expand(-1, -1, 1, 2).contiguous()
        return dense.to(memory_format=torch.channels_last)
    return probs


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 9),
    k=st.integers(2, 7),
    planted=st.sampled_from(sorted(_PLANTED)),
    where=st.integers(0, 62),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    layout=st.sampled_from(["contiguous", "transposed", "strided", "dense channels-last"]),
)
def test_the_integer_minimum_gives_the_float_minimums_verdict(n, k, planted, where, dtype, layout):
    """The host check reads the smallest entry through same-width integers (float32 and
    the half types, from INT_MINIMUM_FROM entries; here from 1): the device verdict, the
    float minimum's, for −0.0, negatives down to subnormals, NaN of either sign, ±inf,
    in any memory layout. A finite value is planted with its row's sum kept (the entry it
    replaces moved to its neighbour), so that the row sums pass and the smallest entry
    decides."""
    import pseudosel.validation as validation

    probs = torch.rand(
        n, k, generator=torch.Generator().manual_seed(n * 7 + k), dtype=torch.float64
    )
    probs = probs / probs.sum(1, keepdim=True)
    value = _PLANTED[planted]
    row, column = divmod(where % (n * k), k)
    if value is not None:
        if math.isfinite(value):  # the row keeps its sum: the replaced mass moves over
            probs[row, (column + 1) % k] += probs[row, column] - value
        probs[row, column] = value
    probs = _laid_out(probs.to(dtype), layout)
    valid = torch.ones(probs.shape[:1] + probs.shape[2:], dtype=torch.bool)
    expected = bool(probability_vectors_ok(probs, valid, all_valid=True))
    before = validation.INT_MINIMUM_FROM
    validation.INT_MINIMUM_FROM = 1
    try:
        assert probability_vectors_ok_on_host(probs) == expected
    finally:
        validation.INT_MINIMUM_FROM = before
    if planted in ("nothing", "-0.0", "a subnormal"):  # what passes, with sums kept
        assert expected
    elif planted == "a tiny negative" and dtype in (torch.float32, torch.float64):
        assert not expected  # -1e-30 is a negative number there (0 in the half types)


def test_a_lazily_negated_tensor_takes_the_float_minimum():
    """A tensor with its negative bit set (``conj().imag`` of a complex tensor) has no
    integer view: the check reads the floats, with the same verdict as the plain tensor."""
    from pseudosel.validation import INT_MINIMUM_FROM

    probs = torch.randn(INT_MINIMUM_FROM // 8 + 1, 8).mul(3).softmax(1)
    negated = torch.complex(torch.zeros_like(probs), -probs).conj().imag
    assert negated.is_neg() and torch.equal(negated, probs)
    assert probability_vectors_ok_on_host(negated) and probability_vectors_ok_on_host(probs)
    broken = probs.clone()
    broken[0, 0], broken[0, 1] = -1e-4, broken[0, 1] + broken[0, 0] + 1e-4
    negated = torch.complex(torch.zeros_like(broken), -broken).conj().imag
    assert not probability_vectors_ok_on_host(negated)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("planted", [None, -0.0, -1e-4])
def test_a_large_batch_takes_the_integer_minimum(dtype, planted):
    """From INT_MINIMUM_FROM entries the integer pass runs (its view is asked for) and
    gives the float minimum's verdict: -0.0 passes (asked of the floats again), a
    negative entry in a row that still sums to 1 within the tolerance fails."""
    from pseudosel.validation import INT_MINIMUM_FROM

    rows = INT_MINIMUM_FROM // 8 + 1
    probs = torch.full((rows, 8), 0.125, dtype=dtype)
    if planted is not None:
        probs[rows // 2, 3] = planted
        probs[rows // 2, 4] = 0.25
    viewed = []
    view = torch.Tensor.view

    def spied(tensor, *args):
        viewed.append(args)
        return view(tensor, *args)

    torch.Tensor.view = spied
    try:
        verdict = probability_vectors_ok_on_host(probs)
    finally:
        torch.Tensor.view = view
    assert any(args and isinstance(args[0], torch.dtype) for args in viewed)
    valid = torch.ones(rows, dtype=torch.bool)
    assert verdict == bool(probability_vectors_ok(probs, valid, all_valid=True))
    assert verdict == (planted is None or planted == 0)


def test_a_failed_host_check_still_names_the_offending_position():
    probs = torch.full((3, 4), 0.25)
    probs[2, 1] = 0.5
    with pytest.raises(ValueError, match=r"First offending position \(2,\)"):
        check_probability_values(probs, torch.ones(3, dtype=torch.bool), all_valid=True)


def test_prepared_inputs_are_reused_only_for_their_own_probabilities():
    probs = torch.full((4, 3), 1 / 3)
    inputs = prepare(probs)
    assert prepare(probs, prepared=inputs) is inputs
    other = probs.clone()
    assert prepare(other, prepared=inputs).probs is other  # not these: the front door runs
    with pytest.raises(ValueError, match="probabilities"):
        prepare(torch.full((4, 3), 2.0), prepared=inputs)
    # the same probabilities with another mask: the mask is not dropped
    some = torch.tensor([True, False, True, True])
    again = prepare(probs, some, prepared=inputs)
    assert again is not inputs and torch.equal(again.valid, some) and not again.all_valid


def test_a_labelled_batch_that_is_the_unlabelled_tensor_keeps_its_mask():
    """A module hands its front door's result to its stages; the labelled batch has its own
    mask even when it is the same tensor object."""
    import pseudosel

    probs = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)).softmax(1)
    keep = torch.tensor([True, False, True, False, True, True])
    same = pseudosel.DistributionAlignment(3, target="model", momentum=0.5)
    copied = pseudosel.DistributionAlignment(3, target="model", momentum=0.5)
    same(probs, probs_labeled=probs, valid_labeled=keep)
    copied(probs, probs_labeled=probs.clone(), valid_labeled=keep)
    assert torch.equal(same.p_target, copied.p_target)


def test_no_grad_nests_and_restores_the_grad_mode():
    leaf = torch.ones(2, requires_grad=True)

    @no_grad
    def inner(x):
        assert not torch.is_grad_enabled()
        return x * 2

    @no_grad
    def outer(x):
        return inner(x) + 1

    assert not outer(leaf).requires_grad
    assert torch.is_grad_enabled()

    @no_grad
    def fails(x):
        raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        fails(leaf)
    assert torch.is_grad_enabled()  # restored after the error
    with torch.no_grad():
        assert not inner(leaf).requires_grad
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("n", [50_000, 300_000])
def test_large_plain_batches_sum_as_the_masked_ones(n):
    """Above one block (N·K > 2^20) the masked class sums walk blocks; the plain ones must
    too, or the order of the additions — and the last bits — would differ."""
    import pseudosel
    from pseudosel.functional.alignment import masked_class_sums

    probs = torch.randn(n, 10, generator=torch.Generator().manual_seed(n)).mul(3).softmax(1)
    everything = torch.ones(n, dtype=torch.bool)
    assert torch.equal(
        masked_class_sums(probs, None, torch.float32),
        masked_class_sums(probs, everything, torch.float32),
    )
    plain, masked = (
        pseudosel.FreeMatchSelector(10, momentum=0.0),
        pseudosel.FreeMatchSelector(10, momentum=0.0),
    )
    plain(probs)
    masked(probs, everything)
    for ours, theirs in zip(plain.buffers(), masked.buffers(), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=40, deadline=None)
@given(
    n=st.one_of(st.integers(1, 70), st.integers(70, 20_000)),
    k=st.integers(2, 120),
    seed=st.integers(0, 2**16),
)
def test_the_plain_class_mean_is_the_masked_one(dtype, n, k, seed):
    """The plain class mean of a contiguous batch under one block takes torch's mean over
    dim 0 — on a CPU the sum divided by N — which must be the masked statistic's sum
    divided by its count, bit for bit. (A strided batch's masked sum, a copy's, can differ
    from its plain sum in the last bit, as before the plain mean; the lane and the general
    path share the plain mean.)"""
    from pseudosel.functional.alignment import class_mean, plain_class_mean

    generator = torch.Generator().manual_seed(seed)
    probs = (torch.randn(n, k, generator=generator, dtype=torch.float64) * 4).softmax(1)
    probs = probs.to(dtype)
    everything = torch.ones(n, dtype=torch.bool)
    masked, count = class_mean(probs, everything, None)  # the general, counted form
    assert int(count) == n
    assert torch.equal(plain_class_mean(probs), masked)


@pytest.mark.parametrize(
    "make", ["FreeMatchSelector", "SoftMatchSelector", "DistributionAlignment"]
)
def test_plain_input_compiles_to_the_eager_result(make):
    """Compiled code takes the general path (the plain sums are eager CPU only): equal
    within the compiled path's tolerance, and no graph break (fullgraph)."""
    import pseudosel

    eager, compiled = getattr(pseudosel, make)(5), getattr(pseudosel, make)(5)
    step = torch.compile(compiled, fullgraph=True)
    for seed in range(3):
        probs = torch.randn(12, 5, generator=torch.Generator().manual_seed(seed)).softmax(1)
        ours, theirs = eager(probs), step(probs)
        for a, b in zip(outputs_of(ours), outputs_of(theirs), strict=True):
            if a.is_floating_point():
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            else:
                assert torch.equal(a, b)
