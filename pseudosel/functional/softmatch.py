"""SoftMatch: a truncated Gaussian weight on the max confidence.

w = exp(−min(ĉ − μ_t, 0)² / (2σ²_t / n_σ²)): positions above the running mean get weight 1,
those below fall off with the running variance. μ_t and σ²_t are EMAs of the batch mean and
unbiased variance of ĉ, updated with the batch BEFORE the weights are computed (USB). The
n_σ factor is in the code, not the paper. Initial state μ₀ = 1/K, σ²₀ = 1.

``per_class=True`` keeps (K,) statistics over positions grouped by ŷ; as in USB, a class
with fewer than two positions in the batch contributes (0, 1) to the EMA.
Deviation from USB, on purpose: a batch with fewer than two valid positions (where USB's
unbiased variance is NaN) leaves σ² unchanged (and μ too when there is none).

Statistics are shifted by the current μ before summing, so sums of squares do not cancel,
and combined from all-reduced (count, Σd, Σd²) under torch.distributed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from pseudosel import kernels
from pseudosel._deprecation import keyword_valid, renamed_keywords, state_after_input
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_reduce_sum
from pseudosel.features import confidence_and_labels
from pseudosel.inputs import per_class_inputs
from pseudosel.kernels.scalars import ROUNDED_DTYPES, ema_on_host, operands, rounded
from pseudosel.selection import Selection
from pseudosel.validation import compute_dtype, in_dtype

__all__ = ["SoftMatchState", "softmatch_init", "softmatch_select", "softmatch_update"]


class SoftMatchState(NamedTuple):
    """mu and var: 0-dim, or (K,) with ``per_class``."""

    mu: Tensor
    var: Tensor


def softmatch_init(
    num_classes: int, *, per_class: bool = False, dtype=torch.float32, device=None
) -> SoftMatchState:
    """μ₀ = 1/K, σ²₀ = 1 (per class: (K,) of each).

    Example:
        >>> from pseudosel.functional import softmatch_init
        >>> softmatch_init(4)
        SoftMatchState(mu=tensor(0.2500), var=tensor(1.))
    """
    shape = (num_classes,) if per_class else ()
    return SoftMatchState(
        torch.full(shape, 1.0 / num_classes, dtype=dtype, device=device),
        torch.ones(shape, dtype=dtype, device=device),
    )


@no_grad
@state_after_input("softmatch_update", SoftMatchState)
@renamed_keywords("softmatch_update", group="process_group")
def softmatch_update(
    probs: Tensor,
    state: SoftMatchState,
    *,
    valid: Tensor | None = None,
    momentum: float = 0.999,
    per_class: bool = False,
    process_group: ProcessGroup | None = None,
    **front: Any,
) -> SoftMatchState:
    """One EMA step of μ_t, σ²_t on the valid positions of ``probs`` (N, K, *spatial).

    Args:
        probs: (N, K, *spatial); state: the current statistics; valid: optional bool
            (N, *spatial).
        momentum: EMA momentum m (new = m·old + (1 − m)·batch). Default 0.999.
        per_class: (K,) statistics grouped by pseudo-label. Default False.
        process_group: process group of the all-reduce (default group, if initialised).

    Example:
        >>> import torch
        >>> from pseudosel.functional import softmatch_init, softmatch_update
        >>> probs = torch.tensor([[0.9, 0.1], [0.7, 0.3]], dtype=torch.float64)
        >>> state = softmatch_init(2, dtype=torch.float64)
        >>> new = softmatch_update(probs, state, momentum=0.5)
        >>> round(float(new.mu), 4), round(float(new.var), 4)
        (0.65, 0.51)
    """
    probs, valid, all_valid = per_class_inputs(probs, valid, None, "softmatch_update", **front)
    confidence, labels = confidence_and_labels(probs)
    work = compute_dtype(probs.dtype)
    confidence = in_dtype(confidence, work).flatten()
    if (
        not per_class
        and valid.numel() > 1
        and kernels.counted_plainly(valid, all_valid)
        and state.mu.dtype in ROUNDED_DTYPES
        and state.var.dtype == state.mu.dtype
        and kernels.read_on_host(confidence, state.mu, state.var)
    ):
        return softmatch_update_on_host(confidence, state, momentum)
    weight = valid.flatten().to(work)
    buckets = state.mu.numel()
    slot = labels.flatten()
    shift = state.mu.to(work)[slot] if per_class else state.mu.to(work)
    # ignored positions are replaced (not multiplied) by 0: NaN/Inf there stay out
    deviation = confidence - shift
    if not all_valid:
        deviation = torch.where(valid.flatten(), deviation, 0.0)
    if per_class:
        stats = torch.zeros(3, buckets, dtype=work, device=probs.device)
        stats[0].index_add_(0, slot, weight)
        stats[1].index_add_(0, slot, deviation)
        stats[2].index_add_(0, slot, deviation * deviation)
    else:  # plain sums (an index_add into one bucket also trips inductor's CPU codegen)
        stats = torch.stack((weight.sum(), deviation.sum(), (deviation * deviation).sum()))
        stats = stats.unsqueeze(1)
    all_reduce_sum(stats, process_group)
    wide = torch.float64 if stats.device.type != "mps" else torch.float32
    count, first, second = stats.to(wide).unbind(0)
    safe = count.clamp_min(1)
    batch_mu = state.mu.reshape(-1).to(wide) + first / safe
    batch_var = ((second - first * first / safe) / (count - 1).clamp_min(1)).clamp_min(0)
    m = momentum
    dtype = state.mu.dtype
    if per_class:
        # USB: a class with fewer than two positions contributes (0, 1)
        enough = count > 1
        batch_mu = torch.where(enough, batch_mu, 0.0)
        batch_var = torch.where(enough, batch_var, 1.0)
        mu = state.mu * m + (1 - m) * batch_mu.to(dtype)
        var = state.var * m + (1 - m) * batch_var.to(dtype)
        return SoftMatchState(mu, var)
    mu = state.mu * m + (1 - m) * batch_mu.to(dtype).reshape(())
    var = state.var * m + (1 - m) * batch_var.to(dtype).reshape(())
    count = count.reshape(())
    return SoftMatchState(
        torch.where(count > 0, mu, state.mu), torch.where(count > 1, var, state.var)
    )


def softmatch_update_on_host(
    confidence: Tensor, state: SoftMatchState, momentum: float
) -> SoftMatchState:
    """:func:`softmatch_update`'s global statistics when every position counts, there is
    one process and the numbers can be read on the host (:func:`kernels.read_on_host`):
    :func:`softmatch_moments_on_host` as a new state. ``confidence``: (n,), n > 1."""
    mu, var = softmatch_moments_on_host(confidence, state, momentum)
    return SoftMatchState(torch.full_like(state.mu, mu), torch.full_like(state.var, var))


def softmatch_moments_on_host(
    confidence: Tensor, state: SoftMatchState, momentum: float
) -> tuple[float, float]:
    """The new μ and σ² of :func:`softmatch_update_on_host`, as Python numbers rounded to
    the state's dtype (float32 or float64) — also the plain lane of
    :class:`~pseudosel.SoftMatchSelector`, which writes them into its buffers
    (:mod:`pseudosel.selectors._lane`). The same shifted sums as the general path, read as
    two Python floats; its float64 stage then runs on them (IEEE doubles, rounded as float64
    tensor ops round them) and its EMA in the state's dtype by :func:`ema_on_host`, without
    a dozen 0-dim ops."""
    count = confidence.numel()
    deviation = confidence - in_dtype(state.mu, confidence.dtype)
    first, second = deviation.sum().item(), (deviation * deviation).sum().item()
    old_mu, old_var = state.mu.item(), state.var.item()
    batch_mu = old_mu + first / count
    batch_var = max((second - first * first / count) / (count - 1), 0.0)  # NaN stays NaN
    dtype = state.mu.dtype
    return (
        ema_on_host(old_mu, batch_mu, momentum, dtype),
        ema_on_host(old_var, batch_var, momentum, dtype),
    )


@no_grad
@keyword_valid("softmatch_select", 2)
def softmatch_select(
    probs: Tensor,
    state: SoftMatchState,
    *,
    valid: Tensor | None = None,
    n_sigma: float = 2.0,
    **front: Any,
) -> Selection:
    """Soft weights; mask = weight == 1 (at or above the mean); score = max p.

    Args:
        probs: (N, K, *spatial); state: the current statistics; valid: optional bool
            (N, *spatial).
        n_sigma: width factor n_σ (the weights use σ²/n_σ²). Default 2.0.

    Example:
        >>> import torch
        >>> from pseudosel.functional import SoftMatchState, softmatch_select
        >>> state = SoftMatchState(torch.tensor(0.8), torch.tensor(0.01))
        >>> sel = softmatch_select(torch.tensor([[0.9, 0.1], [0.7, 0.3]]), state)
        >>> sel.weight
        tensor([1.0000, 0.1353])
    """
    probs, valid, all_valid = per_class_inputs(probs, valid, None, "softmatch_select", **front)
    confidence, labels = confidence_and_labels(probs)
    return softmatch_weights(confidence, labels, state, valid, all_valid, n_sigma)


def softmatch_weights(
    confidence: Tensor,
    labels: Tensor,
    state: SoftMatchState,
    valid: Tensor,
    all_valid: bool,
    n_sigma: float,
) -> Selection:
    """:func:`softmatch_select`'s formula on the confidence and arg-max of what the front
    door returned."""
    if state.mu.dim() == 0:
        mu, var = in_dtype(state.mu, confidence.dtype), in_dtype(state.var, confidence.dtype)
    else:
        mu = state.mu.to(confidence.dtype)[labels]
        var = state.var.to(confidence.dtype)[labels]
    two, n_sigma_squared = operands(var, 2, n_sigma * n_sigma)
    spread = (two * var / n_sigma_squared).clamp_min(torch.finfo(var.dtype).tiny)  # no 0/0
    return gaussian_weights(confidence, labels, mu, spread, valid, all_valid)


def softmatch_weights_on_host(
    confidence: Tensor, labels: Tensor, state: SoftMatchState, valid: Tensor, n_sigma: float
) -> Selection:
    """:func:`softmatch_weights` of global statistics on an eager CPU (float32 or float64
    confidence and state, every position valid): σ² read as a Python number and the
    spread computed on the host, rounded op by op to the confidence's dtype as the 0-dim
    ops round it (the plain lane of :class:`~pseudosel.SoftMatchSelector`,
    :mod:`pseudosel.selectors._lane`)."""
    dtype = confidence.dtype
    n_sigma_squared = rounded(n_sigma * n_sigma, dtype)
    if n_sigma_squared == 0:  # n_σ below 1e-22 (float32): x / 0 as the tensor op gives it
        return softmatch_weights(confidence, labels, state, valid, True, n_sigma)
    var = rounded(state.var.item(), dtype)
    spread = rounded(rounded(2 * var, dtype) / n_sigma_squared, dtype)
    spread = max(spread, torch.finfo(dtype).tiny)  # NaN stays NaN, as in clamp_min
    mu = in_dtype(state.mu, dtype)
    return gaussian_weights(confidence, labels, mu, spread, valid, True)


def gaussian_weights(
    confidence: Tensor,
    labels: Tensor,
    mu: Tensor | float,
    spread: Tensor | float,
    valid: Tensor,
    all_valid: bool,
) -> Selection:
    """weight = exp(−min(p − μ, 0)² / spread), spread = 2σ²/n_σ² (clamped above 0); mask
    = weight == 1; score = p. ``mu`` and ``spread``: per position or scalar, tensors or
    Python numbers of the confidence's dtype (a number is the operand its 0-dim tensor is)."""
    below = (confidence - mu).clamp(max=0.0)
    weight = torch.exp(-(below * below) / spread)
    if all_valid:  # nothing to mask
        return Selection(labels, weight, weight == 1.0, confidence, valid)
    weight = torch.where(valid, weight, 0.0)
    return Selection(
        labels=labels,
        weight=weight,
        mask=valid & (weight == 1),
        score=torch.where(valid, confidence, 0.0),
        valid=valid,
    )
