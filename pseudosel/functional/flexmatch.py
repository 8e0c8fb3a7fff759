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

State: ``counts`` (K + 1,) long — σ(0..K-1) and, last, the unused count; ``classwise_acc``
(K,) — β as last computed; and in the per-sample form ``store`` (num_unlabeled,) long,
-1 = no pseudo-label yet. Counts change by O(batch) deltas per step and always equal a
full recount of the store.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pseudosel.activation import class_probs
from pseudosel.distributed import ProcessGroup, all_gather_cat, all_reduce_sum
from pseudosel.functional.threshold import class_threshold_selection
from pseudosel.selection import Selection

__all__ = [
    "MAPPINGS",
    "flexmatch_classwise_acc",
    "flexmatch_record_classes",
    "flexmatch_record_samples",
    "flexmatch_select",
    "flexmatch_thresholds",
]

MAPPINGS = ("convex", "linear", "concave")


@torch.no_grad()
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


@torch.no_grad()
def flexmatch_select(
    probs: Tensor,
    classwise_acc: Tensor,
    valid: Tensor,
    *,
    tau: float,
    mapping: str,
    activation: str = "softmax",
) -> Selection:
    """mask = max p >= T(argmax p); score = max p - T(argmax p).

    Args:
        probs: (N, K, *spatial); classwise_acc: (K,); valid: bool (N, *spatial).
        activation: ``"softmax"`` (default) or ``"sigmoid"`` for a binary (N, 1, *spatial)
            sigmoid output, read as (1 − p, p) (:func:`class_probs`); multi-label input
            (N, L > 1) is refused.

    Example:
        >>> import torch
        >>> from pseudosel.functional import flexmatch_select
        >>> probs = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
        >>> sel = flexmatch_select(probs, torch.tensor([1.0, 0.0]), torch.ones(2, dtype=torch.bool),
        ...                        tau=0.95, mapping="convex")
        >>> sel.mask
        tensor([False,  True])
    """
    probs = class_probs(probs, activation, selector="flexmatch_select")
    thresholds = flexmatch_thresholds(classwise_acc, tau=tau, mapping=mapping)
    return class_threshold_selection(probs, thresholds, valid)


@torch.no_grad()
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


@torch.no_grad()
def flexmatch_record_samples(
    store: Tensor,
    counts: Tensor,
    labels: Tensor,
    confident: Tensor,
    index: Tensor,
    *,
    group: ProcessGroup | None = None,
    inplace: bool = False,
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
        >>> from pseudosel.functional import flexmatch_record_samples
        >>> store, counts = torch.full((4,), -1), torch.tensor([0, 0, 4])
        >>> flexmatch_record_samples(store, counts, torch.tensor([1, 0]),
        ...                          torch.tensor([True, True]), torch.tensor([3, 0]))
        (tensor([ 0, -1, -1,  1]), tensor([1, 1, 2]))
    """
    index = all_gather_cat(index, group)
    labels = all_gather_cat(labels, group)
    confident = all_gather_cat(confident, group)
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


@torch.no_grad()
def flexmatch_record_classes(
    counts: Tensor,
    labels: Tensor,
    confident: Tensor,
    valid: Tensor,
    *,
    group: ProcessGroup | None = None,
    inplace: bool = False,
) -> Tensor:
    """Class-wise form: add confident positions per class and unconfident valid ones.

    Args:
        counts: (K + 1,) long; labels: (N, *spatial) long; confident, valid: bool, same shape.

    Returns:
        the updated counts (the same tensor when ``inplace``).

    Example:
        >>> import torch
        >>> from pseudosel.functional import flexmatch_record_classes
        >>> labels = torch.tensor([[0, 1], [1, 1]])
        >>> confident = torch.tensor([[True, False], [True, True]])
        >>> flexmatch_record_classes(torch.zeros(3, dtype=torch.long), labels, confident,
        ...                          torch.ones(2, 2, dtype=torch.bool))
        tensor([1, 2, 1])
    """
    num_classes = counts.shape[0] - 1
    slot = torch.where(confident, labels, num_classes).flatten()
    delta = torch.zeros_like(counts).index_add_(0, slot, valid.flatten().to(counts.dtype))
    all_reduce_sum(delta, group)
    return counts.add_(delta) if inplace else counts + delta
