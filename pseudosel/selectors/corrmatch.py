"""CorrMatch's global dynamic threshold, state in a buffer."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.selectors._base import UpdateThenSelect, check_momentum
from pseudosel.validation import check_real

__all__ = ["CorrMatchSelector"]


class CorrMatchSelector(UpdateThenSelect):
    r"""CorrMatch's global threshold: mask = ĉ >= τ_t, τ_t an EMA of per-class maxima.

    τ_t = m·τ_{t−1} + (1 − m)·mean over the predicted classes of the maximum confidence
    among the valid positions predicted as that class (Sun et al., CorrMatch, CVPR 2024;
    public code ``util/thresh_helper.py``). In training mode ``forward`` first updates τ
    with the batch, then selects (CorrMatch's order: ``thresh_update`` precedes the
    confidence filter); in eval mode it selects with the frozen τ. Maths:
    :mod:`pseudosel.functional.corrmatch`.

    Shared options: :mod:`pseudosel.selectors._base` (per-class state: binary sigmoid only).

    Args:
        num_classes: K >= 2.
        thresh_init: τ₀. Default 0.85 (CorrMatch's configs).
        momentum: m in τ ← m·τ + (1 − m)·batch (weight of the OLD value, unlike
            BatchNorm's ``momentum``). Default 0.999 (CorrMatch).
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).

    Shape:
        probs (N, K) or (N, K, *spatial); valid and every Selection field (N, *spatial).

    Buffers:
        ``thresh`` (0-dim) τ_t. DDP: the (K,) per-class maxima are MAX-all-reduced before
        the EMA, so every rank holds the same τ, equal to one process on the whole batch.

    Example:
        >>> import torch
        >>> from pseudosel import CorrMatchSelector
        >>> selector = CorrMatchSelector(10, momentum=0.9)
        >>> sel = selector(torch.randn(2, 10, 8, 8).softmax(1))
        >>> float(selector.thresh) < 0.85
        True
    """

    shown = ("num_classes", "thresh_init", "momentum")
    update_stage = staticmethod(F.corrmatch_update)
    select_stage = staticmethod(F.corrmatch_select)

    thresh: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        thresh_init: float = 0.85,
        momentum: float = 0.999,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        self.thresh_init = check_real("thresh_init", thresh_init, low=0.0, high=1.0)
        self.momentum = check_momentum(momentum)
        self.process_group = process_group
        self.register_buffer("thresh", F.corrmatch_init(thresh_init=self.thresh_init).thresh)

    def state(self) -> F.CorrMatchState:
        """The current threshold as a :class:`~pseudosel.functional.CorrMatchState`."""
        return F.CorrMatchState(self.thresh)

    def reset_running_stats(self) -> None:
        """τ back to ``thresh_init``."""
        self.thresh.fill_(self.thresh_init)
