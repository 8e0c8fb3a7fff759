"""Dense Teacher's region selection: the top share of all positions, by confidence.

Zhou et al., "Dense Teacher: Dense Pseudo-Labels for Semi-supervised Object Detection",
ECCV 2022. Over every position of the batch (the dense feature points of all images,
flattened together), the teacher's confidence ĉ = max_k p_k is ranked and the
``int(n · ratio)`` most confident positions are foreground; the published code then trains
the student toward the teacher's scores there, normalised by their sum ("fg_num"). Here:
``mask`` = those positions, ``weight`` = ĉ on them (so Σ weight is fg_num), ``labels`` =
arg-max. Global over the batch — and over every rank under torch.distributed, so a 2-rank
run selects what one process would on the concatenated batch.

The cut is the ``int(n · ratio)``-th largest confidence, found on the device without a host
synchronisation (:func:`~pseudosel.functional.quantile.order_statistics`); positions tied
with it are all kept (the published code's ``topk`` keeps an arbitrary subset of them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_reduce_sum
from pseudosel.features import confidence_and_labels
from pseudosel.functional.quantile import order_statistics
from pseudosel.inputs import prepare
from pseudosel.selection import Selection
from pseudosel.validation import check_real

__all__ = ["top_ratio"]


@no_grad
def top_ratio(
    probs: Tensor,
    ratio: float = 0.01,
    *,
    valid: Tensor | None = None,
    process_group: ProcessGroup | None = None,
    validate: bool = True,
    activation: str = "softmax",
    multilabel: bool | None = None,
) -> Selection:
    """Keep the ``ratio`` share of valid positions with the highest confidence, weighted
    by their confidence (Dense Teacher).

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities. For a detector's per-class sigmoid
            scores (not a distribution over K), pass ``validate=False``: the cut only reads
            max_k p_k.
        ratio: the kept share in [0, 1]: int(n_valid · ratio) positions (n_valid counted
            over the batch and every rank). Default 0.01 (Dense Teacher's ``RATIO``).
        valid: optional bool (N, *spatial); False marks ignored positions (never kept).
        process_group: process group of the global count and cut (default group, if
            initialised).
        validate: check that valid positions hold probabilities (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"`` for binary or multi-label
            sigmoid outputs, as in :func:`~pseudosel.functional.threshold`.
        multilabel: for ``"sigmoid"``, as in :func:`~pseudosel.functional.threshold`.

    Returns:
        :class:`~pseudosel.Selection`: ``mask`` the kept positions, ``weight`` their
        confidence (0 elsewhere), ``score`` the confidence (0 at ignored positions).

    Example:
        >>> import torch
        >>> from pseudosel.functional import top_ratio
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.5, 0.5]])
        >>> sel = top_ratio(probs, 0.5)  # int(4 · 0.5) = 2 positions
        >>> sel.mask, sel.weight
        (tensor([ True, False,  True, False]), tensor([0.9000, 0.0000, 0.8000, 0.0000]))
    """
    ratio = check_real("ratio", ratio, low=0.0, high=1.0)
    probs, valid, _ = prepare(
        probs, valid, activation=activation, multilabel=multilabel, validate=validate
    )
    confidence, labels = confidence_and_labels(probs)
    count = valid.sum().to(torch.float64)
    all_reduce_sum(count, process_group)
    kept = (count * ratio).floor()  # int(n · ratio), as the published code
    # the kept-th largest valid confidence is the (count − kept)-th smallest (0-based)
    rank = (count - kept).clamp(max=count - 1).clamp(min=0).to(torch.long)
    cut = order_statistics(confidence, valid, rank.unsqueeze(0), process_group)[0]
    mask = valid & (confidence >= cut.to(confidence.dtype)) & (kept > 0)
    return Selection(
        labels=labels,
        weight=torch.where(mask, confidence, 0.0),
        mask=mask,
        score=torch.where(valid, confidence, 0.0),
        valid=valid,
    )
