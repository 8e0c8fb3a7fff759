"""The input dtypes the tests run selectors on, and one table of per-dtype tolerances.

pseudosel computes in float32 for float16, bfloat16 and float32 inputs, and in float64 for
float64 inputs (the *compute dtype*). A result is compared with a float64 reference run on the
same (rounded) input values, so a half-precision input is held to float32's tolerance: what
its low precision costs is the rounding of the input, which the reference sees too.

The ``dtype`` fixture (tests/conftest.py) runs over :data:`DTYPES`; a test that needs only
some of them (a slow case, the half inputs) parametrises over a filtered :data:`DTYPES` or
:data:`HALF_DTYPES` instead of writing its own list.

Example:
    >>> import torch
    >>> tolerance(torch.bfloat16) == tolerance(torch.float32)
    True
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DTYPES",
    "HALF_DTYPES",
    "TOLERANCES",
    "Tolerance",
    "assert_close",
    "compute_dtype",
    "dtype_id",
    "numpy_of",
    "tolerance",
]

#: every floating dtype a selector takes, lowest precision first
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: the half-precision inputs (computed in float32)
HALF_DTYPES = (torch.float16, torch.bfloat16)


class Tolerance(NamedTuple):
    """``rtol`` and ``atol`` as torch.testing.assert_close takes them."""

    rtol: float
    atol: float


_FLOAT32 = Tolerance(rtol=2e-6, atol=1e-6)

#: input dtype → the tolerance of a result against the float64 reference on the same input:
#: one float32 computation (a few units in the last place of float32) or float64's rounding
TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float16: _FLOAT32,
    torch.bfloat16: _FLOAT32,
    torch.float32: _FLOAT32,
    torch.float64: Tolerance(rtol=1e-12, atol=1e-12),
}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype pseudosel computes weights and scores in for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tolerance(dtype: torch.dtype, *, terms: int = 1) -> Tolerance:
    """The table's tolerance for inputs of ``dtype``; ``terms``: a sum of that many rounded
    terms, whose error grows with the square root of their number (at least 1)."""
    base = TOLERANCES[dtype]
    scale = max(1.0, terms**0.5)
    return Tolerance(base.rtol * scale, base.atol * scale)


def assert_close(actual: Tensor, expected: Tensor, dtype: torch.dtype, *, terms: int = 1, **kw):
    """torch.testing.assert_close with the table's tolerance for inputs of ``dtype``
    (``actual`` is compared in float64, on the CPU)."""
    rtol, atol = tolerance(dtype, terms=terms)
    actual = actual.detach().cpu().double()
    expected = expected.detach().cpu().double() if isinstance(expected, Tensor) else expected
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, **kw)


def numpy_of(tensor: Tensor) -> np.ndarray:
    """A tensor's values as a numpy array (copied to the CPU: results on any device)."""
    return tensor.detach().cpu().numpy()


def dtype_id(dtype: torch.dtype) -> str:
    """``torch.float16`` → ``"float16"`` (test ids)."""
    return str(dtype).removeprefix("torch.")
