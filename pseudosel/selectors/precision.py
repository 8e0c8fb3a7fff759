"""Precision-targeted selection (experimental): a threshold certified on held-out labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel._deprecation import warn_once
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.functional.precision import (
    DELTA,
    EPSILON,
    MIN_COUNT,
    NUM_CANDIDATES,
    WINDOW,
    check_target,
)
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, check_positive_int
from pseudosel.validation import check_real

__all__ = ["PrecisionTargetSelector"]


class PrecisionTargetSelector(Selector):
    r"""Experimental: mask = ĉ >= τ(ŷ), with τ the smallest threshold whose precision is
    certified to be >= 1 − ε with probability >= 1 − δ on held-out labelled data.

    The loop feeds predictions on a labelled set the model was NOT trained on (a held-out
    split: predictions on training data are over-confident and would certify thresholds
    that are too low) through :meth:`update_heldout`, which keeps the last ``window``
    (confidence, correct, predicted class) pairs in a ring buffer, and calls
    :meth:`calibrate` after the model has changed. :meth:`calibrate` tests a fixed grid of
    candidate thresholds from the highest down with a Clopper–Pearson bound on the
    precision of the held-out points at or above each (fixed-sequence testing: no
    multiplicity correction) and keeps the lowest certified one; see
    :mod:`pseudosel.functional.precision` for the rule and its assumption, and
    docs/precision.md for what the guarantee does and does not say (it needs held-out and
    unlabelled data exchangeable, and the same model). ``forward`` selects with the current
    thresholds in training and eval mode alike. Before any held-out data the threshold is
    ``fallback_tau`` (default: select nothing); when no candidate is certified, nothing is
    selected.

    Shared options: :mod:`pseudosel.selectors._base` (per-class state: binary sigmoid only).

    Args:
        num_classes: K >= 2.
        epsilon: ε in (0, 1): the target precision is 1 − ε. Default 0.05.
        delta: δ in (0, 1): the allowed probability that the certified threshold's
            precision is below target. Default 0.05.
        window: capacity W of the held-out ring buffer. Default 4096.
        candidates: the threshold grid, fixed in advance: an int G (the G + 1 values 1,
            1 − 1/G, …, 0; default 1000) or a sequence/1-D tensor of distinct values in
            [0, 1].
        per_class: one threshold per predicted class (precision of each class's
            pseudo-labels), each certified at δ/K so that all hold together. Default False.
        min_count: the sequence starts at the highest candidate with at least
            max(``min_count``, ⌈log δ / log(1 − ε)⌉) held-out points at or above it, so
            that one chance error among the few most confident points does not stop it.
            Default 100.
        fallback_tau: the threshold before the first calibration on held-out data. Default
            None: select nothing (threshold 2); e.g. 0.95 keeps FixMatch's meanwhile.
        process_group: process group of the all-gather in :meth:`update_heldout`
            (default: the default group, when torch.distributed is initialised).

    Shape:
        probs (N, K) or (N, K, *spatial); valid and every Selection field (N, *spatial);
        :meth:`update_heldout`: the same layouts, labels (N, *spatial) long.

    Buffers:
        ``confidence`` (W,), ``correct`` (W,) bool, ``predicted`` (W,) long: the ring
        buffer; ``filled`` and ``ptr`` (0-dim long): pairs held and next slot; ``thresh``
        (K,): the current threshold of each predicted class (all equal unless
        ``per_class``). DDP: :meth:`update_heldout` all-gathers each batch's pairs (equal
        per-rank batch sizes), so every rank holds the window and thresholds one process
        fed the concatenated batches would hold; :meth:`calibrate` needs no collective.

    Example:
        >>> import torch
        >>> from pseudosel import PrecisionTargetSelector
        >>> selector = PrecisionTargetSelector(10, epsilon=0.1, window=1024)
        >>> heldout = torch.randn(1000, 10).mul(4).softmax(1)
        >>> selector.update_heldout(heldout, heldout.argmax(1))  # all correct here
        >>> selector.calibrate()
        >>> float(selector.thresh[0]) < 1
        True
        >>> sel = selector(torch.randn(64, 10).mul(4).softmax(1))
    """

    shown = (
        "num_classes",
        "epsilon",
        "delta",
        "window",
        "num_candidates",
        "per_class",
        "min_count",
        "fallback_tau",
    )

    confidence: Tensor
    correct: Tensor
    predicted: Tensor
    filled: Tensor
    ptr: Tensor
    thresh: Tensor
    candidates: Tensor

    per_class_state = True

    def __init__(
        self,
        num_classes: int,
        *,
        epsilon: float = EPSILON,
        delta: float = DELTA,
        window: int = WINDOW,
        candidates: int | Sequence[float] | Tensor = NUM_CANDIDATES,
        per_class: bool = False,
        min_count: int = MIN_COUNT,
        fallback_tau: float | None = None,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        self.epsilon, self.delta, min_count = check_target(epsilon, delta, min_count)
        self.window = check_positive_int("window", window)
        self.min_count = min_count
        self.per_class = bool(per_class)
        if fallback_tau is not None:
            fallback_tau = check_real("fallback_tau", fallback_tau, low=0.0, high=1.0)
        self.fallback_tau = fallback_tau
        self.process_group = process_group
        grid = _candidate_grid(candidates)
        self.num_candidates = grid.shape[0]
        self.register_buffer("candidates", grid, persistent=False)  # configuration, not state
        state = F.precision_target_init(
            self.num_classes, window=self.window, fallback_tau=fallback_tau
        )
        # the window and the thresholds are identical on every rank (update_heldout
        # all-gathers each batch before writing it)
        self.register_buffer("confidence", state.confidence)  # (W,)
        self.register_buffer("correct", state.correct)  # (W,) bool
        self.register_buffer("predicted", state.predicted)  # (W,) long
        self.register_buffer("filled", state.filled)  # () pairs held, <= W
        self.register_buffer("ptr", state.ptr)  # () next slot to write
        self.register_buffer("thresh", state.thresh)  # (K,) τ per predicted class

    def state(self) -> F.PrecisionTargetState:
        """The buffers as a :class:`~pseudosel.functional.PrecisionTargetState`."""
        return F.PrecisionTargetState(
            self.confidence, self.correct, self.predicted, self.filled, self.ptr, self.thresh
        )

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select with the current thresholds (training and eval mode alike)."""
        probs, valid, _ = self.prepare(probs, valid)
        selection = F.precision_target_select(probs, self.state(), valid=valid, validate=False)
        return self.finish(selection)

    @no_grad
    def update_heldout(
        self, probs_heldout: Tensor, labels_heldout: Tensor, valid: Tensor | None = None
    ) -> None:
        """Push held-out predictions and their true labels into the window.

        Args:
            probs_heldout: (N, K) or (N, K, *spatial) predictions of the current model on
                labelled data it was not trained on.
            labels_heldout: long (N, *spatial) true classes in [0, K) at valid positions.
            valid: optional bool (N, *spatial); False skips a position (e.g. an ignored
                pixel, ``labels != 255``).
        """
        new = F.precision_target_update(
            probs_heldout,
            labels_heldout,
            self.state(),
            valid=valid,
            process_group=self.process_group,
            validate=self.validate,
            activation=self.activation,
            labels_name="labels_heldout",
        )
        self._store(new)

    def observe_heldout(
        self, probs_heldout: Tensor, labels_heldout: Tensor, valid: Tensor | None = None
    ) -> None:
        """Deprecated alias of :meth:`update_heldout` (warns once)."""
        warn_once(
            "PrecisionTargetSelector.observe_heldout",
            "PrecisionTargetSelector.observe_heldout is deprecated and will be removed; use "
            "update_heldout",
        )
        self.update_heldout(probs_heldout, labels_heldout, valid)

    @no_grad
    def calibrate(self) -> None:
        """Recompute the thresholds from the window (unchanged while it is empty).

        Vectorised over the candidates on the window's device, without host sync.
        """
        new = F.precision_target_calibrate(
            self.state(),
            self.candidates,
            epsilon=self.epsilon,
            delta=self.delta,
            per_class=self.per_class,
            min_count=self.min_count,
        )
        self.thresh.copy_(new.thresh)

    def reset_running_stats(self) -> None:
        """Empty the window; thresholds back to ``fallback_tau`` (or select nothing)."""
        start = F.precision_target_init(
            self.num_classes, window=self.window, fallback_tau=self.fallback_tau
        )
        for buffer, value in zip(self.state(), start, strict=True):
            buffer.copy_(value)

    def _store(self, new: F.PrecisionTargetState) -> None:
        for buffer, value in zip(self.state(), new, strict=True):
            buffer.copy_(value)


def _candidate_grid(candidates: int | Sequence[float] | Tensor) -> Tensor:
    """(G,) float64 thresholds, highest first."""
    if isinstance(candidates, int) and not isinstance(candidates, bool):
        return F.precision_candidates(check_positive_int("candidates", candidates))
    if isinstance(candidates, Tensor):
        values = candidates.detach().to("cpu", torch.float64)
    elif isinstance(candidates, Sequence) and not isinstance(candidates, str):
        try:
            values = torch.tensor([float(v) for v in candidates], dtype=torch.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"candidates must be an int or a sequence of numbers, got {candidates!r}"
            ) from None
    else:
        raise TypeError(
            "candidates must be an int (grid size) or a sequence / 1-D tensor of thresholds, "
            f"got {type(candidates).__name__}"
        )
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(
            f"candidates must be a non-empty 1-D sequence, got shape {tuple(values.shape)}"
        )
    values = values.sort(descending=True).values
    listed = values.tolist()
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in listed):
        raise ValueError(f"candidates must lie in [0, 1], got {listed}")
    if len(set(listed)) != len(listed):
        raise ValueError(f"candidates must be distinct, got {listed}")
    return values
