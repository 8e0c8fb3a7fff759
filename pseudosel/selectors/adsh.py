"""Adsh's class-wise adaptive thresholds for imbalanced data, state in buffers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel._deprecation import warn_once
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_gather_cat
from pseudosel.features import confidence_and_labels
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, check_positive_int
from pseudosel.validation import check_real

__all__ = ["AdshSelector"]


class AdshSelector(Selector):
    r"""Adsh: mask = ĉ >= exp(−s(ŷ)), s recomputed per epoch from sorted confidences.

    Guo & Li, ICML 2022, as USB's ``AdaptiveThresholdingHook`` runs it. ``forward`` selects
    with the current scores in both modes (Adsh changes no state per step). Once per epoch
    the loop feeds the unlabelled data through :meth:`update` (USB: an eval-mode pass over
    the whole unlabelled set) and calls :meth:`calibrate`, which gives the same scores as
    USB for the same confidences: per class the confidences are sorted, the calibration
    class fixes the kept fraction ρ against τ₁, and s_k = −log of the entry at ⌊n_k·ρ⌋ − 1.
    Maths and quirks: :mod:`pseudosel.functional.adsh`. Batched rather than one sweep at
    the end: records live in per-sample buffers indexed by the sample's position in the
    unlabelled set; record each sample once per pass (a duplicate index keeps one of its
    records, which one is unspecified).

    Shared options: :mod:`pseudosel.selectors._base` (per-class state: binary sigmoid only).

    Args:
        num_classes: K >= 2.
        num_unlabeled: size of the unlabelled set (indices of :meth:`update`).
        tau_1: τ₁. Default 0.95 (USB's ``--adsh_tau_1``); also the initial score.
        calibration_class: the class held to τ₁: 0 as in USB (default), or None for the
            class predicted most often in the pass.
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).

    Shape:
        probs (N, K) (classification: one record per sample); valid and every Selection
        field (N,); index (N,) long.

    Buffers:
        ``s`` (K,) scores, τ₁ at start; ``confidence`` (num_unlabeled,) and ``prediction``
        (num_unlabeled,) long, −1 = not recorded in this pass. DDP: :meth:`update` gathers
        every rank's records and applies them in rank order (equal per-rank batch sizes, as
        with a ``DistributedSampler``), so every rank holds the same records and scores, equal
        to one process fed the ranks' batches concatenated in rank order.

    Example:
        >>> import torch
        >>> from pseudosel import AdshSelector
        >>> selector = AdshSelector(10, num_unlabeled=100)
        >>> probs = torch.randn(100, 10).mul(3).softmax(1)
        >>> selector.update(probs, torch.arange(100))
        >>> selector.calibrate()
        >>> sel = selector(probs)
    """

    shown = ("num_classes", "num_unlabeled", "tau_1", "calibration_class")

    s: Tensor
    confidence: Tensor
    prediction: Tensor

    per_class_state = True

    def __init__(
        self,
        num_classes: int,
        num_unlabeled: int,
        *,
        tau_1: float = 0.95,
        calibration_class: int | None = 0,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        self.num_unlabeled = check_positive_int("num_unlabeled", num_unlabeled)
        if calibration_class is not None and not (
            isinstance(calibration_class, int) and 0 <= calibration_class < num_classes
        ):
            raise ValueError(
                f"calibration_class must be None or an int in [0, {num_classes}), got "
                f"{calibration_class!r}"
            )
        self.tau_1 = check_real("tau_1", tau_1, low=0.0, high=1.0)
        self.calibration_class = calibration_class
        self.process_group = process_group
        self.register_buffer("s", F.adsh_init(num_classes, tau_1=self.tau_1).s)
        self.register_buffer("confidence", torch.zeros(num_unlabeled))
        self.register_buffer("prediction", torch.full((num_unlabeled,), -1, dtype=torch.long))

    def state(self) -> F.AdshState:
        """The scores as a :class:`~pseudosel.functional.AdshState`."""
        return F.AdshState(self.s)

    def thresholds(self) -> Tensor:
        """(K,) class-wise thresholds exp(−s)."""
        return F.adsh_thresholds(self.state())

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select with the current class-wise thresholds (training and eval mode alike)."""
        probs, valid, _ = self.prepare(probs, valid)
        return self.finish(F.adsh_select(probs, self.state(), valid=valid, validate=False))

    @no_grad
    def update(self, probs: Tensor, index: Tensor, valid: Tensor | None = None) -> None:
        """Store the confidence and arg-max of unlabelled samples ``index`` for this pass."""
        probs, valid, _ = self.prepare(probs, valid)
        if probs.dim() != 2:
            raise ValueError(
                f"update takes (N, K) classification probs, got shape {tuple(probs.shape)}"
            )
        if index.dtype != torch.long or tuple(index.shape) != (probs.shape[0],):
            raise ValueError(
                f"index must be a long ({probs.shape[0]},) tensor, got dtype {index.dtype} "
                f"and shape {tuple(index.shape)}"
            )
        confidence, labels = confidence_and_labels(probs)
        # every rank applies every rank's writes in rank order, so all ranks hold the same
        # records and a later write wins as in one process (a reduction at calibrate time
        # could not tell an old record from a new one)
        group = self.process_group
        index, valid = all_gather_cat(index, group), all_gather_cat(valid, group)
        confidence = all_gather_cat(confidence.to(self.confidence.dtype), group)
        labels = all_gather_cat(labels, group)
        # ignored rows write back what is stored (no boolean indexing: no host sync)
        confidence = torch.where(valid, confidence, self.confidence[index])
        labels = torch.where(valid, labels, self.prediction[index])
        self.confidence.index_copy_(0, index, confidence)
        self.prediction.index_copy_(0, index, labels)

    @no_grad
    def calibrate(self, *, reset: bool = True) -> None:
        """New scores from this pass's records (USB's ``after_train_epoch``); then, with
        ``reset``, forget the records for the next pass."""
        new = F.adsh_calibrate(
            self.confidence,
            self.prediction,
            self.state(),
            tau_1=self.tau_1,
            calibration_class=self.calibration_class,
        )
        self.s.copy_(new.s)
        if reset:
            self.confidence.zero_()
            self.prediction.fill_(-1)

    def record(self, probs: Tensor, index: Tensor, valid: Tensor | None = None) -> None:
        """Deprecated alias of :meth:`update` (warns once)."""
        warn_once(
            "AdshSelector.record",
            "AdshSelector.record is deprecated and will be removed; use update",
        )
        self.update(probs, index, valid)

    def recompute(self, *, reset: bool = True) -> None:
        """Deprecated alias of :meth:`calibrate` (warns once)."""
        warn_once(
            "AdshSelector.recompute",
            "AdshSelector.recompute is deprecated and will be removed; use calibrate",
        )
        self.calibrate(reset=reset)
