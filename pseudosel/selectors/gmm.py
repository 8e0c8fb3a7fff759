"""Consistent-Teacher's per-class GMM score thresholds, the score queues in a buffer."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_gather_cat
from pseudosel.features import confidence_and_labels
from pseudosel.selection import Selection, hard_selection
from pseudosel.selectors._base import Selector, check_positive_int
from pseudosel.validation import check_choice, check_real

__all__ = ["GMMThresholdSelector"]


class GMMThresholdSelector(Selector):
    r"""Consistent-Teacher's pseudo-boxes: a per-image total-score cut, then per class a
    threshold from a two-component Gaussian mixture over the class's last scores.

    Wang et al., "Consistent-Teacher", CVPR 2023 (public code
    ``ssod/models/consistent_teacher.py``, ``extract_teacher_info``). In training mode a
    call

    1. cuts each image's boxes at :func:`~pseudosel.functional.total_score_cut` (a box is
       kept when its score is strictly above the cut; ``total_score_ratio=None`` skips it);
    2. puts the kept boxes' scores at the front of their class's queue
       (:func:`~pseudosel.functional.score_queue_update`; gathered from every rank first
       under torch.distributed, so every rank holds the same queues);
    3. fits the mixture to each queue's positive scores
       (:func:`~pseudosel.functional.gmm_thresholds`, on the device, batched over classes);
    4. keeps a box whose score is strictly above its class's threshold.

    In eval mode it cuts and selects with the thresholds of the last training call. The
    box's score and class are the maximum and arg-max over dim 1: per-class scores of a
    sigmoid detector (pass ``validate=False``: they are not a distribution), a softmax's
    foreground classes, or one (score, label) per box spread by
    :func:`~pseudosel.detection.pad_detections` (docs/detection.md).

    Shared options: :mod:`pseudosel.selectors._base` (per-class state: binary sigmoid only).

    Args:
        num_classes: K >= 2.
        num_scores: queue length per class. Default 100 (the code's ``num_scores``).
        policy: ``"high"`` (default) or ``"middle"``
            (:func:`~pseudosel.functional.gmm_thresholds`).
        fallback: the threshold of a class with fewer than 4 scores or no high component.
            Default 0.0 (the code's ``given_gt_thr``).
        total_score_ratio: the pre-filter's ``dynamic_ratio``. Default 1.0; None: no cut.
        max_iter: EM's step cap. Default 100 (scikit-learn's, as the code uses it).
        tol: EM's stop tolerance on the mean log-likelihood. Default 1e-3 (scikit-learn's).
        process_group: process group of the gather (default: the default group, when
            torch.distributed is initialised). Every rank must pass the same input shape
            (pad detections to a fixed ``max_boxes``).

    Shape:
        probs (N, K, M) box scores — or (N, K) and (N, K, *spatial): the cut then runs per
        sample over its positions; valid and every Selection field (N, M).

    Buffers:
        ``scores`` (K, num_scores) the queues (0 = empty slot), ``thresholds`` (K,) the last
        fitted thresholds (``fallback`` until the first training call).

    The result is a :class:`~pseudosel.Selection`: ``mask`` the kept boxes, ``weight`` the
    mask as float, ``score`` = box score − its class's threshold (0 at padding).

    Example:
        >>> import torch
        >>> from pseudosel import GMMThresholdSelector
        >>> selector = GMMThresholdSelector(3, num_scores=20)
        >>> boxes = torch.rand(4, 3, 10).softmax(1)  # 4 images, 10 boxes each
        >>> selection = selector(boxes)
        >>> selection.mask.shape, selector.thresholds.shape
        (torch.Size([4, 10]), torch.Size([3]))
    """

    per_class_state = True
    shown = ("num_classes", "num_scores", "policy", "fallback", "total_score_ratio")

    scores: Tensor
    thresholds: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        num_scores: int = 100,
        policy: str = "high",
        fallback: float = 0.0,
        total_score_ratio: float | None = 1.0,
        max_iter: int = 100,
        tol: float = 1e-3,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        self.num_scores = check_positive_int("num_scores", num_scores)
        self.policy = check_choice("policy", policy, F.GMM_POLICIES)
        self.fallback = check_real("fallback", fallback)
        self.total_score_ratio = (
            None
            if total_score_ratio is None
            else check_real("total_score_ratio", total_score_ratio, low=0.0)
        )
        self.max_iter = check_positive_int("max_iter", max_iter)
        self.tol = check_real("tol", tol, low=0.0)
        self.process_group = process_group
        self.register_buffer("scores", torch.zeros(self.num_classes, self.num_scores))
        self.register_buffer("thresholds", torch.full((self.num_classes,), self.fallback))

    def reset_running_stats(self) -> None:
        """Empty queues, thresholds back to ``fallback``."""
        self.scores.zero_()
        self.thresholds.fill_(self.fallback)

    def candidates(self, confidence: Tensor, valid: Tensor) -> Tensor:
        """The boxes that pass each image's total-score cut (all valid ones without it)."""
        if self.total_score_ratio is None:
            return valid
        boxes = math.prod(confidence.shape[1:])  # 1 for classification input
        cut = F.total_score_cut(
            confidence.reshape(confidence.shape[0], boxes),
            valid.reshape(valid.shape[0], boxes),
            ratio=self.total_score_ratio,
        )
        shape = (-1,) + (1,) * (confidence.dim() - 1)
        return valid & (confidence > cut.view(shape))

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Training: cut, queue, fit, select. Eval: cut and select with the stored
        thresholds."""
        probs, valid, _ = self.prepare(probs, valid)
        confidence, labels = confidence_and_labels(probs)
        kept = self.candidates(confidence, valid)
        if self.training:
            group = self.process_group
            self.scores.copy_(
                F.score_queue_update(
                    self.scores,
                    all_gather_cat(confidence.to(self.scores.dtype), group),
                    all_gather_cat(labels, group),
                    all_gather_cat(kept, group),
                )
            )
            self.thresholds.copy_(
                F.gmm_thresholds(
                    self.scores,
                    self.scores > 0,
                    policy=self.policy,
                    fallback=self.fallback,
                    max_iter=self.max_iter,
                    tol=self.tol,
                )
            )
        threshold = self.thresholds.to(confidence.dtype)[labels]
        mask = kept & (confidence > threshold)
        return self.finish(hard_selection(labels, mask, confidence - threshold, valid))
