"""Adsh (adaptive thresholding for imbalanced SSL): class-wise thresholds from sorted
confidences, recomputed once per epoch over the unlabelled data.

Guo & Li, "Class-Imbalanced Semi-Supervised Learning with Adaptive Thresholding", ICML 2022,
as USB runs it (``semilearn/imb_algorithms/adsh``, ``AdaptiveThresholdingHook``). State:
scores s (K,), s₀ = τ₁ for every class; mask = ĉ >= exp(−s(ŷ)) — so before the first
recomputation the threshold is exp(−τ₁) ≈ 0.387 for τ₁ = 0.95 (USB's behaviour). At the end
of an epoch, with C_k the confidences of the unlabelled samples predicted as k sorted in
descending order, n_k = |C_k| and c the calibration class (USB: class 0, the head class of
its long-tailed data sets):

    m   = |{x ∈ C_c : x >= τ₁}|
    ρ   = 1 if m = 0, else (m − 1) / n_c            (USB's loop leaves ρ at its last index)
    j_k = ⌊n_k · ρ⌋ − 1 (float64, as Python computes it); j_k = −1 means the last entry
    s_k = −log C_k[j_k]  for every class with n_k > 0; other classes keep s_k.

``adsh_calibrate`` takes the whole pass as flat (confidence, label) vectors, label −1 for
entries to skip, and returns the same s as USB when fed the same confidences.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from pseudosel._deprecation import keyword_valid, warn_once
from pseudosel._grad import no_grad
from pseudosel.functional.threshold import class_threshold_selection
from pseudosel.inputs import per_class_inputs
from pseudosel.selection import Selection

__all__ = [
    "AdshState",
    "adsh_calibrate",
    "adsh_init",
    "adsh_recompute",
    "adsh_select",
    "adsh_thresholds",
]

TAU_1 = 0.95


class AdshState(NamedTuple):
    """s: (K,) scores; the class-wise thresholds are exp(−s)."""

    s: Tensor


def adsh_init(num_classes: int, *, tau_1: float = TAU_1, dtype=torch.float32, device=None):
    """USB's initial scores: s₀ = τ₁ for every class (thresholds exp(−τ₁)).

    Example:
        >>> from pseudosel.functional import adsh_init
        >>> adsh_init(3).s
        tensor([0.9500, 0.9500, 0.9500])
    """
    return AdshState(torch.full((num_classes,), tau_1, dtype=dtype, device=device))


def adsh_thresholds(state: AdshState) -> Tensor:
    """(K,) class-wise thresholds exp(−s).

    Example:
        >>> from pseudosel.functional import adsh_init, adsh_thresholds
        >>> adsh_thresholds(adsh_init(2))
        tensor([0.3867, 0.3867])
    """
    return torch.exp(-state.s)


@no_grad
def adsh_calibrate(
    confidence: Tensor,
    labels: Tensor,
    state: AdshState,
    *,
    tau_1: float = TAU_1,
    calibration_class: int | None = 0,
) -> AdshState:
    """New scores from one pass over the unlabelled data (USB's ``after_train_epoch``).

    Args:
        confidence: (M,) max probability per unlabelled sample.
        labels: (M,) long arg-max per sample; −1 marks entries that take no part.
        state: the current scores (kept for a class with no entry).
        tau_1: τ₁, the confidence the calibration class is held to. Default 0.95 (USB).
        calibration_class: c; default 0 as in USB; None takes the class predicted most
            often in the pass (lowest index on ties), the paper's "majority class".

    Example:
        >>> import torch
        >>> from pseudosel.functional import adsh_calibrate, adsh_init
        >>> conf = torch.tensor([0.99, 0.97, 0.90, 0.80, 0.70, 0.60])
        >>> labels = torch.tensor([0, 0, 0, 0, 1, 1])
        >>> new = adsh_calibrate(conf, labels, adsh_init(2))
        >>> torch.exp(-new.s)  # ρ = 1/4: class 0 keeps its top 1, class 1 ⌊2/4⌋ − 1 → last
        tensor([0.9900, 0.6000])
    """
    if confidence.shape[0] == 0:  # an empty pass leaves every class as it is
        return state
    num_classes = state.s.shape[0]
    seen = labels >= 0
    # unseen entries get the sentinel class K and sort after every class
    key = torch.where(seen, labels, num_classes)
    counts = torch.zeros(num_classes + 1, dtype=torch.long, device=labels.device)
    counts.index_add_(0, key, torch.ones_like(key))
    counts = counts[:num_classes]
    # descending confidence, then a stable sort by class: C_k laid out class after class
    order = torch.sort(confidence, descending=True, stable=True).indices
    order = order[torch.sort(key[order], stable=True).indices]
    ranked = confidence[order]
    starts = torch.cumsum(counts, 0) - counts
    if calibration_class is None:
        calib = counts.argmax()
    else:
        calib = torch.tensor(calibration_class, device=labels.device)
    passed = ((key == calib) & (confidence >= tau_1)).sum()
    # a (1,) index, not a 0-dim one: indexing with a 0-dim tensor reads it on the host
    n_calib = counts[calib.reshape(1)].squeeze(0)
    rho = torch.where(
        passed > 0,
        (passed - 1).to(torch.float64) / n_calib.clamp_min(1).to(torch.float64),
        torch.ones((), dtype=torch.float64, device=labels.device),
    )
    position = torch.floor(counts.to(torch.float64) * rho).to(torch.long) - 1
    position = torch.where(position < 0, counts - 1, position)  # Python's index −1
    picked = ranked.gather(0, (starts + position).clamp(0, ranked.shape[0] - 1))
    s = -torch.log(picked.to(state.s.dtype))
    return AdshState(torch.where(counts > 0, s, state.s))


def adsh_recompute(state: AdshState, confidence: Tensor, labels: Tensor, **options: Any):
    """Deprecated (warns once): ``adsh_calibrate(confidence, labels, state, ...)``."""
    warn_once(
        "adsh_recompute",
        "adsh_recompute(state, confidence, labels) is deprecated and will be removed; use "
        "adsh_calibrate(confidence, labels, state)",
    )
    return adsh_calibrate(confidence, labels, state, **options)


@no_grad
@keyword_valid("adsh_select", 2)
def adsh_select(
    probs: Tensor,
    state: AdshState,
    *,
    valid: Tensor | None = None,
    **front: Any,
) -> Selection:
    """mask = max p >= exp(−s(ŷ)); score = max p minus that threshold.

    Args:
        probs: (N, K, *spatial); state: the current scores; valid: optional bool
            (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel.functional import adsh_init, adsh_select
        >>> sel = adsh_select(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), adsh_init(2))
        >>> sel.mask  # exp(−0.95) ≈ 0.387
        tensor([True, True])
    """
    probs, valid, _ = per_class_inputs(probs, valid, state.s.shape[0], "adsh_select", **front)
    return class_threshold_selection(probs, adsh_thresholds(state), valid)
