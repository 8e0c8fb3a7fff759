"""ShrinkMatch: certain pseudo-labels as FixMatch's, and a shrunk class space for the rest.

Yang et al., "Shrinking Class Space for Enhanced Certainty in Semi-Supervised Learning",
ICCV 2023 (public code: ``CIFAR/shrinkmatch.py`` and ``ImageNet/shrinkmatch.py``,
``shrink_loss``; ``STL10-SVHN/models/shrinkmatch/shrinkmatch_utils.py``,
``consistency_loss_with_shrink``).

A position whose confidence ĉ = max_k p_k reaches τ is *certain* and trains FixMatch's
loss (:func:`shrinkmatch` returns that set). For an *uncertain* one (ĉ < τ), sort its
probabilities descending, p_(0) ≥ p_(1) ≥ … ≥ p_(K−1), and remove the classes ranked
1, …, c − 1 — the ones the top-1 class is confused with — for the smallest c in
{2, …, K − 1} whose shrunk confidence

    sub_conf(c) = p_(0) / (p_(0) + Σ_{j ≥ c} p_(j))

reaches τ (else c = K − 1). The student is trained toward the top-1 class with a
cross-entropy over the kept classes {rank 0} ∪ {ranks ≥ c} only
(:func:`~pseudosel.shrunk_cross_entropy`), weighted by ĉ · [sub_conf(c) ≥ τ] (the paper's
first reweighting principle) and by the running share of certain positions (the second;
``certain_ratio``, an EMA kept by :class:`~pseudosel.ShrinkMatchSelector`).

:func:`shrink_classes` computes the kept classes for every position at once: one sort over
the class dim and a reverse cumulative sum give every sub_conf(c); the first c that
reaches τ is an arg-max — no loop over positions, no host synchronisation.

Ties: the sort is stable, so among equal probabilities the lowest class index ranks first
(the top-1 class is the lowest index among the maxima, as everywhere in pseudosel). The
published code sorts with ``torch.topk``, whose order among equal values is unspecified;
where probabilities tie, the two may keep a different one of the tied classes (the loss
and c are the same whenever the tied classes are all kept or all removed).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pseudosel._grad import no_grad
from pseudosel.functional.threshold import threshold
from pseudosel.inputs import prepare
from pseudosel.selection import Selection
from pseudosel.validation import check_real, compute_dtype

__all__ = ["ShrunkClasses", "shrink_classes", "shrinkmatch"]


class ShrunkClasses(NamedTuple):
    """The shrunk class space of every position (:func:`shrink_classes`), what
    :func:`~pseudosel.shrunk_cross_entropy` trains on.

    Attributes:
        labels: long (N, *spatial) — the top-1 class (lowest index on ties), the target.
        classes: bool (N, K, *spatial) — the kept classes, the top-1 included: for an
            uncertain valid position {rank 0} ∪ {ranks ≥ c}; for a certain valid position
            every class (nothing to shrink; its weight is 0); none at ignored positions.
        weight: float (N, *spatial) — ĉ · [sub_conf(c) ≥ τ] · certain_ratio at uncertain
            valid positions, 0 elsewhere (certain, ignored, K = 2, or no c reaches τ).
            float32 for half-precision input, else the input dtype.
        valid: bool (N, *spatial) — positions that took part (not ignored).
    """

    labels: Tensor
    classes: Tensor
    weight: Tensor
    valid: Tensor


def _check_ratio(certain_ratio: float | Tensor) -> float | Tensor:
    if isinstance(certain_ratio, Tensor):
        if certain_ratio.dim() != 0 or not certain_ratio.is_floating_point():
            raise TypeError(
                "certain_ratio must be a number in [0, 1] or a floating 0-dim tensor, got a "
                f"{certain_ratio.dtype} tensor of shape {tuple(certain_ratio.shape)}"
            )
        return certain_ratio  # a module's running value: not read on the host
    return check_real("certain_ratio", certain_ratio, low=0.0, high=1.0)


@no_grad
def shrink_classes(
    probs: Tensor,
    tau: float = 0.95,
    certain_ratio: float | Tensor = 1.0,
    *,
    valid: Tensor | None = None,
    validate: bool = True,
    activation: str = "softmax",
    multilabel: bool | None = None,
) -> ShrunkClasses:
    r"""ShrinkMatch's shrunk class space: per uncertain position the top-1 class and the
    classes ranked c and below, for the smallest c in {2, …, K − 1} with
    p_(0) / (p_(0) + Σ_{j ≥ c} p_(j)) ≥ τ.

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities of the weak view (detached).
        tau: the confidence threshold τ in [0, 1], for the certain set and for the shrunk
            confidence alike. Default 0.95 (the paper; ImageNet: 0.7).
        certain_ratio: the weight's second factor: a number in [0, 1], or a floating 0-dim
            tensor (e.g. :attr:`ShrinkMatchSelector.certain_ratio`, not read on the host).
            Default 1.0 (no reweighting).
        valid: optional bool (N, \*spatial); False marks ignored positions (their
            probabilities may be anything, NaN included: nothing of them is read).
        validate: check that valid positions hold probabilities (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"``, as in
            :func:`~pseudosel.functional.threshold` (a binary output is K = 2 classes:
            nothing to shrink, every weight is 0).
        multilabel: for ``"sigmoid"``, as in :func:`~pseudosel.functional.threshold`.

    Returns:
        :class:`ShrunkClasses` (``labels``, ``classes``, ``weight``, ``valid``).

    Example:
        >>> import torch
        >>> from pseudosel.functional import shrink_classes
        >>> probs = torch.tensor([[0.97, 0.02, 0.01, 0.0],   # certain: nothing to shrink
        ...                       [0.60, 0.37, 0.02, 0.01]])  # rank 1 (class 1) removed
        >>> shrunk = shrink_classes(probs, tau=0.95)
        >>> shrunk.classes
        tensor([[ True,  True,  True,  True],
                [ True, False,  True,  True]])
        >>> shrunk.weight  # 0.60 / (0.60 + 0.03) = 0.952 >= 0.95: weight = confidence
        tensor([0.0000, 0.6000])
    """
    tau = check_real("tau", tau, low=0.0, high=1.0)
    certain_ratio = _check_ratio(certain_ratio)
    probs, valid, _ = prepare(
        probs, valid, activation=activation, multilabel=multilabel, validate=validate
    )
    dtype = compute_dtype(probs.dtype)
    num_classes = probs.shape[1]
    inside = valid.unsqueeze(1)
    # ignored positions read as zeros: nothing of them (NaN, inf) reaches a result
    p = torch.where(inside, probs.to(dtype), 0.0)
    ranked, order = p.sort(dim=1, descending=True, stable=True)
    top = ranked.narrow(1, 0, 1)  # p_(0), (N, 1, *spatial)
    tail = ranked.flip(1).cumsum(1).flip(1)  # tail[:, c] = Σ_{j ≥ c} p_(j)
    sub_conf = top / (top + tail)
    rank = torch.arange(num_classes, device=p.device).view(1, -1, *([1] * (p.dim() - 2)))
    reaches = (sub_conf >= tau) & (rank >= 2)  # c ranges over 2, …, K − 1
    found = reaches.any(1)
    first = reaches.to(torch.uint8).argmax(1)  # the first c that reaches τ
    cut = torch.where(found, first, num_classes - 1)
    confidence, labels = top.squeeze(1), order.narrow(1, 0, 1).squeeze(1)
    uncertain = valid & (confidence < tau)
    kept = (rank == 0) | (rank >= cut.unsqueeze(1))
    # uncertain: the shrunk set; certain: every class; ignored: none
    kept = torch.where(uncertain.unsqueeze(1), kept, inside)
    classes = torch.empty_like(kept).scatter_(1, order, kept)
    ratio = certain_ratio.to(dtype) if isinstance(certain_ratio, Tensor) else certain_ratio
    weight = torch.where(uncertain & found, confidence * ratio, 0.0)
    return ShrunkClasses(labels, classes, weight, valid)


@no_grad
def shrinkmatch(
    probs: Tensor,
    tau: float = 0.95,
    *,
    valid: Tensor | None = None,
    validate: bool = True,
    activation: str = "softmax",
    multilabel: bool | None = None,
) -> Selection:
    """ShrinkMatch's certain pseudo-labels: confidence ≥ ``tau``, the set FixMatch's loss
    trains (hard weights). The uncertain rest is :func:`shrink_classes`'s.

    The published code trains the certain set with the weak view's probabilities as soft
    targets (CIFAR, ImageNet) or with the arg-max (STL-10/SVHN); this Selection gives the
    arg-max (:func:`~pseudosel.weighted_cross_entropy` with ``normalize="batch"`` is the
    latter's loss).

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities.
        tau: the confidence threshold in [0, 1]. Default 0.95 (the paper; ImageNet: 0.7).
        valid: optional bool (N, *spatial); False marks ignored positions.
        validate: check that valid positions hold probabilities (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"``, as in
            :func:`~pseudosel.functional.threshold`.
        multilabel: for ``"sigmoid"``, as in :func:`~pseudosel.functional.threshold`.

    Returns:
        :class:`~pseudosel.Selection`: ``mask`` = certain, ``weight`` = mask as float,
        ``score`` = confidence (0 at ignored positions) — :func:`threshold`'s selection.

    Example:
        >>> import torch
        >>> from pseudosel.functional import shrinkmatch
        >>> shrinkmatch(torch.tensor([[0.97, 0.02, 0.01], [0.6, 0.3, 0.1]])).mask
        tensor([ True, False])
    """
    return threshold(
        probs, tau, valid=valid, validate=validate, activation=activation, multilabel=multilabel
    )
