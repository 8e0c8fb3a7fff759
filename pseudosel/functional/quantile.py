"""Exact quantiles of masked values, on the device and across ranks, without gathering them.

U2PL's entropy percentile and FreeMatch's quantile option need an order statistic of all
valid positions of the global batch. Sorting needs every value in one place; instead we
select by radix on the bit pattern: rounds of 65,536-bin histograms (counts only,
all-reduced across ranks) pin down the exact k-th smallest value — two rounds for float32
(and half types, widened exactly), four for float64. The rank k stays a device tensor
throughout, so there is no host synchronisation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pseudosel._deprecation import renamed_keywords
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_reduce_sum

__all__ = ["masked_quantile", "order_statistics"]

_DIGIT_BITS = 16
_BINS = 1 << _DIGIT_BITS
_LOW = _BINS - 1
_TOP_BIT = 1 << (_DIGIT_BITS - 1)


def _sortable_keys(values: Tensor) -> tuple[Tensor, int]:
    """Signed int64 keys with the order of the values, and their width in bits (32 or 64).

    IEEE floats are sign-magnitude: flipping the magnitude bits of negative numbers makes
    the two's-complement integer order equal the float order.
    """
    if values.dtype == torch.float64:
        bits = values.contiguous().view(torch.int64)
        return torch.where(bits >= 0, bits, bits ^ ((1 << 63) - 1)), 64
    bits = values.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits, bits ^ ((1 << 31) - 1)), 32


def _keys_to_values(keys: Tensor, width: int) -> Tensor:
    magnitude_mask = (1 << (width - 1)) - 1
    bits = torch.where(keys >= 0, keys, keys ^ magnitude_mask)
    if width == 64:
        return bits.view(torch.float64)
    return bits.to(torch.int32).view(torch.float32)


def _digit(keys: Tensor, width: int, position: int) -> Tensor:
    """The ``position``-th 16-bit digit from the top, as an unsigned value in [0, 65536).

    The top digit has its sign bit flipped, so negative keys sort first."""
    digit = (keys >> (width - _DIGIT_BITS * (position + 1))) & _LOW
    return digit ^ _TOP_BIT if position == 0 else digit


def _pick_digit(histogram: Tensor, rank: Tensor) -> tuple[Tensor, Tensor]:
    """Digit holding the ``rank``-th element (0-based) and the rank within that digit."""
    cumulative = histogram.cumsum(-1)
    digit = torch.searchsorted(cumulative, rank.unsqueeze(-1), right=True).squeeze(-1)
    digit = digit.clamp(max=_BINS - 1)
    before = cumulative.gather(-1, digit.unsqueeze(-1)).squeeze(-1) - histogram.gather(
        -1, digit.unsqueeze(-1)
    ).squeeze(-1)
    return digit, rank - before


@no_grad
@renamed_keywords("order_statistics", group="process_group")
def order_statistics(
    values: Tensor, valid: Tensor, ranks: Tensor, process_group: ProcessGroup | None = None
) -> Tensor:
    """The ``ranks``-th smallest valid values (0-based), over all ranks of ``process_group``.

    Args:
        values: any-shape float tensor.
        valid: bool tensor of the same shape; only True positions count.
        ranks: (R,) long tensor of 0-based ranks into the global sorted valid values.
        process_group: process group (default: the default group, if initialised).

    Returns:
        (R,) tensor, float64 for float64 values, else float32. Ranks outside [0, count) are
        clamped into it; with no valid value at all the result is 0.
    """
    keys, width = _sortable_keys(values.flatten())
    weight = valid.flatten().to(torch.int64)
    rounds = width // _DIGIT_BITS
    count = len(ranks)
    matching = weight.expand(count, -1)  # per requested rank: elements sharing its prefix
    prefix = torch.zeros(count, dtype=torch.int64, device=keys.device)
    total = weight.sum()
    all_reduce_sum(total, process_group)
    rest = torch.minimum(ranks.clamp(min=0), (total - 1).clamp(min=0))
    for position in range(rounds):
        digits = _digit(keys, width, position)
        histogram = torch.zeros(count, _BINS, dtype=torch.int64, device=keys.device)
        for row in range(count):  # count is 1 or 2
            histogram[row].index_add_(0, digits, matching[row])
        all_reduce_sum(histogram, process_group)
        chosen, rest = _pick_digit(histogram, rest)
        top = chosen - _TOP_BIT if position == 0 else chosen
        prefix = prefix + top * (1 << (width - _DIGIT_BITS * (position + 1)))
        matching = matching * (digits.unsqueeze(0) == chosen.unsqueeze(1))
    result = _keys_to_values(prefix, width)
    return torch.where(total > 0, result, 0.0)


@no_grad
@renamed_keywords("masked_quantile", group="process_group")
def masked_quantile(
    values: Tensor, valid: Tensor, q: float | Tensor, process_group: ProcessGroup | None = None
) -> Tensor:
    """Quantile ``q`` of the valid values, linear interpolation (numpy's default method).

    With n valid values sorted x_(0) <= ... <= x_(n-1), h = (n - 1)·q and the result is
    x_(⌊h⌋) + (h - ⌊h⌋)·(x_(⌊h⌋+1) - x_(⌊h⌋)) — as ``numpy.percentile(x, 100 q)`` and
    ``torch.quantile(x, q)``, but global across ranks and without host synchronisation.

    Args:
        values: float tensor; valid: bool of the same shape; q in [0, 1] (a number or a
            0-dim tensor).
        process_group: process group (default: the default group, if initialised).

    Returns:
        0-dim tensor, float64 for float64 values else float32 (0 when nothing is valid).

    Example:
        >>> import torch
        >>> from pseudosel.functional import masked_quantile
        >>> values = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
        >>> masked_quantile(values, values < 50, 0.5)  # median of 1..4
        tensor(2.5000)
    """
    count = valid.sum().to(torch.int64)
    all_reduce_sum(count, process_group)
    h = (count - 1).clamp(min=0).to(torch.float64) * q
    lower = h.floor()
    ranks = torch.stack((lower, lower + 1)).to(torch.int64)
    low_value, high_value = order_statistics(values, valid, ranks, process_group).unbind(0)
    fraction = (h - lower).to(low_value.dtype)
    return low_value + fraction * (high_value - low_value)
