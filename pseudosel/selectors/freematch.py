"""FreeMatch's self-adaptive threshold, state in buffers."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.functional.freematch import freematch_thresholds, freematch_update_in_place
from pseudosel.functional.threshold import class_thresholds_on
from pseudosel.kernels.scalars import ROUNDED_DTYPES
from pseudosel.selection import Selection
from pseudosel.selectors._base import UpdateThenSelect, buffers_of, check_momentum
from pseudosel.selectors._lane import takes_lane

__all__ = ["FreeMatchSelector"]


class FreeMatchSelector(UpdateThenSelect):
    """FreeMatch's self-adaptive threshold τ_t · p̃_t(ŷ) / max p̃_t, held in buffers.

    In training mode ``forward`` first updates the statistics with the batch, then selects
    (USB's order); in eval mode it selects with frozen statistics.

    Shared options: :mod:`pseudosel.selectors._base` (per-class state: binary sigmoid only).

    Args:
        num_classes: K.
        momentum: EMA momentum. Default 0.999.
        use_quantile: use the 0.8-quantile of max p instead of the mean for τ_t (off).
        clip_thresh: clip τ_t to [0, 0.95] (off).
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).

    Buffers:
        ``time_p`` (0-dim), ``p_model`` (K,), ``label_hist`` (K,); initially 1/K each.

    Example:
        >>> import torch
        >>> from pseudosel import FreeMatchSelector
        >>> selector = FreeMatchSelector(10)
        >>> sel = selector(torch.randn(64, 10).softmax(1))
        >>> float(selector.time_p) > 0.1
        True
    """

    shown = ("num_classes", "momentum", "use_quantile", "clip_thresh")
    update_stage = staticmethod(F.freematch_update)
    select_stage = staticmethod(F.freematch_select)
    update_options = ("momentum", "use_quantile", "clip_thresh")

    time_p: Tensor
    p_model: Tensor
    label_hist: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        momentum: float = 0.999,
        use_quantile: bool = False,
        clip_thresh: bool = False,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        self.momentum = check_momentum(momentum)
        self.use_quantile = bool(use_quantile)
        self.clip_thresh = bool(clip_thresh)
        self.process_group = process_group
        state = F.freematch_init(num_classes)
        for name, value in zip(state._fields, state, strict=True):
            self.register_buffer(name, value)

    def lane_open(self, probs: Tensor, state: F.FreeMatchState) -> bool:
        """The plain lane (:mod:`pseudosel.selectors._lane`) for the mean confidence, with
        float32/float64 state."""
        return (
            not self.use_quantile
            and all(tensor.dtype in ROUNDED_DTYPES for tensor in state)
            and takes_lane(self, probs, *state)
        )

    def lane_update(
        self, probs: Tensor, confidence: Tensor, labels: Tensor, state: F.FreeMatchState
    ) -> F.FreeMatchState:
        # written into the buffers here: the state returned is theirs (nothing to copy)
        return freematch_update_in_place(
            probs, confidence, labels, state, self.momentum, self.clip_thresh
        )

    def lane_select(
        self, confidence: Tensor, labels: Tensor, state: F.FreeMatchState, valid: Tensor
    ) -> Selection:
        return class_thresholds_on(confidence, labels, freematch_thresholds(state), valid, True)

    def state(self) -> F.FreeMatchState:
        """The current statistics as a :class:`~pseudosel.functional.FreeMatchState`."""
        return F.FreeMatchState(*buffers_of(self, "time_p", "p_model", "label_hist"))
