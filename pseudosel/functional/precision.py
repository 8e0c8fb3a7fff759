"""Precision-targeted threshold (experimental): the smallest confidence threshold whose
precision is at least 1 − ε with probability at least 1 − δ, certified on held-out labels.

Data: a window of held-out pairs (confidence ĉᵢ = max p, correct ŷᵢ = yᵢ) from labelled data
the model was NOT trained on. Candidates: a fixed grid of thresholds t₀ > t₁ > … (default
1, 0.999, …, 0.001, 0), fixed before seeing any data. For each candidate, nⱼ = #{ĉᵢ >= tⱼ}
and kⱼ = the correct ones among them; given nⱼ, kⱼ ~ Binomial(nⱼ, π(tⱼ)) with π(t) the
precision of {ĉ >= t} over the data distribution.

Test of candidate j: reject "π(tⱼ) < 1 − ε" when P(Binomial(nⱼ, 1 − ε) >= kⱼ) <= δ — exactly
when the one-sided Clopper–Pearson lower bound at level 1 − δ is >= 1 − ε (see
:mod:`pseudosel.functional.clopper_pearson`).

Fixed-sequence testing: the candidates are tested from the highest down; the first that fails
stops the sequence, and the threshold is the lowest candidate certified before it. Testing
in an order fixed in advance and stopping at the first failure keeps the probability of
certifying ANY candidate whose precision is below 1 − ε at most δ with no multiplicity
correction (a wrong certificate needs the first candidate with π < 1 − ε to pass its own
level-δ test), so the whole grid costs nothing, unlike a Bonferroni split δ/G. Candidates
near the top hold few points and could stop the sequence by chance before any real test
(with n < m = ⌈log δ / log(1 − ε)⌉ points even a perfect record cannot pass), so the
sequence starts at the highest candidate with at least max(``min_count``, m) points; this
data-dependent start keeps the guarantee when the chance that a prediction is right does not
decrease with its confidence (the same holds with no assumption when nothing is skipped).

Result: P(π(τ) >= 1 − ε) >= 1 − δ over the draw of the held-out window. ``per_class``:
the same per predicted class (precision of the pseudo-labels of class k) at δ/K each
(Bonferroni over the K classes), so that all K hold together with probability >= 1 − δ and
hence the overall precision too. When no candidate is certified: select nothing (threshold
2, above every probability).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from pseudosel._deprecation import keyword_valid, renamed_keywords, warn_once
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_gather_cat
from pseudosel.features import confidence_and_labels
from pseudosel.functional.clopper_pearson import betainc_iterations, binomial_tail
from pseudosel.inputs import per_class_inputs
from pseudosel.selection import Selection, hard_selection
from pseudosel.validation import check_labels, check_real

__all__ = [
    "PrecisionTargetState",
    "certified_threshold",
    "precision_candidates",
    "precision_counts",
    "precision_target_calibrate",
    "precision_target_init",
    "precision_target_observe",
    "precision_target_select",
    "precision_target_update",
]

EPSILON = 0.05
DELTA = 0.05
WINDOW = 4096
NUM_CANDIDATES = 1000
MIN_COUNT = 100
SELECT_NOTHING = 2.0  # a threshold above every probability: nothing is selected


class PrecisionTargetState(NamedTuple):
    """confidence (W,), correct (W,) bool, predicted (W,) long: the ring buffer of held-out
    pairs; filled: 0-dim long, how many slots hold a pair; ptr: 0-dim long, the next slot to
    write; thresh: (K,) the current threshold of each predicted class."""

    confidence: Tensor
    correct: Tensor
    predicted: Tensor
    filled: Tensor
    ptr: Tensor
    thresh: Tensor


def precision_target_init(
    num_classes: int,
    *,
    window: int = WINDOW,
    fallback_tau: float | None = None,
    dtype=torch.float32,
    device=None,
) -> PrecisionTargetState:
    """An empty window; thresholds ``fallback_tau``, or 2 (select nothing) when None.

    Example:
        >>> from pseudosel.functional import precision_target_init
        >>> state = precision_target_init(3, window=8)
        >>> state.confidence.shape, int(state.filled), state.thresh
        (torch.Size([8]), 0, tensor([2., 2., 2.]))
    """
    tau = SELECT_NOTHING if fallback_tau is None else fallback_tau
    zero = torch.zeros((), dtype=torch.long, device=device)
    return PrecisionTargetState(
        confidence=torch.zeros(window, dtype=dtype, device=device),
        correct=torch.zeros(window, dtype=torch.bool, device=device),
        predicted=torch.zeros(window, dtype=torch.long, device=device),
        filled=zero,
        ptr=zero.clone(),
        thresh=torch.full((num_classes,), tau, dtype=dtype, device=device),
    )


def precision_candidates(num: int = NUM_CANDIDATES, *, dtype=torch.float64, device=None):
    """The default grid: ``num + 1`` thresholds 1, 1 − 1/num, …, 1/num, 0, highest first.

    Example:
        >>> from pseudosel.functional import precision_candidates
        >>> precision_candidates(4)
        tensor([1.0000, 0.7500, 0.5000, 0.2500, 0.0000], dtype=torch.float64)
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an int >= 1, got {num!r}")
    return torch.arange(num, -1, -1, dtype=torch.float64, device=device).div(num).to(dtype)


