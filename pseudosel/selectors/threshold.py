"""FixMatch's fixed threshold as a module."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.compiled import compiled
from pseudosel.selection import Selection
from pseudosel.selectors.inputs import check_weighting, options_repr, weighted
from pseudosel.validation import check_activation, check_real

__all__ = ["ThresholdSelector"]


class ThresholdSelector(nn.Module):
    """Fixed confidence threshold (FixMatch): mask = max p >= tau. Stateless.

    Args:
        tau: threshold in [0, 1]. Default 0.95 (FixMatch, UniMatch).
        validate: check input values on every call (default True).
        compile: run the compiled path (:mod:`pseudosel.compiled`): compiled on the first
            call, batch size dynamic. Default False (eager).
        activation: ``"softmax"`` (default: probs are class probabilities) or ``"sigmoid"``:
            binary (N, 1, *spatial) or multi-label (N, L, *spatial) sigmoid probabilities
            p, read as (1 − p, p) (docs/binary.md).
        weighting: ``"soft"`` (default: the selector's own weights; already 0/1 here) or ``"hard"``
            (weight = mask as 0/1, :meth:`~pseudosel.Selection.hard`).

    Shape:
        probs (N, K) or (N, K, *spatial); valid (N, *spatial); every Selection field
        (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import ThresholdSelector
        >>> selector = ThresholdSelector(tau=0.9)
        >>> selector(torch.tensor([[0.95, 0.05]])).mask
        tensor([True])
    """

    def __init__(
        self,
        tau: float = 0.95,
        *,
        validate: bool = True,
        compile: bool = False,
        activation: str = "softmax",
        weighting: str = "soft",
    ):
        super().__init__()
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.activation = check_activation(activation)
        self.weighting = check_weighting(weighting)
        self.validate = bool(validate)
        self.compile = bool(compile)
        self._select = compiled(F.threshold) if self.compile else F.threshold

    @torch.no_grad()
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select on ``probs``; see :func:`pseudosel.functional.threshold`."""
        selection = self._select(
            probs, self.tau, valid=valid, validate=self.validate, activation=self.activation
        )
        return weighted(selection, self.weighting)

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}"
            + (", compile=True" if self.compile else "")
            + options_repr(self.activation, self.weighting)
        )
