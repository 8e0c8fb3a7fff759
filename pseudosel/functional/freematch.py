"""FreeMatch (self-adaptive thresholding): global τ_t times a class-wise local factor.

τ_t is an EMA of the mean (or 0.8-quantile) max confidence; p̃_t an EMA of the mean class
probabilities; the mask is max p >= τ_t · p̃_t(ŷ) / max_k p̃_t(k). The statistics are
updated with the current batch BEFORE the mask is computed (USB). A label histogram (EMA)
is kept too, for FreeMatch's fairness loss. Initial state: τ₀ = 1/K, p̃₀ = h₀ = 1/K.
Under torch.distributed the batch statistics are global (sums, counts and histograms are
all-reduced), so every rank holds the same state.
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
from pseudosel.functional.alignment import ema_step, masked_class_sums
from pseudosel.functional.quantile import masked_quantile
from pseudosel.functional.threshold import class_threshold_selection
from pseudosel.inputs import per_class_inputs
from pseudosel.kernels.scalars import ema_on_host, operands, rounded
from pseudosel.selection import Selection
from pseudosel.validation import compute_dtype, in_dtype

__all__ = ["FreeMatchState", "freematch_init", "freematch_select", "freematch_update"]

QUANTILE = 0.8
CLIP_MAX = 0.95


class FreeMatchState(NamedTuple):
    """time_p: 0-dim global threshold τ_t; p_model: (K,) p̃_t; label_hist: (K,) h_t."""

    time_p: Tensor
    p_model: Tensor
    label_hist: Tensor


def freematch_init(num_classes: int, *, dtype=torch.float32, device=None) -> FreeMatchState:
    """The published initial state: τ₀ = 1/K, p̃₀ = h₀ = uniform.

    Example:
        >>> from pseudosel.functional import freematch_init
        >>> freematch_init(4).time_p
        tensor(0.2500)
    """
    uniform = torch.full((num_classes,), 1.0 / num_classes, dtype=dtype, device=device)
    return FreeMatchState(uniform.mean(), uniform.clone(), uniform.clone())


@no_grad
@state_after_input("freematch_update", FreeMatchState)
@renamed_keywords("freematch_update", group="process_group")
def freematch_update(
    probs: Tensor,
    state: FreeMatchState,
    *,
    valid: Tensor | None = None,
    momentum: float = 0.999,
    use_quantile: bool = False,
    clip_thresh: bool = False,
    process_group: ProcessGroup | None = None,
    **front: Any,
) -> FreeMatchState:
    """One EMA step of the FreeMatch statistics on the valid positions of ``probs``.

    Args:
        probs: (N, K, *spatial) probabilities.
        state: the current statistics.
        valid: optional bool (N, *spatial); False marks ignored positions.
        momentum: EMA momentum m (new = m·old + (1 − m)·batch). Default 0.999.
        use_quantile: batch statistic for τ_t is the 0.8-quantile instead of the mean.
        clip_thresh: clip τ_t to [0, 0.95].
        process_group: process group of the collectives (default group, if initialised).

    Returns:
        The new state (a batch with no valid position anywhere leaves it unchanged).

    Example:
        >>> import torch
        >>> from pseudosel.functional import freematch_init, freematch_update
        >>> state = freematch_init(2)
        >>> probs = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
        >>> new = freematch_update(probs, state, momentum=0.5)
        >>> round(float(new.time_p), 4)
        0.6
    """
    probs, valid, all_valid = per_class_inputs(
        probs, valid, state.p_model.shape[0], "freematch_update", **front
    )
    num_classes = probs.shape[1]
    confidence, labels = confidence_and_labels(probs)
    work = compute_dtype(probs.dtype)
    confidence = in_dtype(confidence, work)
    if kernels.counted_plainly(valid, all_valid):  # plain sums and a label histogram
        if not use_quantile:
            return freematch_plain_update(probs, confidence, labels, state, momentum, clip_thresh)
        conf_sum, p_sum, hist, count = _plain_sums(probs, confidence, labels)
        seen = None
    else:
        weight = valid.to(work)
        # ignored positions are replaced (not multiplied) by 0: NaN/Inf there stay out
        class_sums = masked_class_sums(probs, valid, work)
        hist = torch.zeros(num_classes, dtype=work, device=probs.device)
        hist.index_add_(0, labels.flatten(), weight.flatten())
        stats = torch.cat(
            (
                torch.where(valid, confidence, 0.0).sum().unsqueeze(0),
                weight.sum().unsqueeze(0),
                class_sums,
                hist,
            )
        )
        all_reduce_sum(stats, process_group)
        conf_sum, count = stats[0], stats[1]
        p_sum, hist = stats[2 : 2 + num_classes], stats[2 + num_classes :]
        seen = count > 0
        count = count.clamp_min(1)
    if use_quantile:
        batch_time = masked_quantile(confidence, valid, QUANTILE, process_group).to(work)
    else:
        batch_time = conf_sum / count
    new = _moving_averages(state, batch_time, p_sum, hist, count, momentum, clip_thresh)
    if seen is None:  # the batch's positions count: it is seen
        return new
    return FreeMatchState(*(torch.where(seen, *pair) for pair in zip(new, state, strict=True)))


def freematch_plain_update(
    probs: Tensor,
    confidence: Tensor,
    labels: Tensor,
    state: FreeMatchState,
    momentum: float,
    clip_thresh: bool,
) -> FreeMatchState:
    """:func:`freematch_update` with the mean confidence when every position counts and
    there is one process (eager CPU, :func:`kernels.counted_plainly`): plain sums, a label
    histogram and the count as a number. ``confidence`` and ``labels``: the arg-max of
    ``probs`` (N, K, *spatial), confidence in the compute dtype."""
    conf_sum, p_sum, hist, count = _plain_sums(probs, confidence, labels)
    return _moving_averages(state, conf_sum / count, p_sum, hist, count, momentum, clip_thresh)


def freematch_update_in_place(
    probs: Tensor,
    confidence: Tensor,
    labels: Tensor,
    state: FreeMatchState,
    momentum: float,
    clip_thresh: bool,
) -> FreeMatchState:
    """:func:`freematch_plain_update` written into ``state``'s tensors, float32 or float64
    CPU tensors read on the host (the plain lane of :class:`~pseudosel.FreeMatchSelector`,
    :mod:`pseudosel.selectors._lane`): τ_t's EMA on Python numbers
    (:func:`~pseudosel.kernels.scalars.ema_on_host`, rounded as the 0-dim ops round it),
    p̃_t's and the histogram's by :func:`~pseudosel.functional.alignment.ema_step` into
    their tensors. Returns ``state``."""
    conf_sum, p_sum, hist, count = _plain_sums(probs, confidence, labels)
    dtype, work = state.time_p.dtype, confidence.dtype
    # count: the operand of _plain_sums, the position count rounded to the compute dtype
    batch_time = rounded(rounded(conf_sum.item() / rounded(labels.numel(), work), work), dtype)
    time_p = ema_on_host(state.time_p.item(), batch_time, momentum, dtype)
    if clip_thresh:  # as clamp: NaN stays NaN
        time_p = min(max(time_p, 0.0), rounded(CLIP_MAX, dtype))
    state.time_p.fill_(time_p)
    m, rest = operands(state, momentum, 1 - momentum)  # rest: 1 − m
    ema_step(state.p_model, in_dtype(p_sum / count, dtype), m, rest, out=state.p_model)
    ema_step(state.label_hist, in_dtype(hist / count, dtype), m, rest, out=state.label_hist)
    return state


def _plain_sums(
    probs: Tensor, confidence: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The batch's confidence sum, class sums and label histogram, and its position count
    as an operand (:func:`freematch_plain_update`)."""
    work = confidence.dtype
    p_sum = masked_class_sums(probs, None, work)
    flat = labels if labels.dim() == 1 else labels.flatten()  # flatten is an op even then
    hist = torch.bincount(flat, minlength=probs.shape[1]).to(work)
    (count,) = operands(p_sum, labels.numel())
    return confidence.sum(), p_sum, hist, count