@no_grad
@renamed_keywords("precision_target_update", group="process_group")
def precision_target_update(
    probs: Tensor,
    labels: Tensor,
    state: PrecisionTargetState,
    *,
    valid: Tensor | None = None,
    process_group: ProcessGroup | None = None,
    validate: bool = True,
    activation: str = "softmax",
    labels_name: str = "labels",
) -> PrecisionTargetState:
    """Push the valid held-out positions of a batch into the window (oldest out first).

    Under torch.distributed the batch's pairs are all-gathered first (every rank must pass
    the same number of positions), so every rank writes the same pairs in rank order and
    holds the window one process fed the concatenated batches would hold. With more valid
    positions than the window holds, the last ones (in flattened order) are kept.

    Args:
        probs: (N, K, *spatial) held-out probabilities.
        labels: (N, *spatial) integer true classes in [0, K) at valid positions.
        state: the current window and thresholds.
        valid: optional bool (N, *spatial) (labels at invalid positions are not read).
        process_group: process group of the all-gather (default group, if initialised).
        validate: check the probabilities and the labels' range (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"`` (binary outputs only).
        labels_name: the labels' name in error messages.

    Returns:
        The new state (thresholds unchanged: call :func:`precision_target_calibrate`).

    Example:
        >>> import torch
        >>> from pseudosel.functional import precision_target_init, precision_target_update
        >>> state = precision_target_init(2, window=3)
        >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
        >>> state = precision_target_update(probs, torch.tensor([0, 0]), state)
        >>> state.confidence, state.correct, int(state.filled), int(state.ptr)
        (tensor([0.9000, 0.7000, 0.0000]), tensor([ True, False, False]), 2, 2)
    """
    num_classes = state.thresh.shape[0]
    probs, valid, _ = per_class_inputs(
        probs,
        valid,
        num_classes,
        "precision_target_update",
        validate=validate,
        activation=activation,
    )
    check_label_tensor(labels, valid, num_classes, validate=validate, name=labels_name)
    confidence, predicted = confidence_and_labels(probs)
    # one gather for the four per-position fields (float64 holds the class ids exactly)
    rows = torch.stack(
        (
            confidence.flatten().to(torch.float64),
            predicted.flatten().to(torch.float64),
            (predicted == labels).flatten().to(torch.float64),
            valid.flatten().to(torch.float64),
        ),
        dim=1,
    )
    rows = all_gather_cat(rows, process_group)
    keep = rows[:, 3] > 0
    window = state.confidence.shape[0]
    order = keep.long().cumsum(0)  # 1-based rank of each valid pair in the batch
    total = keep.long().sum()
    keep &= total - order < window  # only the newest `window` pairs survive the wrap
    slot = torch.where(keep, (state.ptr + order - 1) % window, window)  # window: discarded

    def write(buffer: Tensor, values: Tensor) -> Tensor:
        spare = torch.cat((buffer, buffer[:1]))  # one extra slot takes the discarded rows
        return spare.scatter(0, slot, values.to(buffer.dtype))[:window]

    return PrecisionTargetState(
        confidence=write(state.confidence, rows[:, 0]),
        correct=write(state.correct, rows[:, 2] > 0),
        predicted=write(state.predicted, rows[:, 1].long()),
        filled=(state.filled + total).clamp_max(window),
        ptr=(state.ptr + total) % window,
        thresh=state.thresh,
    )


