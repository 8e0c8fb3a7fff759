"""AdaMatch's relative threshold as a module."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.selection import Selection
from pseudosel.validation import check_real

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["AdaMatchSelector"]


class AdaMatchSelector(nn.Module):
    """AdaMatch's relative threshold τ · mean labeled confidence. Stateless.

    ``forward(probs, probs_labeled, valid=None, valid_labeled=None)``; with
    :func:`~pseudosel.select_reliable`, pass ``probs_labeled=`` as an option.

    Example:
        >>> import torch
        >>> from pseudosel import AdaMatchSelector
        >>> labeled = torch.tensor([[0.9, 0.1], [0.7, 0.3]])
        >>> AdaMatchSelector()(torch.tensor([[0.78, 0.22]]), labeled).mask
        tensor([True])
    """

    def __init__(
        self, tau: float = 0.95, *, process_group: ProcessGroup | None = None, validate: bool = True
    ) -> None:
        super().__init__()
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
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
        return F.adamatch(
            probs,
            probs_labeled,
            self.tau,
            valid=valid,
            valid_labeled=valid_labeled,
            group=self.process_group,
            validate=self.validate,
        )

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