def _moving_averages(
    state: FreeMatchState,
    batch_time: Tensor,
    p_sum: Tensor,
    hist: Tensor,
    count: Tensor | float,
    momentum: float,
    clip_thresh: bool,
) -> FreeMatchState:
    """The EMA step of the three statistics from the batch's (global) sums and count."""
    m, rest = operands(state, momentum, 1 - momentum)  # rest: 1 − m
    dtype = state.time_p.dtype
    time_p = state.time_p * m + rest * in_dtype(batch_time, dtype)
    if clip_thresh:
        time_p = time_p.clamp(0.0, CLIP_MAX)
    p_model = ema_step(state.p_model, in_dtype(p_sum / count, dtype), m, rest)
    label_hist = ema_step(state.label_hist, in_dtype(hist / count, dtype), m, rest)
    return FreeMatchState(time_p, p_model, label_hist)


@no_grad
@keyword_valid("freematch_select", 2)
def freematch_select(
    probs: Tensor,
    state: FreeMatchState,
    *,
    valid: Tensor | None = None,
    **front: Any,
) -> Selection:
    """mask = max p >= τ_t · p̃_t(ŷ) / max p̃_t; score = max p minus that threshold.

    Args:
        probs: (N, K, *spatial); state: the current statistics; valid: optional bool
            (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel.functional import freematch_init, freematch_select
        >>> sel = freematch_select(torch.tensor([[0.9, 0.1], [0.4, 0.6]]), freematch_init(2))
        >>> sel.mask  # τ₀ = 1/2
        tensor([True, True])
    """
    probs, valid, all_valid = per_class_inputs(
        probs, valid, state.p_model.shape[0], "freematch_select", **front
    )
    return class_threshold_selection(probs, freematch_thresholds(state), valid, all_valid=all_valid)


def freematch_thresholds(state: FreeMatchState) -> Tensor:
    """The (K,) class thresholds τ_t · p̃_t(c) / max p̃_t."""
    return state.time_p * (state.p_model / state.p_model.max())
