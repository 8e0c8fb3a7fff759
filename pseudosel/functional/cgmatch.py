"""CGMatch: confidence plus the count gap of each sample's prediction history.

Cheng et al., "CGMatch: A Different Perspective of Semi-supervised Learning", CVPR 2025
(code: github.com/OverfitFlow/CGMatch). Every unlabelled sample keeps the history of its
pseudo-labels. Its *count gap* is how many times its most frequent pseudo-label was predicted
minus how many times the second most frequent one was (the runner-up counts 0 when only
one class was ever predicted). With ĉ = max p and two running
means — μ_t of ĉ (global, or per pseudo-label with ``per_class``) and g_t of the count gap —
a batch is split in three:

- easy: ĉ ≥ μ_t — trained with cross-entropy on the strong view (the :class:`Selection`'s
  mask and weight);
- ambiguous: ĉ < μ_t and gap ≥ g_t — trained with the generalized cross-entropy
  (:func:`pseudosel.generalized_cross_entropy`) on both views, weight λ_h·progress²
  (:func:`cgmatch_ambiguous_weight`); :func:`ambiguous_positions`;
- hard: the rest, dropped.

One step, in the published order (:func:`cgmatch_update`, then :func:`cgmatch_select`):
record the batch's arg-max labels in the per-sample counts; read the batch's count gaps
(after recording); μ_t ← m·μ_t + (1 − m)·mean ĉ; g_t ← m·g_t + (1 − m)·mean gap, except on
the first step, where g_t is the mean gap of every sample recorded so far (the authors
compute it over the whole unlabelled set, filled by their warm-up passes:
:func:`cgmatch_record`); then the masks with the new μ_t and g_t. Initially μ = 1/K.

State (:class:`CGMatchState`): the counts (N_u, K), one row per unlabelled sample — not the
authors' N_u × 1000 queue. How the two differ (docs/beyond.md):

- the authors' queue starts as zeros, so until a sample has 1000 predictions its empty
  slots count as predictions of class 0 (a row never visited has gap 1000). Here only real
  predictions count. In their schedule the 2048 warm-up passes fill every queue before the
  first training step, so the artefact never reaches their masks;
- their queue is a sliding window, the last 1000 predictions of each sample. The default
  here (``window=None``) counts every prediction since the start; ``window=W`` decays a
  sample's counts by (1 − 1/W) at each of its predictions before adding the new one — an
  exponential window of mean age W whose total tends to W, like a full queue of W, but not
  the same numbers as a sliding window (which needs the whole N_u × W history);
- a sample that appears twice in one batch is recorded twice here (the authors' scatter
  keeps one of the two writes);
- the count-gap mean g_t uses the gaps of the global batch (all ranks); the authors' hook
  averages each rank's own batch, so its g_t differs between ranks. μ_t is global in both.

Ground truth is never read (the authors read it for their logs only).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_gather_cat, all_reduce_sum
from pseudosel.features import confidence_and_labels
from pseudosel.inputs import per_class_inputs
from pseudosel.selection import Selection
from pseudosel.validation import check_real, compute_dtype

__all__ = [
    "CGMatchState",
    "ambiguous_positions",
    "cgmatch_ambiguous_weight",
    "cgmatch_init",
    "cgmatch_record",
    "cgmatch_select",
    "cgmatch_update",
    "count_gap",
]


class CGMatchState(NamedTuple):
    """CGMatch's state.

    Attributes:
        counts: (N_u, K) float — how often each sample was predicted as each class
            (exponentially decayed with ``window``).
        mu: () or (K,) — μ_t, the running mean of the max confidence (1/K at start).
        gap_mu: () — g_t, the running mean of the count gap (0 until the first update).
        totals: (2,) float64 — Σ count gap over the samples recorded so far, and their
            number (for the first g_t). (2,) rather than two 0-dim float64 tensors: the
            CPU inductor of torch 2.13 drops a compiled ``copy_`` into a 0-dim float64
            buffer.
        started: () bool — g_t has been initialised (by the first update after a record).
    """

    counts: Tensor
    mu: Tensor
    gap_mu: Tensor
    totals: Tensor
    started: Tensor


def cgmatch_init(
    num_classes: int,
    num_unlabeled: int,
    *,
    per_class: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> CGMatchState:
    """The initial state: no prediction recorded, μ = 1/K (per class: (K,) of 1/K), g = 0.

    Args:
        num_classes: K >= 2. num_unlabeled: N_u, the size of the unlabelled set.
        per_class: keep μ per pseudo-label. Default False (the authors' default).
        dtype: of the counts and μ (float32 default: counts exact up to 2^24 predictions
            per sample). device: where the state lives.

    Example:
        >>> from pseudosel.functional import cgmatch_init
        >>> state = cgmatch_init(4, 100)
        >>> state.counts.shape, state.mu
        (torch.Size([100, 4]), tensor(0.2500))
    """
    shape = (num_classes,) if per_class else ()
    wide = torch.float64
    return CGMatchState(
        torch.zeros(num_unlabeled, num_classes, dtype=dtype, device=device),
        torch.full(shape, 1.0 / num_classes, dtype=dtype, device=device),
        torch.zeros((), dtype=dtype, device=device),
        torch.zeros(2, dtype=wide, device=device),
        torch.zeros((), dtype=torch.bool, device=device),
    )


def count_gap(counts: Tensor) -> Tensor:
    """The count gap of each row: its largest count minus its second largest.

    Equals ``Counter(history).most_common`` count minus the runner-up's (0 for a runner-up
    never predicted), as the authors' ``compute_count_gap`` — for real predictions only.

    Args:
        counts: (..., K) prediction counts (K >= 1; K = 1 returns the counts).

    Returns:
        (...) tensor in the dtype of ``counts``.

    Example:
        >>> import torch
        >>> from pseudosel.functional import count_gap
        >>> count_gap(torch.tensor([[5.0, 2.0, 1.0], [0.0, 3.0, 3.0], [0.0, 0.0, 4.0]]))
        tensor([3., 0., 4.])
    """
    if counts.shape[-1] == 1:
        return counts[..., 0]
    top = counts.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def ambiguous_positions(selection: Selection, gap_threshold: Tensor | float) -> Tensor:
    """CGMatch's ambiguous set: valid, not selected (ĉ < μ_t) and count gap ≥ g_t.

    Reads the count gap from ``selection.score`` (as :func:`cgmatch_select` sets it).

    Args:
        selection: from :func:`cgmatch_select` or :class:`~pseudosel.CGMatchSelector`.
        gap_threshold: g_t, 0-dim tensor or float (``state.gap_mu``).

    Returns:
        bool tensor of the selection's position shape.

    Example:
        >>> import torch
        >>> from pseudosel import Selection
        >>> from pseudosel.functional import ambiguous_positions
        >>> sel = Selection(torch.tensor([0, 1, 1]), torch.tensor([1.0, 0.0, 0.0]),
        ...                 torch.tensor([True, False, False]), torch.tensor([4.0, 3.0, 1.0]),
        ...                 torch.tensor([True, True, True]))
        >>> ambiguous_positions(sel, 2.0)
        tensor([False,  True, False])
    """
    return selection.valid & ~selection.mask & (selection.score >= gap_threshold)


def cgmatch_ambiguous_weight(
    step: int, total_steps: int, *, warmup_steps: int = 0, lambda_h: float = 1.0
) -> float:
    """The ambiguous loss weight λ_h·progress², progress = (step − warmup) / (total − warmup).

    The authors' ``nonlinear_weight_tracker`` (λ_h = 1.0 in every published config). A
    Python float, computed on the host; 0 before ``warmup_steps``, λ_h at ``total_steps``.

    Args:
        step: the current step; total_steps: the number of training steps (> warmup_steps);
        warmup_steps: supervised-only steps before (the authors: 2048); lambda_h: λ_h.

    Example:
        >>> from pseudosel.functional import cgmatch_ambiguous_weight
        >>> cgmatch_ambiguous_weight(60, 110, warmup_steps=10)
        0.25
    """
    for name, value in (
        ("step", step),
        ("total_steps", total_steps),
        ("warmup_steps", warmup_steps),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    lambda_h = check_real("lambda_h", lambda_h, low=0.0)
    if total_steps <= warmup_steps:
        raise ValueError(
            f"total_steps must be > warmup_steps, got total_steps={total_steps}, "
            f"warmup_steps={warmup_steps}"
        )
    progress = min(max((step - warmup_steps) / (total_steps - warmup_steps), 0.0), 1.0)
    return lambda_h * progress**2


def check_index(index: object, num_unlabeled: int, rows: int, device: torch.device, *,
                validate: bool = True, function: str = "cgmatch") -> Tensor:  # fmt: skip
    """``index``: long (rows,) on ``device``, values in [0, num_unlabeled) (checked when
    ``validate``: ValueError on a CPU, a device-side assertion elsewhere)."""
    if not isinstance(index, Tensor) or index.dtype != torch.long:
        got = index.dtype if isinstance(index, Tensor) else type(index).__name__
        raise TypeError(
            f"{function}: index (the batch's positions in the unlabelled set) must be a "
            f"torch.long tensor, got {got}"
        )
    if tuple(index.shape) != (rows,) or index.device != device:
        raise ValueError(
            f"{function}: index must have shape ({rows},) on {device} (one position per "
            f"sample of probs), got {tuple(index.shape)} on {index.device}"
        )
    if validate:
        in_range = ((index >= 0) & (index < num_unlabeled)).all()
        # reading the verdict would synchronise a GPU and cannot be traced: assert on device
        if torch.compiler.is_compiling() or index.device.type != "cpu":
            torch._assert_async(in_range, "index out of range [0, num_unlabeled)")
        elif rows and not bool(in_range):
            raise ValueError(
                f"{function}: index must lie in [0, {num_unlabeled}) (num_unlabeled), got "
                f"values from {int(index.min())} to {int(index.max())}"
            )
    return index


def _inputs(
    probs: Tensor, index: object, state: CGMatchState, valid: Tensor | None, function: str,
    front: dict[str, Any],
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    num_unlabeled, num_classes = state.counts.shape
    probs, valid, _ = per_class_inputs(probs, valid, num_classes, function, **front)
    if probs.dim() != 2:
        raise ValueError(
            f"{function} takes classification outputs (N, K): CGMatch counts predictions "
            f"per sample; got probs of shape {tuple(probs.shape)}"
        )
    validate = front.get("validate", True)
    index = check_index(
        index, num_unlabeled, probs.shape[0], probs.device, validate=validate, function=function
    )
    return probs, index, valid


def _check_window(window: object) -> float:
    """The per-prediction decay factor 1 − 1/window (1.0 for ``window=None``)."""
    if window is None:
        return 1.0
    return 1.0 - 1.0 / check_real("window", window, low=1.0)


def _record(
    state: CGMatchState,
    labels: Tensor,
    index: Tensor,
    valid: Tensor,
    decay: float,
    process_group: ProcessGroup | None,
    inplace: bool = False,
) -> tuple[CGMatchState, Tensor, Tensor]:
    """Add the (gathered) batch's labels to the counts; returns the new state and, for every
    occurrence of the global batch, its count gap after recording and its ``valid``."""
    index = all_gather_cat(index, process_group)
    labels = all_gather_cat(labels, process_group)
    valid = all_gather_cat(valid, process_group)
    counts = state.counts
    batch = index.shape[0]
    position = torch.arange(batch, device=index.device)
    same = index[:, None] == index[None, :]  # (B, B): occurrences of one sample
    hits = same & valid[None, :]  # the valid occurrences of row i's sample
    later = (hits & (position[None, :] > position[:, None])).sum(1)  # after occurrence i
    first = ~(same & (position[None, :] < position[:, None])).any(1)
    old = counts[index]
    # sequential semantics for a sample seen r times in the batch: its counts decay r times,
    # and an occurrence followed by `later` others of its sample is added decayed that often
    decayed = old * torch.pow(torch.full_like(old[:, :1], decay), hits.sum(1, keepdim=True))
    added = torch.where(valid, torch.pow(torch.full_like(old[:, 0], decay), later), 0.0)
    # the batch's new rows, built in a (B, K) scratch: every occurrence adds to the row of its
    # sample's first occurrence, which all its occurrences then read
    # (an empty batch has no rows to reduce: argmax refuses a (0, 0) input)
    first_position = same.to(torch.float32).argmax(1) if batch else position
    rows = decayed.index_put((first_position, labels), added.to(decayed.dtype), accumulate=True)
    new = rows[first_position]
    # one write of the touched rows (duplicates write equal rows); in place for a module's
    # buffer, so a step does not copy the whole (N_u, K) table
    counts = counts.index_copy_(0, index, new) if inplace else counts.index_copy(0, index, new)
    gap_old, gap_new = count_gap(old), count_gap(new)
    wide = state.totals.dtype
    newly_seen = (old.sum(1) == 0) & (new.sum(1) > 0)
    # each sample once (its first occurrence): its change of gap, and whether it is new
    delta = torch.stack(((gap_new - gap_old).to(wide), newly_seen.to(wide)))
    totals = state.totals + (delta * first.to(wide)).sum(1)
    return state._replace(counts=counts, totals=totals), gap_new, valid


@no_grad
def cgmatch_record(
    probs: Tensor,
    index: Tensor,
    state: CGMatchState,
    *,
    valid: Tensor | None = None,
    window: float | None = None,
    process_group: ProcessGroup | None = None,
    inplace: bool = False,
    **front: Any,
) -> CGMatchState:
    """Record the batch's arg-max labels in the counts, without moving μ_t or g_t.

    The authors' warm-up passes (``warm_up_evaluate``: every unlabelled sample's prediction
    goes into its queue after each supervised warm-up step) use this;
    :func:`cgmatch_update` records too. Under torch.distributed every rank records every
    rank's (index, label, valid) triples (gathered in rank order: equal batch sizes), so
    all ranks hold the same counts.

    Args:
        probs: (N, K) probabilities; index: (N,) long positions in the unlabelled set;
            state: the current :class:`CGMatchState`; valid: optional bool (N,).
        window: None (default: count every prediction) or W >= 1: a sample's counts decay
            by (1 − 1/W) at each of its predictions (module docstring).
        process_group: of the gathers (default group, if initialised).
        inplace: write the batch's rows into ``state.counts`` itself (a module's buffer) instead
            of a copy of the (N_u, K) table. Default False.
        **front: the front door's ``validate`` (default True: probabilities and index
            range are checked) and ``activation``.

    Returns:
        The new :class:`CGMatchState` (μ, g and ``started`` unchanged).

    Example:
        >>> import torch
        >>> from pseudosel.functional import cgmatch_init, cgmatch_record
        >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2]])
        >>> state = cgmatch_record(probs, torch.tensor([0, 2, 0]), cgmatch_init(2, 3))
        >>> state.counts
        tensor([[2., 0.],
                [0., 0.],
                [0., 1.]])
    """
    probs, index, valid = _inputs(probs, index, state, valid, "cgmatch_record", front)
    _, labels = confidence_and_labels(probs)
    window = _check_window(window)
    return _record(state, labels, index, valid, window, process_group, inplace is True)[0]


@no_grad
def cgmatch_update(
    probs: Tensor,
    index: Tensor,
    state: CGMatchState,
    *,
    valid: Tensor | None = None,
    momentum: float = 0.999,
    window: float | None = None,
    process_group: ProcessGroup | None = None,
    inplace: bool = False,
    **front: Any,
) -> CGMatchState:
    """One training step's statistics: record the batch, then move μ_t and g_t.

    μ_t ← m·μ_t + (1 − m)·mean ĉ over the valid positions (per class: over the positions
    of each pseudo-label; as in the authors' hook, a class with fewer than two positions in
    the batch contributes 0). g_t ← m·g_t + (1 − m)·mean gap of the batch's valid samples
    (their gaps after recording), except on the first update: g_t := Σ gap / #samples over
    every sample recorded so far. A batch with no valid position leaves μ_t and g_t as they
    are (the authors' mean would be NaN). Under torch.distributed the sums run over all
    ranks, so every rank holds the state of one process fed the concatenated batch.

    Args:
        probs: (N, K) probabilities (after distribution alignment, as the authors);
            index: (N,) long positions in the unlabelled set; state: the current
            :class:`CGMatchState` (``per_class`` from the shape of its μ);
            valid: optional bool (N,).
        momentum: m, the weight of the OLD value. Default 0.999 (the authors' ``ema_p``).
        window: None (default) or W (:func:`cgmatch_record`).
        process_group: of the collectives (default group, if initialised).
        inplace: as in :func:`cgmatch_record`. Default False.
        **front: the front door's ``validate`` and ``activation``.

    Returns:
        The new :class:`CGMatchState`.

    Example:
        >>> import torch
        >>> from pseudosel.functional import cgmatch_init, cgmatch_update
        >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
        >>> state = cgmatch_update(probs, torch.tensor([0, 1]), cgmatch_init(2, 4), momentum=0.5)
        >>> state.mu, state.gap_mu
        (tensor(0.6500), tensor(1.))
    """
    probs, index, valid = _inputs(probs, index, state, valid, "cgmatch_update", front)
    confidence, labels = confidence_and_labels(probs)
    state, gaps, valid_all = _record(
        state, labels, index, valid, _check_window(window), process_group, inplace is True
    )
    m = check_real("momentum", momentum, low=0.0, high=1.0)
    per_class = state.mu.dim() == 1
    work = compute_dtype(probs.dtype)
    wide = state.totals.dtype
    if per_class:
        slot = labels
        stats = torch.zeros(2, state.mu.shape[0], dtype=wide, device=probs.device)
        stats[0].index_add_(0, slot, valid.to(wide))
        stats[1].index_add_(0, slot, torch.where(valid, confidence.to(work), 0.0).to(wide))
    else:
        stats = torch.stack(
            (valid.to(wide).sum(), torch.where(valid, confidence.to(work), 0.0).to(wide).sum())
        ).unsqueeze(1)
    all_reduce_sum(stats, process_group)
    count, total = stats.unbind(0)
    batch_mu = total / count.clamp_min(1)
    dtype = state.mu.dtype
    if per_class:
        # the authors' hook: a class with fewer than two positions in the batch contributes 0;
        # a batch without any valid position leaves μ as it is (as the global μ)
        batch_mu = torch.where(count > 1, batch_mu, 0.0)
        moved = state.mu * m + (1 - m) * batch_mu.to(dtype)
        mu = torch.where(count.sum() > 0, moved, state.mu)
    else:
        moved = state.mu * m + (1 - m) * batch_mu.to(dtype).reshape(())
        mu = torch.where(count.reshape(()) > 0, moved, state.mu)
    # the count-gap mean: over the global batch (gathered occurrences), wide
    gap_count = valid_all.to(wide).sum()
    batch_gap = torch.where(valid_all, gaps.to(wide), 0.0).sum() / gap_count.clamp_min(1)
    ema = state.gap_mu * m + (1 - m) * batch_gap.to(dtype)
    ema = torch.where(gap_count > 0, ema, state.gap_mu)
    gap_sum, seen = state.totals.unbind(0)
    first = (gap_sum / seen.clamp_min(1)).to(dtype)
    ready = seen > 0
    gap_mu = torch.where(state.started, ema, torch.where(ready, first, state.gap_mu))
    return state._replace(mu=mu, gap_mu=gap_mu, started=state.started | ready)


@no_grad
def cgmatch_select(
    probs: Tensor,
    index: Tensor,
    state: CGMatchState,
    *,
    valid: Tensor | None = None,
    clamp: tuple[float, float] | None = None,
    **front: Any,
) -> Selection:
    """The easy set, mask = ĉ ≥ μ_t (μ_t of the pseudo-label with ``per_class``); weight =
    mask as 0/1; labels = arg-max; score = the sample's count gap (float, read from
    ``state.counts``), so that :func:`ambiguous_positions` finds the ambiguous set.

    Args:
        probs: (N, K) probabilities; index: (N,) long positions in the unlabelled set;
            state: the current :class:`CGMatchState` (after :func:`cgmatch_update` in a
            training step); valid: optional bool (N,).
        clamp: None (default) or (low, high): μ_t clamped to [low, high] before the
            comparison — the authors do so with (0.9, 0.95) on SVHN only.
        **front: the front door's ``validate`` and ``activation``.

    Returns:
        :class:`~pseudosel.Selection`; score 0 at ignored positions.

    Example:
        >>> import torch
        >>> from pseudosel.functional import cgmatch_init, cgmatch_select, cgmatch_update
        >>> probs, index = torch.tensor([[0.9, 0.1], [0.4, 0.6]]), torch.tensor([0, 1])
        >>> state = cgmatch_update(probs, index, cgmatch_init(2, 2), momentum=0.0)
        >>> sel = cgmatch_select(probs, index, state)
        >>> sel.mask, sel.score
        (tensor([ True, False]), tensor([1., 1.]))
    """
    probs, index, valid = _inputs(probs, index, state, valid, "cgmatch_select", front)
    confidence, labels = confidence_and_labels(probs)
    mu = state.mu.to(confidence.dtype)
    if mu.dim() == 1:
        mu = mu[labels]
    if clamp is not None:
        low, high = (check_real("clamp", value, low=0.0, high=1.0) for value in clamp)
        mu = mu.clamp(low, high)
    mask = valid & (confidence >= mu)
    gaps = count_gap(state.counts[index]).to(confidence.dtype)
    return Selection(
        labels=labels,
        weight=mask.to(confidence.dtype),
        mask=mask,
        score=torch.where(valid, gaps, 0.0),
        valid=valid,
    )
