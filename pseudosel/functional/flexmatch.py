"""FlexMatch (Curriculum Pseudo-Labeling): class-wise thresholds from learning effects.

The learning effect of class k, σ(k), is how many unlabeled samples currently carry k as
their stored pseudo-label; a sample's stored label is (re)written whenever its confidence
passes the FIXED τ (not its class threshold — the published code does this). With
β(k) = σ(k) / max(max_k σ, N_unused) (warm-up) or σ(k) / max_k σ, the class threshold is
T(k) = τ·M(β(k)). β is recomputed only while no single bucket (a class or "unused") holds
every sample, as in USB. Early on β ≈ 0, so thresholds ≈ 0 and nearly everything passes —
the published behaviour. A step selects with the current thresholds, then records.

For dense input (no sample index per pixel) the class-wise form counts confident positions
per class cumulatively, and unconfident valid positions as "unused".

State (:class:`FlexMatchState`): ``classwise_acc`` (K,) — β as last computed; ``counts``
(K + 1,) long — σ(0..K-1) and, last, the unused count; and in the per-sample form
``selected_label`` (num_unlabeled,) long, -1 = no pseudo-label yet (empty in the class-wise
form). Counts change by O(batch) deltas per step and always equal a full recount of the
store.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from pseudosel._deprecation import keyword_valid, renamed_keywords, warn_once
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_gather_cat, all_reduce_sum
from pseudosel.features import confidence_and_labels
from pseudosel.functional.threshold import class_threshold_selection
from pseudosel.inputs import per_class_inputs
from pseudosel.selection import Selection
from pseudosel.validation import check_choice, check_real

__all__ = [
    "MAPPINGS",
    "FlexMatchState",
    "flexmatch_classwise_acc",
    "flexmatch_init",
    "flexmatch_record_classes",
    "flexmatch_record_samples",
    "flexmatch_select",
    "flexmatch_thresholds",
    "flexmatch_update",
]

MAPPINGS = ("convex", "linear", "concave")


class FlexMatchState(NamedTuple):
    """classwise_acc: (K,) β; counts: (K + 1,) long σ and the unused count;
    selected_label: (num_unlabeled,) long store, -1 = unused — (0,) in the class-wise form."""

    classwise_acc: Tensor
    counts: Tensor
    selected_label: Tensor


def flexmatch_init(
    num_classes: int, num_unlabeled: int | None = None, *, device=None
) -> FlexMatchState:
    """The published initial state: β = 0, every sample unused (per-sample form, with
    ``num_unlabeled``), or no count yet (class-wise form, ``num_unlabeled=None``).

    Example:
        >>> from pseudosel.functional import flexmatch_init
        >>> flexmatch_init(2, 3).counts
        tensor([0, 0, 3])
    """
    counts = torch.zeros(num_classes + 1, dtype=torch.long, device=device)
    if num_unlabeled is not None:
        counts[-1] = num_unlabeled
    size = 0 if num_unlabeled is None else num_unlabeled
    return FlexMatchState(
        torch.zeros(num_classes, device=device),
        counts,
        torch.full((size,), -1, dtype=torch.long, device=device),
    )


@no_grad
def flexmatch_thresholds(
    classwise_acc: Tensor, *, tau: float = 0.95, mapping: str = "convex"
) -> Tensor:
    """Class thresholds T(k) = τ·M(β(k)).

    M is ``"convex"`` x / (2 - x) (default, FlexMatch), ``"linear"`` x, or ``"concave"``
    ln(x + 1) / ln 2 (the two alternatives of the FlexMatch paper).

    Args:
        classwise_acc: (K,) β in [0, 1].

    Returns:
        (K,) thresholds in the dtype of ``classwise_acc``.

    Example:
        >>> import torch
        >>> from pseudosel.functional import flexmatch_thresholds
        >>> flexmatch_thresholds(torch.tensor([0.0, 0.5, 1.0]))
        tensor([0.0000, 0.3167, 0.9500])
    """
    beta = classwise_acc
    if mapping == "convex":
        mapped = beta / (2 - beta)
    elif mapping == "linear":
        mapped = beta
    else:
        mapped = torch.log1p(beta) / math.log(2)
    return tau * mapped


@no_grad
@keyword_valid("flexmatch_select", 2)
def flexmatch_select(
    probs: Tensor,
    state: FlexMatchState,
    *,
    valid: Tensor | None = None,
    tau: float = 0.95,
    mapping: str = "convex",
    **front: Any,
) -> Selection:
    """mask = max p >= T(argmax p); score = max p - T(argmax p).

    Args:
        probs: (N, K, *spatial); state: the current :class:`FlexMatchState` (its β is read);
            valid: optional bool (N, *spatial).
        tau: the base threshold τ. Default 0.95.
        mapping: ``"convex"`` (default), ``"linear"`` or ``"concave"``
            (:func:`flexmatch_thresholds`).

    Example:
        >>> import torch
        >>> from pseudosel.functional import flexmatch_init, flexmatch_select
        >>> state = flexmatch_init(2)._replace(classwise_acc=torch.tensor([1.0, 0.0]))
        >>> flexmatch_select(torch.tensor([[0.5, 0.5], [0.2, 0.8]]), state).mask
        tensor([False,  True])
    """
    if isinstance(state, Tensor):  # the old signature passed β itself
        warn_once(
            "flexmatch_select:classwise_acc",
            "flexmatch_select(probs, classwise_acc, ...) is deprecated and will be removed; "
            "pass the FlexMatchState (flexmatch_init, flexmatch_update)",
        )
        state = FlexMatchState(state, state.new_zeros(0, dtype=torch.long), state.new_zeros(0))
    probs, valid, _ = per_class_inputs(
        probs, valid, state.classwise_acc.shape[0], "flexmatch_select", **front
    )
    thresholds = flexmatch_thresholds(state.classwise_acc, tau=tau, mapping=mapping)
    return class_threshold_selection(probs, thresholds, valid)


@no_grad
@renamed_keywords("flexmatch_update", group="process_group")
def flexmatch_update(
    probs: Tensor,
    state: FlexMatchState,
    *,
    valid: Tensor | None = None,
    index: Tensor | None = None,
    tau: float = 0.95,
    warmup: bool = True,
    process_group: ProcessGroup | None = None,
    inplace: bool = False,
    **front: Any,
) -> FlexMatchState:
    """Record a batch: the samples (or positions) whose confidence passes the FIXED τ
    store their arg-max, and β is recomputed from the counts.

    Per-sample form (``state.selected_label`` holds the unlabelled set; ``index`` required):
    sample ``index[i]`` stores its label, the counts move with it (:func:`flexmatch_init`).
    Class-wise form (empty store, ``index=None``): confident valid positions count for their
    class, the other valid positions as unused. Under torch.distributed every rank applies
    every rank's writes (per-sample: gathered in rank order, equal batch sizes) or sums
    (class-wise), so all ranks hold the same state.

    Args:
        probs: (N, K, *spatial) probabilities ((N, K) in the per-sample form).
        state: the current :class:`FlexMatchState`.
        valid: optional bool (N, *spatial); ignored positions record nothing.
        index: (N,) long positions of the samples in the unlabelled set (per-sample form).
        tau: the fixed τ a confidence must pass to be recorded. Default 0.95.
        warmup: FlexMatch's threshold warm-up, β = σ / max(max σ, unused). Default True.
        process_group: process group of the collectives (default group, if initialised).
        inplace: write into ``state``'s tensors (O(batch) per step); else into copies.
        **front: the front door's ``validate`` (check that valid positions hold
            probabilities, default True) and ``activation`` (``"softmax"``, default, or
            ``"sigmoid"`` for binary outputs).

    Returns:
        The new :class:`FlexMatchState`.

    Example:
        >>> import torch
        >>> from pseudosel.functional import flexmatch_init, flexmatch_update
        >>> state = flexmatch_update(torch.tensor([[0.97, 0.03], [0.6, 0.4]]),
        ...                          flexmatch_init(2, 4), index=torch.tensor([0, 1]))
        >>> state.selected_label, state.counts
        (tensor([ 0, -1, -1, -1]), tensor([1, 0, 3]))
    """
    probs, valid, _ = per_class_inputs(
        probs, valid, state.classwise_acc.shape[0], "flexmatch_update", **front
    )
    confidence, labels = confidence_and_labels(probs)
    confident = valid & (confidence >= tau)
    store, counts = state.selected_label, state.counts
    if index is None:
        counts = _record_classes(counts, labels, confident, valid, process_group, inplace)
    else:
        store, counts = _record_samples(
            store, counts, labels, confident, index, process_group, inplace
        )
    classwise_acc = flexmatch_classwise_acc(counts, state.classwise_acc, warmup=warmup)
    if inplace:
        state.classwise_acc.copy_(classwise_acc)
        classwise_acc = state.classwise_acc
    return FlexMatchState(classwise_acc, counts, store)


def check_flexmatch_options(tau: object, mapping: object) -> tuple[float, str]:
    """``tau`` in [0, 1] and ``mapping`` one of :data:`MAPPINGS`."""
    return check_real("tau", tau, low=0.0, high=1.0), check_choice("mapping", mapping, MAPPINGS)


@no_grad
def flexmatch_classwise_acc(counts: Tensor, previous: Tensor, *, warmup: bool = True) -> Tensor:
    """β from the learning-effect counts; unchanged while one bucket holds everything.

    Args:
        counts: (K + 1,) — per-class counts, then the unused count.
        previous: (K,) the current β, kept when the counts give no information.
        warmup: divide by max(max σ, unused) (True, default) or by max σ.

    Returns:
        (K,) new β in the dtype of ``previous``.

    Example:
        >>> import torch
        >>> from pseudosel.functional import flexmatch_classwise_acc
        >>> flexmatch_classwise_acc(torch.tensor([2, 1, 4]), torch.zeros(2))  # 4 unused
        tensor([0.5000, 0.2500])
    """
    counts = counts.to(previous.dtype)
    per_class = counts[:-1]
    largest = counts.max() if warmup else per_class.max()
    informative = counts.max() < counts.sum()
    beta = per_class / largest.clamp_min(1)
    return torch.where(informative, beta, previous)


def _record_samples(
    store: Tensor,
    counts: Tensor,
    labels: Tensor,
    confident: Tensor,
    index: Tensor,
    process_group: ProcessGroup | None,
    inplace: bool,
) -> tuple[Tensor, Tensor]:
    """Write the labels of confident samples into the per-sample store; update the counts.

    Under torch.distributed every rank's (index, label, confident) triples are gathered in
    rank order (O(batch) integers, no predictions) and applied identically everywhere, so
    all ranks hold the store one process would hold on the concatenated batch. Per-rank
    batch sizes must then be equal.

    When an index occurs more than once, its last confident occurrence wins (as a sequential
    write would). Cost O(B log B) for a batch of B; no host synchronisation.

    Args:
        store: (num_unlabeled,) long, -1 = unused.
        counts: (K + 1,) long.
        labels: (B,) long arg-max labels; confident: (B,) bool (passed τ and valid);
        index: (B,) long positions in the unlabeled set.
        inplace: update ``store`` and ``counts`` in place (O(batch)); else work on copies.

    Returns:
        ``(store, counts)``.

    Example:
        >>> import torch
        >>> store, counts = torch.full((4,), -1), torch.tensor([0, 0, 4])
        >>> _record_samples(store, counts, torch.tensor([1, 0]), torch.tensor([True, True]),
        ...                 torch.tensor([3, 0]), None, False)
        (tensor([ 0, -1, -1,  1]), tensor([1, 1, 2]))
    """
    index = all_gather_cat(index, process_group)
    labels = all_gather_cat(labels, process_group)
    confident = all_gather_cat(confident, process_group)
    if not inplace:
        store, counts = store.clone(), counts.clone()
    batch = index.shape[0]
    num_classes = counts.shape[0] - 1
    # Sort by (index, confident, position): each index's run ends with the write that wins.
    position = torch.arange(batch, device=index.device)
    order = torch.argsort(index * (2 * batch) + confident.long() * batch + position)
    idx, lab, conf = index[order], labels[order], confident[order]
    differs = idx[1:] != idx[:-1]
    first = torch.cat((torch.ones_like(conf[:1]), differs))
    last = torch.cat((differs, torch.ones_like(conf[:1])))
    run = torch.cumsum(first.long(), 0) - 1
    old = store[idx]
    # The run's final value sits on its last element; spread it over the run (amax, since
    # every other element offers -2 < any label or -1), so that all duplicate writes agree.
    offer = torch.where(last, torch.where(conf, lab, old), -2)
    final = torch.full_like(offer, -2).scatter_reduce_(0, run, offer, "amax")[run]
    store.scatter_(0, idx, final)
    # Count each index once, on the last element of its run: move it from old to new bucket.
    once = last.to(counts.dtype)
    counts.index_add_(0, torch.where(old < 0, num_classes, old), -once)
    counts.index_add_(0, torch.where(final < 0, num_classes, final), once)
    return store, counts


def _record_classes(
    counts: Tensor,
    labels: Tensor,
    confident: Tensor,
    valid: Tensor,
    process_group: ProcessGroup | None,
    inplace: bool,
) -> Tensor:
    """Class-wise form: add confident positions per class and unconfident valid ones.

    Args:
        counts: (K + 1,) long; labels: (N, *spatial) long; confident, valid: bool, same shape.

    Returns:
        the updated counts (the same tensor when ``inplace``).

    Example:
        >>> import torch
        >>> labels = torch.tensor([[0, 1], [1, 1]])
        >>> confident = torch.tensor([[True, False], [True, True]])
        >>> _record_classes(torch.zeros(3, dtype=torch.long), labels, confident,
        ...                 torch.ones(2, 2, dtype=torch.bool), None, False)
        tensor([1, 2, 1])
    """
    num_classes = counts.shape[0] - 1
    slot = torch.where(confident, labels, num_classes).flatten()
    delta = torch.zeros_like(counts).index_add_(0, slot, valid.flatten().to(counts.dtype))
    all_reduce_sum(delta, process_group)
    return counts.add_(delta) if inplace else counts + delta


def flexmatch_record_samples(*args: Tensor, group: ProcessGroup | None = None, inplace=False):
    """Deprecated (warns once): the per-sample record is part of :func:`flexmatch_update`;
    arguments ``(store, counts, labels, confident, index)`` as before."""
    warn_once(
        "flexmatch_record_samples",
        "flexmatch_record_samples is deprecated and will be removed; use flexmatch_update",
    )
    return _record_samples(*args, group, inplace)


def flexmatch_record_classes(*args: Tensor, group: ProcessGroup | None = None, inplace=False):
    """Deprecated (warns once): the class-wise record is part of :func:`flexmatch_update`;
    arguments ``(counts, labels, confident, valid)`` as before."""
    warn_once(
        "flexmatch_record_classes",
        "flexmatch_record_classes is deprecated and will be removed; use flexmatch_update",
    )
    return _record_classes(*args, group, inplace)
