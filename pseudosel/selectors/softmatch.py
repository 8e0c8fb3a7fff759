"""SoftMatch's truncated-Gaussian weights, state in buffers."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.functional.softmatch import softmatch_moments_on_host, softmatch_weights_on_host
from pseudosel.kernels.scalars import ROUNDED_DTYPES
from pseudosel.selection import Selection
from pseudosel.selectors._base import UpdateThenSelect, buffers_of, check_momentum
from pseudosel.selectors._lane import takes_lane
from pseudosel.validation import check_real

__all__ = ["SoftMatchSelector"]


class SoftMatchSelector(UpdateThenSelect):
    """SoftMatch's truncated-Gaussian weights on the max confidence, EMA state in buffers.

    In training mode ``forward`` updates μ_t, σ²_t with the batch, then weighs (USB's
    order). Usually combined with :class:`DistributionAlignment` before it, as in USB.

    Shared options: :mod:`pseudosel.selectors._base` (per-class state: binary sigmoid only).

    Args:
        num_classes: K.
        momentum: EMA momentum. Default 0.999.
        n_sigma: width factor n_σ (weights use σ²/n_σ²). Default 2.0.
        per_class: keep (K,) statistics, grouped by pseudo-label. Default False.
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).

    Buffers:
        ``mu``, ``var``: 0-dim (or (K,)); initially 1/K and 1.

    Example:
        >>> import torch
        >>> from pseudosel import SoftMatchSelector
        >>> sel = SoftMatchSelector(10)(torch.randn(64, 10).softmax(1))
        >>> bool((sel.weight > 0).all())
        True
    """

    shown = ("num_classes", "momentum", "n_sigma", "per_class")
    update_stage = staticmethod(F.softmatch_update)
    select_stage = staticmethod(F.softmatch_select)
    update_options = ("momentum", "per_class")
    select_options = ("n_sigma",)

    mu: Tensor
    var: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        momentum: float = 0.999,
        n_sigma: float = 2.0,
        per_class: bool = False,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        self.momentum = check_momentum(momentum)
        self.n_sigma = check_real("n_sigma", n_sigma, low=0.0, low_open=True)
        self.per_class = bool(per_class)
        self.process_group = process_group
        state = F.softmatch_init(num_classes, per_class=self.per_class)
        self.register_buffer("mu", state.mu)
        self.register_buffer("var", state.var)

    def lane_open(self, probs: Tensor, state: F.SoftMatchState) -> bool:
        """The plain lane (:mod:`pseudosel.selectors._lane`) for the global statistics of a
        batch of at least two samples, with float32/float64 state."""
        mu, var = state
        return (
            not self.per_class
            and mu.dtype in ROUNDED_DTYPES
            and var.dtype == mu.dtype
            and takes_lane(self, probs, mu, var)
            and probs.shape[0] > 1
        )

    def lane_update(
        self, probs: Tensor, confidence: Tensor, labels: Tensor, state: F.SoftMatchState
    ) -> F.SoftMatchState:
        # written into the buffers here: the state returned is theirs (nothing to copy)
        mu, var = softmatch_moments_on_host(confidence, state, self.momentum)
        state.mu.fill_(mu)
        state.var.fill_(var)
        return state

    def lane_select(
        self, confidence: Tensor, labels: Tensor, state: F.SoftMatchState, valid: Tensor
    ) -> Selection:
        return softmatch_weights_on_host(confidence, labels, state, valid, self.n_sigma)

    def state(self) -> F.SoftMatchState:
        """The current statistics as a :class:`~pseudosel.functional.SoftMatchState`."""
        return F.SoftMatchState(*buffers_of(self, "mu", "var"))
