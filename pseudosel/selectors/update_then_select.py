"""Base of the selectors whose statistics absorb the batch before selecting."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pseudosel.selection import Selection
from pseudosel.selectors.inputs import checked_inputs

__all__ = ["UpdateThenSelect"]


class UpdateThenSelect(nn.Module):
    """Selectors whose statistics absorb the batch before selecting (FreeMatch, SoftMatch).

    Subclasses give ``state()`` (their buffers as a NamedTuple), ``_advance`` (the new state
    from a batch) and ``_select``.
    """

    num_classes: int
    validate: bool

    def state(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _advance(self, probs: Tensor, valid: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _select(self, probs: Tensor, valid: Tensor) -> Selection:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """In training mode update the statistics, then select; in eval mode select."""
        valid = checked_inputs(probs, valid, self.validate, self.num_classes)
        if self.training:
            self._update(probs, valid)
        return self._select(probs, valid)

    @torch.no_grad()
    def update(self, probs: Tensor, valid: Tensor | None = None) -> None:
        """Advance the statistics with a batch, without selecting."""
        self._update(probs, checked_inputs(probs, valid, self.validate, self.num_classes))

    def _update(self, probs: Tensor, valid: Tensor) -> None:
        for buffer, value in zip(self.state(), self._advance(probs, valid), strict=True):
            buffer.copy_(value)
