"""AdaMatch's relative threshold: τ times the mean confidence on the labeled weak batch."""

from __future__ import annotations

import torch
from torch import Tensor

from pseudosel import kernels
from pseudosel._deprecation import renamed_keywords
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_reduce_sum
from pseudosel.features import confidence_and_labels
from pseudosel.inputs import prepare
from pseudosel.kernels.scalars import operands
from pseudosel.selection import Selection, hard_selection
from pseudosel.validation import check_real, compute_dtype

__all__ = ["adamatch"]


@no_grad
@renamed_keywords("adamatch", group="process_group")
def adamatch(
    probs: Tensor,
    probs_labeled: Tensor,
    tau: float = 0.95,
    *,
    valid: Tensor | None = None,
    valid_labeled: Tensor | None = None,
    process_group: ProcessGroup | None = None,
    validate: bool = True,
    activation: str = "softmax",
    multilabel: bool | None = None,
) -> Selection:
    """mask = max p >= τ · mean(max p over the labeled batch) (AdaMatch, USB).

    The labeled mean is taken over every rank's labeled batch under torch.distributed
    (sum and count all-reduced). With no valid labeled position anywhere, the cutoff falls
    back to τ itself.

    Args:
        probs: (N, K, *spatial) unlabeled weak-view probabilities.
        probs_labeled: (M, K, *spatial') labeled weak-view probabilities (same K).
        tau: relative threshold in [0, 1]. Default 0.95.
        valid: optional bool (N, *spatial) mask of ``probs``.
        valid_labeled: optional bool (M, *spatial') mask of ``probs_labeled``.
        process_group: process group of the labelled mean (default group, if initialised).
        validate: check that valid positions hold probabilities (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"``: both inputs are binary
            (·, 1, *spatial) or multi-label (·, L, *spatial) probabilities, read as
            (1 − p, p) (:func:`~pseudosel.functional.class_probs`). Multi-label: one cutoff,
            τ times the mean of max(p, 1 − p) over all valid labelled (sample, label)
            positions.
        multilabel: for ``"sigmoid"``, as in :func:`~pseudosel.functional.threshold`.

    Returns:
        :class:`~pseudosel.Selection`; score = max p.

    Example:
        >>> import torch
        >>> from pseudosel.functional import adamatch
        >>> labeled = torch.tensor([[0.9, 0.1], [0.7, 0.3]])   # mean confidence 0.8
        >>> adamatch(torch.tensor([[0.78, 0.22], [0.74, 0.26]]), labeled).mask
        tensor([ True, False])
    """
    tau = check_real("tau", tau, low=0.0, high=1.0)
    classes = probs.shape[1] if isinstance(probs, Tensor) and probs.dim() >= 2 else None
    probs, valid, all_valid = prepare(
        probs, valid, activation=activation, multilabel=multilabel, validate=validate
    )
    if isinstance(probs_labeled, Tensor) and probs_labeled.dim() >= 2:
        if probs_labeled.shape[1] != classes:
            raise ValueError(
                f"probs_labeled must have the {classes} classes of probs at dim 1, got shape "
                f"{tuple(probs_labeled.shape)}"
            )
    probs_labeled, valid_labeled, all_labeled = prepare(
        probs_labeled,
        valid_labeled,
        activation=activation,
        multilabel=multilabel,
        validate=validate,
        name="probs_labeled",
    )
    return adamatch_after_front_door(
        probs, valid, all_valid, probs_labeled, valid_labeled, all_labeled, tau, process_group
    )


def adamatch_after_front_door(
    probs: Tensor,
    valid: Tensor,
    all_valid: bool,
    probs_labeled: Tensor,
    valid_labeled: Tensor | None,
    all_labeled: bool,
    tau: float,
    process_group: ProcessGroup | None,
    features: tuple[Tensor, Tensor] | None = None,
) -> Selection:
    """:func:`adamatch`'s formula on what the front door returned for both batches (also
    the plain lane of :class:`~pseudosel.AdaMatchSelector`, :mod:`pseudosel.selectors._lane`).
    ``features``: the confidence and arg-max of ``probs`` when the caller has them.
    ``valid_labeled`` None: the plain lane's labelled batch — every position, plainly
    counted (no mask is built only to be counted)."""
    work = compute_dtype(probs.dtype)
    labeled_conf = probs_labeled.amax(1)
    if labeled_conf.dtype != work:
        labeled_conf = labeled_conf.to(work)
    if valid_labeled is None or kernels.counted_plainly(valid_labeled, all_labeled):
        # a plain mean
        scale, count = operands(labeled_conf, tau, labeled_conf.numel())
        cutoff = scale * labeled_conf.sum() / count
    else:
        labeled_sum = torch.where(valid_labeled, labeled_conf, 0.0).sum()  # NaN/Inf stay out
        stats = torch.stack((labeled_sum, valid_labeled.sum().to(work)))
        all_reduce_sum(stats, process_group)
        cutoff = torch.where(stats[1] > 0, tau * stats[0] / stats[1].clamp_min(1), tau)
    confidence, labels = features or confidence_and_labels(probs)
    mask = confidence >= cutoff
    if not all_valid:
        mask &= valid
    return hard_selection(labels, mask, confidence, valid, all_valid=all_valid)
