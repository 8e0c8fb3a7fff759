"""A cached 0-dim operand gives what the Python number gives, bit for bit
(pseudosel.kernels.scalars), and the numbers stay numbers where it would not.

``number / x`` is not among the forms: torch computes it as ``x.reciprocal() * number``
(another rounding), so the selectors never write an operand there."""

from __future__ import annotations

import operator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pseudosel import kernels
from pseudosel.kernels import scalars
from pseudosel.kernels.scalars import operands

OPERATIONS = {
    "mul": operator.mul,
    "add": operator.add,
    "sub": operator.sub,
    "rmul": lambda x, y: y * x,
    "radd": lambda x, y: y + x,
    "rsub": lambda x, y: y - x,
    "div": operator.truediv,
    "ge": operator.ge,
    "le": operator.le,
    "eq": operator.eq,
}
NUMBERS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0]),
    st.floats(min_value=-1e30, max_value=1e30),  # within float32's range, as selectors' are
    st.floats(min_value=1e-8, max_value=1.0),  # momenta, thresholds, temperatures
    st.integers(min_value=1, max_value=2**26),  # counts, some above float32's integers
)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (the sign of a zero and the NaN payload included), in dtype and
    shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        bits = torch.int32 if a.dtype == torch.float32 else torch.int64
        return torch.equal(a.view(bits), b.view(bits))
    return torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(), (7,), (3, 5)])
@pytest.mark.parametrize("name", sorted(OPERATIONS))
@settings(max_examples=40, deadline=None)
@given(value=NUMBERS, seed=st.integers(0, 2**16))
def test_operand_equals_the_number(dtype, shape, name, value, seed):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=generator, dtype=torch.float64) * 10).to(dtype)
    if x.numel() > 1:
        x.view(-1)[0] = float(value)  # an exact tie for the comparisons (when representable)
    (operand,) = operands(x, value)
    if value != 0:  # a zero stays a number (its sign is not a key of the cache)
        assert isinstance(operand, torch.Tensor) and operand.dtype == dtype
        assert operand.dim() == 0
    op = OPERATIONS[name]
    assert _same(op(x, operand), op(x, value))


def test_the_ops_of_the_selectors_with_operands():
    """The EMA line as the stateful selectors write it, with m and 1 − m as operands."""
    state = torch.tensor(0.3123456789, dtype=torch.float32)
    batch = torch.rand(10, dtype=torch.float32)
    m, rest = operands(state, 0.999, 1 - 0.999)
    assert _same(state * m + rest * batch, state * 0.999 + (1 - 0.999) * batch)
    assert _same(rest * 0.123456789, (1 - 0.999) * torch.tensor(0.123456789).to(torch.float32))


@pytest.mark.parametrize(
    "like",
    [
        torch.zeros(3, dtype=torch.float16),
        torch.zeros(3, dtype=torch.bfloat16),
        torch.zeros(3, dtype=torch.int64),
        torch.zeros(3, device="meta"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.float64)),  # dtypes differ
    ],
    ids=["float16", "bfloat16", "int64", "meta", "mixed"],
)
def test_numbers_stay_numbers_where_a_tensor_would_differ(like):
    assert operands(like, 0.5, 3) == (0.5, 3)


def test_numbers_stay_numbers_under_formulas_only():
    with kernels.formulas_only():
        assert operands(torch.zeros(3), 0.5) == (0.5,)


def test_numbers_stay_numbers_while_compiling():
    @torch.compile(backend="eager", fullgraph=True)
    def scaled(x):
        (m,) = operands(x, 0.25)
        assert not isinstance(m, torch.Tensor)
        return x * m

    assert torch.equal(scaled(torch.ones(3)), torch.full((3,), 0.25))


def test_operands_are_shared_and_outside_autograd_and_inference_mode():
    x = torch.zeros(2)
    with torch.inference_mode():
        (inside,) = operands(x, 0.123)
    (outside,) = operands(x, 0.123)
    assert inside is outside and not inside.is_inference() and not inside.requires_grad
    y = torch.ones(2, requires_grad=True)
    assert (y * outside).requires_grad  # usable in a graph like a number


def test_a_zero_keeps_its_sign():
    x = torch.tensor([1.0, -2.0])
    operands(x, 0.0)
    (negative_zero,) = operands(x, -0.0)
    assert _same(x / negative_zero, x / -0.0)  # -inf, inf


def test_modes_neither_make_nor_keep_the_operands():
    """A default device or fake tensors would make the cached tensor theirs, and every
    later call would fail: under a mode the numbers stay numbers."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    import pseudosel.functional as F

    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    with torch.device("meta"):
        assert operands(probs, 0.7712) == (0.7712,)
        assert F.threshold(probs, 0.7712, validate=False).mask.tolist() == [True, False]
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(probs)
        assert operands(fake, 0.7713) == (0.7713,)
    (operand,) = operands(probs, 0.7712)
    assert type(operand) is torch.Tensor and operand.device.type == "cpu"
    assert F.threshold(probs, 0.7712).mask.tolist() == [True, False]


# ---------------------------------------------------------------- numbers on the host
MOMENTA = st.one_of(st.sampled_from([0.0, 0.5, 0.7, 0.9, 0.99, 0.999, 1.0]), st.floats(0, 1))
STATISTICS = st.one_of(
    st.floats(min_value=0.0, max_value=1.0),  # confidences, means, variances
    st.floats(min_value=-1e30, max_value=1e30),
    st.sampled_from([0.0, -0.0, float("nan"), float("inf")]),
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=False), st.sampled_from([3.5e38, -3.5e38, 1e-46])))
def test_rounded_is_what_a_tensor_holds(dtype, value):
    expected = torch.tensor(value, dtype=dtype).item()  # a double holds either exactly
    got = scalars.rounded(value, dtype)
    assert _same(
        torch.tensor(got, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=400, deadline=None)
@given(old=STATISTICS, batch=STATISTICS, momentum=MOMENTA)
def test_ema_on_host_is_the_tensor_ema(dtype, old, batch, momentum):
    """old · m + rest · batch with 0-dim tensors of ``dtype`` (m and rest = 1 − m the
    selectors' operands, batch a Python number), bit for bit; a NaN is a NaN (its sign and
    payload depend on the operand order the CPU kernel picks)."""
    state = torch.tensor(old, dtype=dtype)
    m, rest = operands(state, momentum, 1 - momentum)  # as the selectors: a zero stays 0
    expected = state * m + rest * batch
    got = torch.tensor(scalars.ema_on_host(state.item(), batch, momentum, dtype), dtype=dtype)
    assert _same(got, expected) or (got.isnan() and expected.isnan())