def precision_target_observe(
    state: PrecisionTargetState,
    probs: Tensor,
    labels: Tensor,
    valid: Tensor,
    *,
    group: ProcessGroup | None = None,
) -> PrecisionTargetState:
    """Deprecated (warns once): ``precision_target_update(probs, labels, state, ...)``."""
    warn_once(
        "precision_target_observe",
        "precision_target_observe(state, probs, labels, valid) is deprecated and will be "
        "removed; use precision_target_update(probs, labels, state, valid=valid)",
    )
    return precision_target_update(
        probs, labels, state, valid=valid, process_group=group, validate=False
    )


def check_label_tensor(
    labels: object, valid: Tensor, num_classes: int, *, validate: bool, name: str = "labels"
) -> None:
    """``labels``: an integer tensor shaped and placed like the positions, and with
    ``validate`` holding classes in [0, K) at the valid positions."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} must be an integer tensor of class indices, got {labels.dtype}")
    if tuple(labels.shape) != tuple(valid.shape):
        raise ValueError(
            f"{name} must have shape {tuple(valid.shape)} (the positions of probs), got "
            f"{tuple(labels.shape)}"
        )
    if labels.device != valid.device:
        raise ValueError(f"{name} must be on {valid.device} like probs, got {labels.device}")
    if validate:
        check_labels(labels, num_classes, valid, name=name)


@no_grad
def precision_counts(
    confidence: Tensor,
    correct: Tensor,
    valid: Tensor,
    candidates: Tensor,
    *,
    groups: Tensor | None = None,
    num_groups: int = 1,
) -> tuple[Tensor, Tensor]:
    """Points at or above each candidate, and the correct ones among them, per group.

    Args:
        confidence: (M,) confidences; correct, valid: bool (M,).
        candidates: (G,) thresholds, strictly decreasing (compared in the dtype of
            ``confidence``).
        groups: optional long (M,) group of each point in [0, num_groups) (e.g. its
            predicted class); None puts every point in group 0.
        num_groups: number of groups. Default 1.

    Returns:
        ``(trials, successes)``: float64 (num_groups, G), nⱼ = #{valid, ĉ >= tⱼ} and kⱼ the
        correct ones among them.

    Example:
        >>> import torch
        >>> from pseudosel.functional import precision_counts
        >>> n, k = precision_counts(torch.tensor([0.9, 0.6, 0.95]),
        ...                         torch.tensor([True, False, True]),
        ...                         torch.ones(3, dtype=torch.bool),
        ...                         torch.tensor([1.0, 0.9, 0.5]))
        >>> n, k
        (tensor([[0., 2., 3.]], dtype=torch.float64), tensor([[0., 2., 2.]], dtype=torch.float64))
    """
    size = candidates.shape[0]
    ascending = candidates.to(confidence.dtype).flip(0).contiguous()
    # index of the first (highest) candidate at or below each confidence; `size`: none
    first = size - torch.searchsorted(ascending, confidence.contiguous(), right=True)
    if groups is not None:
        first = first + groups * (size + 1)
    shape = (num_groups * (size + 1),)
    weight = valid.to(torch.float64)
    trials = torch.zeros(shape, dtype=torch.float64, device=confidence.device)
    trials = trials.scatter_add(0, first, weight)
    successes = torch.zeros_like(trials).scatter_add(0, first, weight * correct)
    trials = trials.view(num_groups, size + 1)[:, :size].cumsum(1)
    successes = successes.view(num_groups, size + 1)[:, :size].cumsum(1)
    return trials, successes


def min_certifiable(epsilon: float, delta: float) -> int:
    """m: the fewest points with which a perfect record certifies 1 − ε at level δ,
    the smallest n with (1 − ε)ⁿ <= δ."""
    n = max(1, math.ceil(math.log(delta) / math.log1p(-epsilon)))
    while n > 1 and (1 - epsilon) ** (n - 1) <= delta:
        n -= 1
    while (1 - epsilon) ** n > delta:
        n += 1
    return n


@no_grad
def check_target(epsilon: object, delta: object, min_count: object) -> tuple[float, float, int]:
    """The checked ``(epsilon, delta, min_count)``: ε and δ in (0, 1), min_count an int >= 0.

    Raises:
        TypeError / ValueError: naming the argument, what was expected and what was given.
    """
    checked = []
    for name, value in (("epsilon", epsilon), ("delta", delta)):
        value = check_real(name, value, low=0.0, high=1.0, low_open=True)
        if value >= 1:
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
        checked.append(value)
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 0:
        raise ValueError(f"min_count must be an int >= 0, got {min_count!r}")
    return checked[0], checked[1], min_count


def certified_threshold(
    trials: Tensor,
    successes: Tensor,
    candidates: Tensor,
    *,
    epsilon: float = EPSILON,
    delta: float = DELTA,
    min_count: int = MIN_COUNT,
    iterations: int | None = None,
) -> Tensor:
    """The lowest candidate certified by the fixed-sequence Clopper–Pearson test (module doc).

    Args:
        trials: (..., G) nⱼ, the points at or above each candidate
            (:func:`precision_counts`).
        successes: (..., G) kⱼ, the correct ones among them.
        candidates: (G,) strictly decreasing thresholds.
        epsilon: ε in (0, 1), the target precision is 1 − ε. Default 0.05.
        delta: δ in (0, 1), the allowed probability of a wrong certificate. Default 0.05.
        min_count: the sequence starts at the highest candidate with at least
            max(min_count, m) points (m: the fewest that can certify). Default 100.
        iterations: continued-fraction steps of the binomial tails. Default 200, enough
            for counts up to about 34,000; pass ``betainc_iterations(largest count + 1)``
            beyond that (a count fixed by a capacity, never read from the data).

    Returns:
        (...,) thresholds in the dtype of ``candidates``; 2 (select nothing) where no
        candidate is certified.

    Example:
        >>> import torch
        >>> from pseudosel.functional import certified_threshold
        >>> candidates = torch.tensor([0.9, 0.8, 0.7])
        >>> n = torch.tensor([60.0, 200.0, 400.0])
        >>> k = torch.tensor([60.0, 198.0, 340.0])  # 100%, 99%, 85% correct
        >>> certified_threshold(n, k, candidates, min_count=0)
        tensor(0.8000)
    """
    epsilon, delta, min_count = check_target(epsilon, delta, min_count)
    if iterations is None:
        iterations = 200
    start = max(min_count, min_certifiable(epsilon, delta))
    tail = binomial_tail(successes, trials, 1.0 - epsilon, iterations=iterations)
    tested = trials >= start  # a prefix of the sequence is passed over (counts only grow)
    failed = tested & (tail > delta)
    reached = failed.long().cumsum(-1) == 0  # before the first failure
    certified = tested & reached
    values = candidates.to(trials.dtype).expand_as(trials)
    tau = torch.where(certified, values, SELECT_NOTHING).amin(-1)
    return tau.to(candidates.dtype)


@no_grad
def precision_target_calibrate(
    state: PrecisionTargetState,
    candidates: Tensor,
    *,
    epsilon: float = EPSILON,
    delta: float = DELTA,
    per_class: bool = False,
    min_count: int = MIN_COUNT,
) -> PrecisionTargetState:
    """New thresholds from the window (module doc); unchanged while the window is empty.

    Args:
        candidates: (G,) strictly decreasing thresholds (default grid:
            :func:`precision_candidates`).
        epsilon: ε, the target precision is 1 − ε (:func:`certified_threshold`). Default 0.05.
        delta: δ, the allowed probability of a wrong certificate. Default 0.05.
        min_count: where the sequence starts (:func:`certified_threshold`). Default 100.
        per_class: one threshold per predicted class, each at level δ/K (all K hold together
            with probability >= 1 − δ). Default False: one threshold for every class.

    Returns:
        The new state (window unchanged). No host sync: counts, tails and the sequence
        are computed on the window's device with a fixed amount of work.

    Example:
        >>> import torch
        >>> from pseudosel.functional import (precision_candidates, precision_target_calibrate,
        ...                                   precision_target_init, precision_target_update)
        >>> probs = torch.tensor([[0.97, 0.03]] * 200 + [[0.6, 0.4]] * 200)
        >>> labels = torch.tensor([0] * 300 + [1] * 100)  # right at 0.97, half right at 0.6
        >>> state = precision_target_update(probs, labels, precision_target_init(2, window=512))
        >>> precision_target_calibrate(state, precision_candidates(100)).thresh
        tensor([0.6100, 0.6100])
    """
    num_classes = state.thresh.shape[0]
    window = state.confidence.shape[0]
    occupied = torch.arange(window, device=state.confidence.device) < state.filled
    trials, successes = precision_counts(
        state.confidence,
        state.correct,
        occupied,
        candidates,
        groups=state.predicted if per_class else None,
        num_groups=num_classes if per_class else 1,
    )
    tau = certified_threshold(
        trials,
        successes,
        candidates,
        epsilon=epsilon,
        delta=delta / num_classes if per_class else delta,
        min_count=min_count,
        iterations=betainc_iterations(window + 1),
    )
    thresh = tau.to(state.thresh.dtype).expand(num_classes)
    return state._replace(thresh=torch.where(state.filled > 0, thresh, state.thresh))


@no_grad
@keyword_valid("precision_target_select", 2)
def precision_target_select(
    probs: Tensor,
    state: PrecisionTargetState,
    *,
    valid: Tensor | None = None,
    **front: Any,
) -> Selection:
    """mask = max p >= thresh(arg-max); weight = mask as float; score = max p (0 if ignored).

    Args:
        probs: (N, K, *spatial); state: the current thresholds; valid: optional bool
            (N, *spatial).
        **front: the front door's ``validate`` (check that valid positions hold
            probabilities, default True) and ``activation`` (``"softmax"``, default, or
            ``"sigmoid"`` for binary outputs).

    Example:
        >>> import torch
        >>> from pseudosel.functional import precision_target_init, precision_target_select
        >>> state = precision_target_init(2, fallback_tau=0.8)
        >>> sel = precision_target_select(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), state)
        >>> sel.mask, sel.score
        (tensor([ True, False]), tensor([0.9000, 0.7000]))
    """
    probs, valid, _ = per_class_inputs(
        probs, valid, state.thresh.shape[0], "precision_target_select", **front
    )
    confidence, labels = confidence_and_labels(probs)
    mask = valid & (confidence >= state.thresh.to(confidence.dtype)[labels])
    return hard_selection(labels, mask, confidence, valid)
