"""CGMatch's easy / ambiguous / hard split, state in buffers. Maths: functional.cgmatch."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pseudosel import functional as F
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.features import with_shared_features
from pseudosel.functional.cgmatch import _check_window, check_index
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, check_momentum, check_positive_int
from pseudosel.validation import check_real

__all__ = ["CGMatchSelector"]


class CGMatchSelector(Selector):
    """CGMatch (Cheng et al., CVPR 2025): easy = ĉ ≥ μ_t; ambiguous = ĉ < μ_t and count
    gap ≥ g_t; hard = the rest (see :mod:`pseudosel.functional.cgmatch`).

    ``forward`` returns the easy set as a hard :class:`~pseudosel.Selection` whose ``score``
    is each sample's count gap; :meth:`ambiguous` turns it into the ambiguous mask with the
    current g_t. In training mode ``forward`` first records the batch's pseudo-labels,
    reads the count gaps and moves μ_t and g_t (the authors' order), then selects; in eval
    mode it selects with frozen state. :meth:`record` adds predictions without moving the
    means (the authors' warm-up passes over the unlabelled set). Under torch.distributed
    every rank records every rank's (index, label) pairs (equal per-rank batch sizes) and
    the means are all-reduced, so all ranks hold the same state.

    Shared options: :mod:`pseudosel.selectors._base` (per-class state: binary sigmoid only).

    Args:
        num_classes: K.
        num_unlabeled: N_u, the size of the unlabelled set (``index`` lies in [0, N_u)).
        momentum: EMA momentum m of μ_t and g_t (weight of the OLD value). Default 0.999
            (the authors' ``ema_p``).
        per_class: μ_t per pseudo-label. Default False (the authors' default).
        window: None (default: counts of every prediction) or W: a sample's counts decay by
            1 − 1/W at each of its predictions (the authors keep a sliding window of the
            last 1000; docs/beyond.md).
        clamp: None or (low, high) clamping μ_t in the comparison (the authors: (0.9, 0.95)
            on SVHN).
        process_group: of the collectives (default: the default group, if initialised).

    Shape:
        probs (N, K); index (N,) long; valid and every Selection field (N,).

    Buffers:
        ``counts`` (N_u, K) float32; ``mu`` () or (K,), 1/K at start; ``gap_mu`` (), 0 until
        the first update; ``totals`` (2,) float64: Σ count gap over the recorded samples
        and their number; ``started`` () bool.

    Example:
        >>> import torch
        >>> from pseudosel import CGMatchSelector
        >>> selector = CGMatchSelector(10, num_unlabeled=1000)
        >>> probs, index = torch.randn(64, 10).softmax(1), torch.arange(64)
        >>> sel = selector(probs, index)            # easy: sel.mask / sel.weight
        >>> ambiguous = selector.ambiguous(sel)     # ĉ < μ_t and count gap >= g_t
        >>> bool((sel.mask & ambiguous).any())
        False
    """

    shown = ("num_classes", "num_unlabeled", "momentum", "per_class", "window", "clamp")

    counts: Tensor
    mu: Tensor
    gap_mu: Tensor
    totals: Tensor
    started: Tensor

    per_class_state = True

    def __init__(
        self,
        num_classes: int,
        num_unlabeled: int,
        *,
        momentum: float = 0.999,
        per_class: bool = False,
        window: float | None = None,
        clamp: tuple[float, float] | None = None,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        self.num_unlabeled = check_positive_int("num_unlabeled", num_unlabeled)
        self.momentum = check_momentum(momentum)
        self.per_class = bool(per_class)
        _check_window(window)
        self.window = window
        if clamp is not None:
            if not isinstance(clamp, tuple | list) or len(clamp) != 2:
                raise TypeError(f"clamp must be None or a pair (low, high), got {clamp!r}")
            low, high = (check_real("clamp", value, low=0.0, high=1.0) for value in clamp)
            if low > high:
                raise ValueError(f"clamp must have low <= high, got {clamp!r}")
            clamp = (low, high)
        self.clamp = clamp
        self.process_group = process_group
        start = F.cgmatch_init(self.num_classes, self.num_unlabeled, per_class=self.per_class)
        for name, value in start._asdict().items():
            self.register_buffer(name, value)

    def state(self) -> F.CGMatchState:
        """The buffers as a :class:`~pseudosel.functional.CGMatchState`."""
        return F.CGMatchState(self.counts, self.mu, self.gap_mu, self.totals, self.started)

    def _store(self, new: F.CGMatchState) -> None:
        for buffer, value in zip(self.state(), new, strict=True):
            if value is not buffer:  # the counts were written in place
                buffer.copy_(value)

    def gap_threshold(self) -> Tensor:
        """g_t, the running mean of the count gap (0-dim)."""
        return self.gap_mu

    def ambiguous(self, selection: Selection) -> Tensor:
        """The ambiguous samples of ``selection`` (from :meth:`forward`): valid, not easy,
        count gap >= g_t (the current :meth:`gap_threshold`). bool (N,)."""
        return F.ambiguous_positions(selection, self.gap_mu)

    @no_grad
    def forward(self, probs: Tensor, index: Tensor, valid: Tensor | None = None) -> Selection:
        """Training: record the batch, move μ_t and g_t, then select. Eval: select.

        Args:
            probs: (N, K) probabilities of the weak view (detached; aligned first if you
                use distribution alignment, as the authors). index: (N,) long positions of
                the samples in the unlabelled set. valid: optional bool (N,).
        """
        probs, valid, index = self._inputs(probs, index, valid)
        # the update and the selection read one arg-max
        return with_shared_features(self._step, probs, index, valid)

    def _inputs(
        self, probs: Tensor, index: object, valid: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        probs, valid, _ = self.prepare(probs, valid)
        if probs.dim() != 2:
            raise ValueError(
                "CGMatchSelector takes classification outputs (N, K): it counts predictions "
                f"per sample; got probs of shape {tuple(probs.shape)}"
            )
        index = check_index(
            index,
            self.num_unlabeled,
            probs.shape[0],
            probs.device,
            validate=self.validate,
            function="CGMatchSelector",
        )
        return probs, valid, index

    def _step(self, probs: Tensor, index: Tensor, valid: Tensor) -> Selection:
        if self.training:
            self._store(self._advance(probs, index, valid))
        selection = F.cgmatch_select(
            probs,
            index,
            self.state(),
            valid=valid,
            clamp=self.clamp,
            validate=False,
        )
        return self.finish(selection)

    def _advance(self, probs: Tensor, index: Tensor, valid: Tensor) -> F.CGMatchState:
        return F.cgmatch_update(
            probs,
            index,
            self.state(),
            valid=valid,
            momentum=self.momentum,
            window=self.window,
            process_group=self.process_group,
            inplace=True,
            validate=False,
        )

    @no_grad
    def update(self, probs: Tensor, index: Tensor, valid: Tensor | None = None) -> None:
        """Record the batch and move μ_t and g_t, without selecting."""
        probs, valid, index = self._inputs(probs, index, valid)
        self._store(self._advance(probs, index, valid))

    @no_grad
    def record(self, probs: Tensor, index: Tensor, valid: Tensor | None = None) -> None:
        """Only record the batch's pseudo-labels in the counts (μ_t, g_t unchanged): the
        authors' warm-up passes, one prediction per unlabelled sample after each
        supervised warm-up step."""
        probs, valid, index = self._inputs(probs, index, valid)
        new = F.cgmatch_record(
            probs,
            index,
            self.state(),
            valid=valid,
            window=self.window,
            process_group=self.process_group,
            inplace=True,
            validate=False,
        )
        self._store(new)
