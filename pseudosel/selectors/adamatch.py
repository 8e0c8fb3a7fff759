"""AdaMatch's relative threshold as a module."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.selection import Selection
from pseudosel.selectors.inputs import check_weighting, options_repr, weighted
from pseudosel.validation import check_activation, check_real

__all__ = ["AdaMatchSelector"]


class AdaMatchSelector(nn.Module):
    """AdaMatch's relative threshold τ · mean labeled confidence. Stateless.

    ``forward(probs, probs_labeled, valid=None, valid_labeled=None)``; with
    :func:`~pseudosel.select_reliable`, pass ``probs_labeled=`` as an option.

    Args:
        tau: relative threshold in [0, 1]. Default 0.95.
        process_group: process group of the labelled mean (default: the default group,
            when torch.distributed is initialised).
        validate: check input values on every call (default True).
        activation: ``"softmax"`` (default: probs are class probabilities) or ``"sigmoid"``:
            binary (N, 1, *spatial) or multi-label (N, L, *spatial) sigmoid probabilities
            p, read as (1 − p, p), both inputs (docs/binary.md).
        weighting: ``"soft"`` (default: the selector's own weights; already 0/1 here) or ``"hard"``
            (weight = mask as 0/1, :meth:`~pseudosel.Selection.hard`).

    Shape:
        probs (N, K, *spatial), probs_labeled (M, K, *spatial'); valid and every Selection
        field (N, *spatial) — (N, L, *spatial) for multi-label sigmoid probs (N, L, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import AdaMatchSelector
        >>> labeled = torch.tensor([[0.9, 0.1], [0.7, 0.3]])
        >>> AdaMatchSelector()(torch.tensor([[0.78, 0.22]]), labeled).mask
        tensor([True])
    """

    def __init__(
        self,
        tau: float = 0.95,
        *,
        process_group: ProcessGroup | None = None,
        validate: bool = True,
        activation: str = "softmax",
        weighting: str = "soft",
    ) -> None:
        super().__init__()
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.activation = check_activation(activation)
        self.weighting = check_weighting(weighting)
        self.process_group = process_group
        self.validate = bool(validate)

    @torch.no_grad()
    def forward(
        self,
        probs: Tensor,
        probs_labeled: Tensor,
        valid: Tensor | None = None,
        valid_labeled: Tensor | None = None,
    ) -> Selection:
        """Select on ``probs`` with a cutoff relative to ``probs_labeled``."""
        selection = F.adamatch(
            probs,
            probs_labeled,
            self.tau,
            valid=valid,
            valid_labeled=valid_labeled,
            group=self.process_group,
            validate=self.validate,
            activation=self.activation,
        )
        return weighted(selection, self.weighting)

    def extra_repr(self) -> str:
        return f"tau={self.tau}" + options_repr(self.activation, self.weighting)
