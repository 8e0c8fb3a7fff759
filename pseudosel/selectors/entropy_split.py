"""U2PL's reliable/unreliable split by entropy, step count in a buffer. Maths:
functional.entropy_split."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, check_positive_int
from pseudosel.validation import check_real

__all__ = ["EntropySplitSelector"]


class EntropySplitSelector(Selector):
    """U2PL's reliable/unreliable split by entropy percentile, α_t annealed over training.

    α_t = α₀·(1 − min(t, T)/T) at step t (counted by training-mode calls); reliable = valid
    positions with entropy below the global (1 − α_t)-quantile.

    Options shared by every selector module (``validate``, ``activation``, ``multilabel``,
    ``weighting``): :mod:`pseudosel.selectors._base`; multi-label: one quantile over all
    (sample, label) positions.

    Args:
        total_steps: T, the step at which α reaches 0.
        alpha0: initial unreliable share α₀ in [0, 1]. Default 0.2 (U2PL).
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).

    Buffers:
        ``step`` (long).

    Example:
        >>> import torch
        >>> from pseudosel import EntropySplitSelector
        >>> sel = EntropySplitSelector(1000)(torch.randn(2, 5, 16, 16).softmax(1))
        >>> round(float(sel.ratio()), 2)
        0.8
    """

    shown = ("total_steps", "alpha0")

    step: Tensor

    def __init__(
        self,
        total_steps: int,
        *,
        alpha0: float = 0.2,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.total_steps = check_positive_int("total_steps", total_steps)
        self.alpha0 = check_real("alpha0", alpha0, low=0.0, high=1.0)
        self.process_group = process_group
        self.register_buffer("step", torch.tensor(0))

    def unreliable_share(self) -> Tensor:
        """α_t at the current step, a 0-dim float64 tensor."""
        progress = self.step.clamp(max=self.total_steps).to(torch.float64) / self.total_steps
        return self.alpha0 * (1 - progress)

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Split with α_t; in training mode then advance the step."""
        selection = F.entropy_split(
            probs,
            self.unreliable_share(),
            valid=valid,
            process_group=self.process_group,
            validate=self.validate,
            activation=self.activation,
            multilabel=self.multilabel,
        )
        if self.training:
            self.step.add_(1)
        return self.finish(selection)
