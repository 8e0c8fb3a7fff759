"""CorrMatch's global dynamic threshold: an EMA of the mean per-class maximum confidence.

τ_t = m · τ_{t−1} + (1 − m) · (1/|P|) Σ_{k ∈ P} max{ĉ_i : ŷ_i = k, i valid}, with P the
classes predicted (arg-max) at one valid position at least; a batch with no valid position
leaves τ unchanged. mask = ĉ >= τ_t. CorrMatch (Sun et al., "CorrMatch: Label Propagation via
Correlation Matching for Semi-Supervised Semantic Segmentation", CVPR 2024), public code
``util/thresh_helper.py``: τ₀ = ``thresh_init`` = 0.85, m = 0.999, and the training step
updates τ with the batch BEFORE masking it. CorrMatch all-gathers the full logits for this
statistic; an element-wise MAX all-reduce of the (K,) per-class maxima gives the same value.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from pseudosel._deprecation import keyword_valid, renamed_keywords, state_after_input
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_reduce_max
from pseudosel.features import confidence_and_labels
from pseudosel.functional.threshold import class_threshold_selection
from pseudosel.inputs import per_class_inputs
from pseudosel.selection import Selection
from pseudosel.validation import compute_dtype

__all__ = [
    "CorrMatchState",
    "corrmatch_class_max",
    "corrmatch_init",
    "corrmatch_select",
    "corrmatch_update",
]

THRESH_INIT = 0.85
ABSENT = -1.0  # per-class maximum of a class no valid position predicts (confidences are >= 0)


class CorrMatchState(NamedTuple):
    """thresh: 0-dim global threshold τ_t."""

    thresh: Tensor


def corrmatch_init(
    *, thresh_init: float = THRESH_INIT, dtype=torch.float32, device=None
) -> CorrMatchState:
    """The published initial state: τ₀ = ``thresh_init`` (0.85 in CorrMatch's configs).

    Example:
        >>> from pseudosel.functional import corrmatch_init
        >>> corrmatch_init().thresh
        tensor(0.8500)
    """
    return CorrMatchState(torch.tensor(thresh_init, dtype=dtype, device=device))


@no_grad
@renamed_keywords("corrmatch_class_max", group="process_group")
def corrmatch_class_max(
    probs: Tensor, valid: Tensor, process_group: ProcessGroup | None = None
) -> Tensor:
    """(K,) maximum confidence among the valid positions predicted as each class, over all
    ranks (MAX all-reduce); −1 for a class predicted nowhere.

    Example:
        >>> import torch
        >>> from pseudosel.functional import corrmatch_class_max
        >>> probs = torch.tensor([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]])
        >>> corrmatch_class_max(probs, torch.ones(3, dtype=torch.bool))
        tensor([ 0.9000,  0.7000, -1.0000])
    """
    confidence, labels = confidence_and_labels(probs)
    kept = torch.where(valid, confidence.to(compute_dtype(probs.dtype)), ABSENT)
    class_max = torch.full(
        (probs.shape[1],), ABSENT, dtype=kept.dtype, device=probs.device
    ).scatter_reduce(0, labels.flatten(), kept.flatten(), reduce="amax")
    return all_reduce_max(class_max, process_group)


@no_grad
@state_after_input("corrmatch_update", CorrMatchState)
@renamed_keywords("corrmatch_update", group="process_group")
def corrmatch_update(
    probs: Tensor,
    state: CorrMatchState,
    *,
    valid: Tensor | None = None,
    momentum: float = 0.999,
    process_group: ProcessGroup | None = None,
    **front: Any,
) -> CorrMatchState:
    """One EMA step of τ on the valid positions of ``probs`` (all ranks under DDP).

    Args:
        probs: (N, K, *spatial); state: the current τ; valid: optional bool (N, *spatial).
        momentum: m in τ ← m·τ + (1 − m)·batch (weight of the OLD value). Default 0.999.
        process_group: process group of the collectives (default group, if initialised).

    Returns:
        The new state (unchanged when no position is valid on any rank).

    Example:
        >>> import torch
        >>> from pseudosel.functional import corrmatch_init, corrmatch_update
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> new = corrmatch_update(probs, corrmatch_init(), momentum=0.5)
        >>> round(float(new.thresh), 4)  # 0.5·0.85 + 0.5·(0.9 + 0.7)/2
        0.825
    """
    probs, valid, _ = per_class_inputs(probs, valid, None, "corrmatch_update", **front)
    class_max = corrmatch_class_max(probs, valid, process_group)
    present = class_max >= 0
    count = present.sum()
    batch = torch.where(present, class_max, 0.0).sum() / count.clamp_min(1)
    dtype = state.thresh.dtype
    thresh = state.thresh * momentum + (1 - momentum) * batch.to(dtype)
    return CorrMatchState(torch.where(count > 0, thresh, state.thresh))


@no_grad
@keyword_valid("corrmatch_select", 2)
def corrmatch_select(
    probs: Tensor,
    state: CorrMatchState,
    *,
    valid: Tensor | None = None,
    **front: Any,
) -> Selection:
    """mask = max p >= τ_t; score = max p − τ_t (0 at ignored positions).

    Args:
        probs: (N, K, *spatial); state: the current τ; valid: optional bool (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel.functional import corrmatch_init, corrmatch_select
        >>> sel = corrmatch_select(torch.tensor([[0.9, 0.1], [0.4, 0.6]]), corrmatch_init())
        >>> sel.mask
        tensor([ True, False])
    """
    probs, valid, _ = per_class_inputs(probs, valid, None, "corrmatch_select", **front)
    return class_threshold_selection(probs, state.thresh.expand(probs.shape[1]), valid)
