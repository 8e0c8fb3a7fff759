"""Base of the selectors whose statistics absorb the batch before selecting."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pseudosel.features import with_shared_features
from pseudosel.selection import Selection
from pseudosel.selectors.inputs import selector_inputs, weighted

__all__ = ["UpdateThenSelect"]


class UpdateThenSelect(nn.Module):
    """Selectors whose statistics absorb the batch before selecting (FreeMatch, SoftMatch).

    Subclasses give ``state()`` (their buffers as a NamedTuple), ``_advance`` (the new state
    from a batch) and ``_select``, and set ``activation`` (a binary sigmoid output becomes
    two classes here; multi-label input is refused) and ``weighting``.
    """

    num_classes: int
    validate: bool
    activation: str
    weighting: str

    def _inputs(self, probs: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
        return selector_inputs(
            probs,
            valid,
            self.validate,
            self.num_classes,
            activation=self.activation,
            selector=type(self).__name__,
        )

    def state(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _advance(self, probs: Tensor, valid: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _select(self, probs: Tensor, valid: Tensor) -> Selection:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """In training mode update the statistics, then select; in eval mode select."""
        probs, valid = self._inputs(probs, valid)
        # the update and the selection read one arg-max
        return with_shared_features(self._step, probs, valid)

    def _step(self, probs: Tensor, valid: Tensor) -> Selection:
        if self.training:
            self._update(probs, valid)
        return weighted(self._select(probs, valid), self.weighting)

    @torch.no_grad()
    def update(self, probs: Tensor, valid: Tensor | None = None) -> None:
        """Advance the statistics with a batch, without selecting."""
        self._update(*self._inputs(probs, valid))

    def _update(self, probs: Tensor, valid: Tensor) -> None:
        for buffer, value in zip(self.state(), self._advance(probs, valid), strict=True):
            buffer.copy_(value)
