"""Efficient Teacher's dual thresholds: certain, uncertain and dropped pseudo-labels.

Xu et al., "Efficient Teacher: Semi-Supervised Object Detection for YOLOv5", 2023 (public
code: ``models/loss/ssod/ssod_loss.py``, ``select_targets``). A pseudo-box whose score
reaches the high threshold (``ignore_thres_high``, 0.6 in the published configs) is
*certain* and trains every loss; one whose score reaches only the low threshold
(``ignore_thres_low``, 0.1) is *uncertain* and trains the objectness loss alone; the rest
are dropped. Both thresholds may be per class (LabelMatch sets them so).

:func:`dual_threshold` returns the certain set as a :class:`~pseudosel.Selection` (so
every loss, metric and tool takes it) with ``score`` the confidence; the uncertain set is
:func:`uncertain_positions` of that selection. The loss recipe is in docs/detection.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pseudosel._grad import no_grad
from pseudosel.features import confidence_and_labels
from pseudosel.inputs import prepare
from pseudosel.selection import Selection, hard_selection
from pseudosel.validation import check_real

__all__ = ["check_dual_thresholds", "dual_threshold", "uncertain_positions"]


def _thresholds(name: str, value: float | Tensor) -> float | Tensor:
    """A threshold in [0, 1]: a number, or a (K,) tensor of per-class thresholds."""
    if isinstance(value, Tensor):
        if value.dim() != 1 or not value.is_floating_point():
            raise TypeError(
                f"{name} must be a number or a floating (K,) tensor of per-class thresholds, "
                f"got a {value.dtype} tensor of shape {tuple(value.shape)}"
            )
        return value
    return check_real(name, value, low=0.0, high=1.0)


def check_dual_thresholds(
    low: float | Tensor, high: float | Tensor
) -> tuple[float | Tensor, float | Tensor]:
    """``low`` and ``high`` checked: numbers in [0, 1] with low <= high, or (K,) floating
    tensors of per-class thresholds; returned as given (numbers as float)."""
    low, high = _thresholds("low", low), _thresholds("high", high)
    if not isinstance(low, Tensor) and not isinstance(high, Tensor) and low > high:
        raise ValueError(f"low must not exceed high, got low={low!r} > high={high!r}")
    return low, high


def _per_position(threshold: float | Tensor, labels: Tensor, dtype: torch.dtype):
    if isinstance(threshold, Tensor):
        return threshold.to(device=labels.device, dtype=dtype)[labels]
    return threshold


@no_grad
def dual_threshold(
    probs: Tensor,
    low: float | Tensor = 0.1,
    high: float | Tensor = 0.6,
    *,
    valid: Tensor | None = None,
    validate: bool = True,
    activation: str = "softmax",
    multilabel: bool | None = None,
) -> Selection:
    """Certain pseudo-labels: confidence >= ``high``; the uncertain ones (>= ``low``) are
    :func:`uncertain_positions` of the result.

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities; for a detection batch (N, K, M)
            box scores (docs/detection.md; per-class sigmoid scores with ``validate=False``).
        low: the lowest confidence that is not dropped, in [0, 1], or a (K,) tensor per
            class. Default 0.1 (Efficient Teacher's ``ignore_thres_low``). Only checked
            here: :func:`uncertain_positions` applies it.
        high: the confidence of a certain pseudo-label, in [0, 1] or (K,). Default 0.6
            (``ignore_thres_high``).
        valid: optional bool (N, *spatial); False marks ignored positions (padding).
        validate: check that valid positions hold probabilities (default True; False for
            box scores).
        activation: ``"softmax"`` (default) or ``"sigmoid"``, as in
            :func:`~pseudosel.functional.threshold`.
        multilabel: for ``"sigmoid"``, as in :func:`~pseudosel.functional.threshold`.

    Returns:
        :class:`~pseudosel.Selection`: ``mask`` = certain, ``weight`` = mask as float,
        ``score`` = confidence (0 at ignored positions).

    Example:
        >>> import torch
        >>> from pseudosel.functional import dual_threshold, uncertain_positions
        >>> probs = torch.tensor([[0.9, 0.1], [0.35, 0.65], [0.55, 0.45]])
        >>> certain = dual_threshold(probs, low=0.5, high=0.6)
        >>> certain.mask, uncertain_positions(certain, low=0.5)
        (tensor([ True,  True, False]), tensor([False, False,  True]))
    """
    low, high = check_dual_thresholds(low, high)
    probs, valid, _ = prepare(
        probs, valid, activation=activation, multilabel=multilabel, validate=validate
    )
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, Tensor) and value.shape[0] != probs.shape[1]:
            raise ValueError(
                f"{name} must hold one threshold per class: {probs.shape[1]} classes at dim 1 "
                f"of probs, got {value.shape[0]} thresholds"
            )
    confidence, labels = confidence_and_labels(probs)
    certain = valid & (confidence >= _per_position(high, labels, confidence.dtype))
    return hard_selection(labels, certain, confidence, valid)


@no_grad
def uncertain_positions(selection: Selection, low: float | Tensor = 0.1) -> Tensor:
    """The uncertain pseudo-labels of a :func:`dual_threshold` selection: valid, not
    certain, confidence (``score``) >= ``low`` — Efficient Teacher's objectness-only boxes.

    Args:
        selection: the result of :func:`dual_threshold` (its ``score`` is the confidence).
        low: as given to :func:`dual_threshold`: a number in [0, 1] or (K,) per class.

    Returns:
        bool (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel.functional import dual_threshold, uncertain_positions
        >>> sel = dual_threshold(torch.tensor([[0.7, 0.3], [0.5, 0.5]]), high=0.6)
        >>> uncertain_positions(sel)
        tensor([False,  True])
    """
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a pseudosel.Selection, got {type(selection).__name__}")
    low = _thresholds("low", low)
    score = selection.score
    floor = _per_position(low, selection.labels, score.dtype)
    return selection.valid & ~selection.mask & (score >= floor)
