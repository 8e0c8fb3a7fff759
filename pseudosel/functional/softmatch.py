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
from pseudosel.kernels.scalars import operands
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
        and state.mu.dtype in (torch.float32, torch.float64)
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
    one process and the numbers can be read on the host (:func:`kernels.read_on_host`): the
    same shifted sums, with the count a number (n > 1). ``confidence``: (n,) (also the
    plain lane of :class:`~pseudosel.SoftMatchSelector`, :mod:`pseudosel.selectors._lane`).
    The float64 stage runs on the two sums read as Python floats — IEEE doubles, rounded
    as float64 tensor ops round them, without a dozen 0-dim ops (a state of another
    dtype than float32/float64 takes the general path)."""
    count = confidence.numel()
    deviation = confidence - in_dtype(state.mu, confidence.dtype)
    first, second = torch.stack((deviation.sum(), (deviation * deviation).sum())).tolist()
    batch_mu = state.mu.item() + first / count
    batch_var = max((second - first * first / count) / (count - 1), 0.0)  # NaN stays NaN
    m, rest = operands(state, momentum, 1 - momentum)  # rest: 1 − m
    if not isinstance(rest, Tensor):  # a zero (momentum 1), under a torch function mode, or
        # formulas_only() entered meanwhile by another thread: the operand made here
        rest = torch.tensor(rest, dtype=state.mu.dtype, device=state.mu.device)
    # rest · a Python number: the number rounded to the state's dtype, as in_dtype would
    return SoftMatchState(state.mu * m + rest * batch_mu, state.var * m + rest * batch_var)


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
    door returned (also the plain lane of :class:`~pseudosel.SoftMatchSelector`,
    :mod:`pseudosel.selectors._lane`)."""
    if state.mu.dim() == 0:
        mu, var = in_dtype(state.mu, confidence.dtype), in_dtype(state.var, confidence.dtype)
    else:
        mu = state.mu.to(confidence.dtype)[labels]
        var = state.var.to(confidence.dtype)[labels]
    two, n_sigma_squared, one = operands(var, 2, n_sigma * n_sigma, 1)
    below = (confidence - mu).clamp(max=0.0)
    spread = (two * var / n_sigma_squared).clamp_min(torch.finfo(var.dtype).tiny)  # no 0/0
    weight = torch.exp(-(below * below) / spread)
    if all_valid:  # nothing to mask
        return Selection(labels, weight, weight == one, confidence, valid)
    weight = torch.where(valid, weight, 0.0)
    return Selection(
        labels=labels,
        weight=weight,
        mask=valid & (weight == 1),
        score=torch.where(valid, confidence, 0.0),
        valid=valid,
    )
