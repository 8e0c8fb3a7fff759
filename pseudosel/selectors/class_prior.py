"""Class-prior-matched thresholds (DARS, LabelMatch) as running per-class cuts, the prior
learned from the labelled labels. Maths: :mod:`pseudosel.functional.class_prior`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_reduce_sum
from pseudosel.features import confidence_and_labels
from pseudosel.functional.class_prior import (
    PriorLike,
    batch_cuts,
    check_kept_share,
    check_prior,
    select_with_thresholds,
)
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, check_momentum
from pseudosel.validation import check_bool_mask, check_ignore_index, check_labels, check_real

__all__ = ["ClassPriorSelector"]


class ClassPriorSelector(Selector):
    r"""Per-class thresholds that keep pseudo-labels in the class proportions of the
    labelled data (DARS, He et al., ICCV 2021; LabelMatch, Chen et al., CVPR 2022).

    Each training call computes the batch's cuts — class c keeps its
    k_c = min(⌊s · n · π_c⌋, m_c) most confident positions among the m_c predicted c
    (:func:`~pseudosel.functional.class_prior_thresholds`) — and moves the running cut of
    every class with k_c >= 1 toward it, t_c ← m · t_c + (1 − m) · cut_c (the first cut of a
    class replaces the start value). Then it keeps a position when its confidence reaches
    its class's running cut. A class with k_c = 0 in a batch (too rare for the batch, or not
    predicted) keeps its cut; a class with prior 0 keeps nothing. In eval mode it selects
    with the stored cuts.

    DARS and LabelMatch compute the cuts over the whole unlabelled set between training
    rounds; the running average is this module's per-step form of that pass
    (``momentum=0`` gives the stateless :func:`~pseudosel.functional.class_prior`).

    The prior π: ``prior=`` when given (fixed), else the class frequencies of the labels
    passed to :meth:`update_labeled` (call it once with the labelled set's labels, or with
    each labelled batch); until it has seen a label, π is uniform (1/K).

    Shared options: :mod:`pseudosel.selectors._base` (per-class state: binary sigmoid only).

    Args:
        num_classes: K >= 2.
        prior: None (default: learned by :meth:`update_labeled`, uniform until then),
            ``"uniform"``, or K values >= 0 summing to 1
            (:func:`~pseudosel.functional.check_prior`).
        kept_share: s in [0, 1], the share of the valid positions kept over all classes
            (DARS's labelling ratio α: 0.2 to 0.65 in its configs). None (default): the
            share a global threshold ``tau`` keeps in the batch — the same number of
            pseudo-labels as FixMatch's threshold, redistributed by the prior.
        tau: that global threshold, and every class's cut until its first update. Default
            0.95 (FixMatch).
        momentum: m, the weight of the old cut. Default 0.9 (ours: the published methods
            recompute the cuts over the unlabelled set, with no running average).
        min_threshold: a floor on the batch cuts (LabelMatch: 0.05). Default 0.
        process_group: process group of the gathers and sums (default: the default group,
            when torch.distributed is initialised). Every rank must pass the same input
            shape: the batch's confidences and classes are gathered, so the cuts are exact.

    Shape:
        probs (N, K) or (N, K, *spatial); valid and every Selection field (N, *spatial).

    Buffers:
        ``prior`` (K,) the given prior (uniform when learned), ``label_counts`` (K,) the
        labelled class counts, ``thresholds`` (K,) the running cuts (``tau`` at start),
        ``initialized`` (K,) bool: the class's cut has been set by a batch.

    The result is a :class:`~pseudosel.Selection`: ``mask`` the kept positions, ``weight``
    the mask as 0/1, ``score`` = confidence − its class's cut (0 at ignored positions).

    Example:
        >>> import torch
        >>> from pseudosel import ClassPriorSelector
        >>> selector = ClassPriorSelector(3, kept_share=0.5, momentum=0.0)
        >>> selector.update_labeled(torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2]))
        >>> selector.effective_prior()
        tensor([0.6000, 0.3000, 0.1000], dtype=torch.float64)
        >>> probs = torch.rand(40, 3).softmax(1)
        >>> selection = selector(probs)  # at most 10, 6 and 2 pseudo-labels (without ties)
        >>> selection.mask.shape, selector.thresholds.shape
        (torch.Size([40]), torch.Size([3]))
    """

    per_class_state = True
    shown = ("num_classes", "kept_share", "tau", "momentum", "min_threshold")

    prior: Tensor
    label_counts: Tensor
    thresholds: Tensor
    initialized: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        prior: PriorLike = None,
        kept_share: float | None = None,
        tau: float = 0.95,
        momentum: float = 0.9,
        min_threshold: float = 0.0,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        k = self.num_classes
        if isinstance(kept_share, Tensor):
            raise TypeError("kept_share must be a number in [0, 1] or None, got a tensor")
        self.kept_share = check_kept_share(kept_share)
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.momentum = check_momentum(momentum)
        self.min_threshold = check_real("min_threshold", min_threshold, low=0.0)
        self.process_group = process_group
        self.learn_prior = prior is None
        given = check_prior(
            prior.detach().cpu() if isinstance(prior, Tensor) else prior, k, device="cpu"
        )
        self.register_buffer("prior", given.to(torch.float64))
        self.register_buffer("label_counts", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("thresholds", torch.full((k,), self.tau, dtype=torch.float64))
        self.register_buffer("initialized", torch.zeros(k, dtype=torch.bool))

    def reset_running_stats(self) -> None:
        """Cuts back to ``tau`` (the labelled counts and the prior are kept)."""
        self.thresholds.fill_(self.tau)
        self.initialized.zero_()

    def effective_prior(self) -> Tensor:
        """π: the given prior, else the labelled class frequencies (uniform before any
        labelled label). (K,) float64 on the buffers' device."""
        if not self.learn_prior:
            return self.prior
        total = self.label_counts.sum()
        learned = self.label_counts / total.clamp(min=1)
        return torch.where(total > 0, learned, self.prior)

    @no_grad
    def update_labeled(
        self, labels: Tensor, valid: Tensor | None = None, *, ignore_index: int | None = None
    ) -> None:
        """Count the classes of labelled labels into the learned prior.

        Args:
            labels: integer tensor of any shape (N,) or (N, *spatial), classes in [0, K).
            valid: optional bool of the same shape; False marks positions without a label.
            ignore_index: a label value that marks positions without a label (e.g. 255 in
                segmentation masks). Default None.

        Under torch.distributed the counts are summed over the ranks (each rank may pass
        its shard; ranks passing the same set leave the proportions unchanged).

        Raises:
            RuntimeError: the module was built with a fixed ``prior``.
            TypeError / ValueError: labels not an integer tensor, ``valid`` of the wrong
                type or shape, a label outside [0, K) at a counted position.
        """
        if not self.learn_prior:
            raise RuntimeError(
                "ClassPriorSelector was built with a fixed prior=; update_labeled learns "
                "the prior only when prior=None"
            )
        if (
            not isinstance(labels, Tensor)
            or labels.is_floating_point()
            or labels.is_complex()
            or labels.dtype == torch.bool
        ):
            got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
            raise TypeError(f"labels must be an integer tensor, got {got}")
        used = torch.ones_like(labels, dtype=torch.bool)
        if valid is not None:
            check_bool_mask("valid", valid, "labels", labels.shape)
            used = used & valid
        if ignore_index is not None:
            ignore_index = check_ignore_index(ignore_index)
            used = used & (labels != ignore_index)
        labels = labels.to(torch.long)
        if self.validate:
            check_labels(labels, self.num_classes, used, ignore_index=ignore_index, name="labels")
        counts = torch.zeros_like(self.label_counts)
        classes = labels.clamp(0, self.num_classes - 1).flatten().to(counts.device)
        counts.index_add_(0, classes, used.flatten().to(counts))
        all_reduce_sum(counts, self.process_group)
        self.label_counts.add_(counts)

    def _advance(self, confidence: Tensor, labels: Tensor, valid: Tensor) -> None:
        cuts, kept = batch_cuts(
            confidence,
            labels,
            valid,
            self.effective_prior(),
            self.kept_share,
            self.tau,
            self.min_threshold,
            self.process_group,
        )
        cuts = cuts.to(self.thresholds.dtype)
        moved = self.momentum * self.thresholds + (1 - self.momentum) * cuts
        new = torch.where(self.initialized, moved, cuts)
        update = kept > 0
        self.thresholds.copy_(torch.where(update, new, self.thresholds))
        self.initialized.logical_or_(update)

    @no_grad
    def update(self, probs: Tensor, valid: Tensor | None = None) -> None:
        """Move the running cuts with a batch, without selecting."""
        probs, valid, _ = self.prepare(probs, valid)
        confidence, labels = confidence_and_labels(probs)
        self._advance(confidence, labels, valid)

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Training: move the cuts with the batch, then select. Eval: select with the
        stored cuts."""
        probs, valid, _ = self.prepare(probs, valid)
        confidence, labels = confidence_and_labels(probs)
        if self.training:
            self._advance(confidence, labels, valid)
        selection = select_with_thresholds(
            confidence, labels, valid, self.thresholds, self.effective_prior()
        )
        return self.finish(selection)
