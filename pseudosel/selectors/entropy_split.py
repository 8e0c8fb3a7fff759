"""U2PL's reliable/unreliable split by entropy, step count in a buffer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.selection import Selection
from pseudosel.selectors.inputs import check_weighting, options_repr, selector_inputs, weighted
from pseudosel.validation import check_activation, check_real

__all__ = ["EntropySplitSelector"]


class EntropySplitSelector(nn.Module):
    """U2PL's reliable/unreliable split by entropy percentile, α_t annealed over training.

    α_t = α₀·(1 − min(t, T)/T) at step t (counted by training-mode calls); reliable = valid
    positions with entropy below the global (1 − α_t)-quantile.

    Args:
        total_steps: T, the step at which α reaches 0.
        alpha0: initial unreliable share α₀ in [0, 1]. Default 0.2 (U2PL).
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).
        validate: check input values on every call (default True).
        activation: ``"softmax"`` (default: probs are class probabilities) or ``"sigmoid"``:
            binary (N, 1, *spatial) or multi-label (N, L, *spatial) sigmoid probabilities
            p, read as (1 − p, p) (docs/binary.md);
            multi-label: one quantile over all (sample, label) positions.
        weighting: ``"soft"`` (default: the selector's own weights; already 0/1 here) or ``"hard"``
            (weight = mask as 0/1, :meth:`~pseudosel.Selection.hard`).

    Buffers:
        ``step`` (long).

    Example:
        >>> import torch
        >>> from pseudosel import EntropySplitSelector
        >>> sel = EntropySplitSelector(1000)(torch.randn(2, 5, 16, 16).softmax(1))
        >>> round(float(sel.ratio()), 2)
        0.8
    """

    step: Tensor

    def __init__(
        self,
        total_steps: int,
        *,
        alpha0: float = 0.2,
        process_group: ProcessGroup | None = None,
        validate: bool = True,
        activation: str = "softmax",
        weighting: str = "soft",
    ) -> None:
        super().__init__()
        if isinstance(total_steps, bool) or not isinstance(total_steps, int):
            raise TypeError(f"total_steps must be an int, got {type(total_steps).__name__}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = total_steps
        self.alpha0 = check_real("alpha0", alpha0, low=0.0, high=1.0)
        self.process_group = process_group
        self.validate = bool(validate)
        self.activation = check_activation(activation)
        self.weighting = check_weighting(weighting)
        self.register_buffer("step", torch.tensor(0))

    def unreliable_share(self) -> Tensor:
        """α_t at the current step, a 0-dim float64 tensor."""
        progress = self.step.clamp(max=self.total_steps).to(torch.float64) / self.total_steps
        return self.alpha0 * (1 - progress)

    @torch.no_grad()
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Split with α_t; in training mode then advance the step."""
        probs, valid = selector_inputs(probs, valid, self.validate, activation=self.activation)
        selection = F.split_by_entropy(probs, valid, self.unreliable_share(), self.process_group)
        if self.training:
            self.step.add_(1)
        return weighted(selection, self.weighting)

    def extra_repr(self) -> str:
        return f"total_steps={self.total_steps}, alpha0={self.alpha0}" + options_repr(
            self.activation, self.weighting
        )
