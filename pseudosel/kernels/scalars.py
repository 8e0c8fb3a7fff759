"""Python numbers as cached 0-dim operands, for small eager CPU batches.

A torch op between a tensor and a Python number wraps the number in a fresh tensor on every
call. On a CPU that allocation costs as much as a small batch's arithmetic: at 64 × 10,
``x * 0.999`` takes about 2 µs and ``x * m`` with a 0-dim tensor ``m`` about 1 µs (this
machine, benchmarks/RESULTS.md), and a stateful selector's step does a dozen such ops. A
0-dim tensor of ``x``'s own dtype is the same operand: the op reads it as the one CPU
scalar it reads the wrapped number as — the number rounded to that dtype — so results are
bit for bit those of the Python number (tests/kernels/test_scalars.py), without the
allocation. Elsewhere (other devices, half dtypes, torch.compile, :func:`formulas_only`)
the numbers are returned as they are.
"""

from __future__ import annotations

import functools
import math
import struct

import torch
from torch import Tensor

from pseudosel import kernels

__all__ = ["ROUNDED_DTYPES", "ema_on_host", "operands", "rounded"]

# the dtypes whose 0-dim tensor holds exactly what the wrapped number is rounded to
_EXACT = (torch.float32, torch.float64)
_FLOAT32 = struct.Struct("f")
#: the dtypes whose ops :func:`rounded` and :func:`ema_on_host` reproduce on Python numbers
ROUNDED_DTYPES = (torch.float32, torch.float64)


def operands(like: Tensor | tuple[Tensor, ...], *values: float) -> tuple[Tensor | float, ...]:
    """``values`` as cached 0-dim tensors of the dtype of ``like`` — the tensor, or the
    tensors of one dtype, they are combined with — on an eager CPU; elsewhere (or when the
    tensors of ``like`` differ in dtype) ``values`` unchanged.

    The tensors are shared between calls: use them as operands only, never in place. The
    forms that equal the number's are ``x op value`` and ``value op x`` for ``+ - * ==``
    and the comparisons, and ``x / value``; not ``value / x``, which torch computes as
    ``x.reciprocal() * value``. ``values`` must lie within the dtype's range.

    Example:
        >>> import torch
        >>> from pseudosel.kernels.scalars import operands
        >>> x = torch.tensor([0.5, 0.25])
        >>> (m,) = operands(x, 0.9)
        >>> m, torch.equal(x * m, x * 0.9)
        (tensor(0.9000), True)
    """
    first = like[0] if isinstance(like, tuple) else like
    dtype = first.dtype
    if dtype not in _EXACT or type(first) is not Tensor or not kernels.eager_cpu(first):
        return values
    if isinstance(like, tuple) and any(tensor.dtype != dtype for tensor in like):
        return values  # a 0-dim tensor of one dtype would change the others' arithmetic
    if torch._C._len_torch_dispatch_stack() or torch._C._len_torch_function_stack():
        return values  # a mode (fake tensors, a default device) would make, and keep, its own
    # a zero keeps its sign: 0.0 and -0.0 are one key of the cache, and x / -0.0 is -inf
    return tuple([value if value == 0 else _constant(value, dtype) for value in values])


@functools.lru_cache(maxsize=256)
def _constant(value: float, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False):  # a plain tensor, usable in and out of inference mode
        return torch.tensor(value, dtype=dtype, device="cpu")


def rounded(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype`` (float32 or float64), as a Python float: what a 0-dim
    tensor of that dtype made from it holds (to nearest, ties to even; beyond float32's
    range ±inf).

    Example:
        >>> import torch
        >>> from pseudosel.kernels.scalars import rounded
        >>> rounded(0.1, torch.float32) == torch.tensor(0.1).item(), rounded(0.1, torch.float64)
        (True, 0.1)
    """
    value = float(value)  # a NumPy or 0-dim tensor number: its value, not its arithmetic
    if dtype == torch.float64:
        return value
    if dtype != torch.float32:
        raise ValueError(f"rounded() takes float32 or float64, got {dtype}")
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    except OverflowError:  # struct refuses what C's cast turns into an infinity
        return math.copysign(math.inf, value)


def ema_on_host(old: float, batch: float, momentum: float, dtype: torch.dtype) -> float:
    """``old * m + rest * batch`` as 0-dim tensors of ``dtype`` (float32 or float64) round it
    — ``m`` and ``rest`` the :func:`operands` of ``momentum`` and ``1 - momentum``, ``batch``
    a Python number — computed on Python floats: a selector's EMA of a scalar statistic on
    the plain lane, without a 0-dim op per term (:mod:`pseudosel.selectors._lane`).

    Each op's result is rounded to ``dtype`` in turn. For float32 that is each op's correctly
    rounded result, as the tensor op gives: a double holds the product of two floats
    exactly, and a double sum of two floats rounded to float is rounded once (53 >= 2·24 + 2
    bits), so both sides agree bit for bit (tests/kernels/test_scalars.py); a NaN stays a
    NaN.

    Example:
        >>> import torch
        >>> from pseudosel.kernels.scalars import ema_on_host
        >>> old, m, rest = torch.tensor(0.3), torch.tensor(0.999), torch.tensor(1 - 0.999)
        >>> ema_on_host(old.item(), 0.7, 0.999, torch.float32) == (old * m + rest * 0.7).item()
        True
    """
    # 1 − m as the stages write it, in momentum's own type (as operands receives it)
    m, rest = rounded(momentum, dtype), rounded(1 - momentum, dtype)
    return rounded(rounded(old * m, dtype) + rounded(rest * rounded(batch, dtype), dtype), dtype)
