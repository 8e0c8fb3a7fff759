"""Dash's decaying loss threshold, state in buffers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.selection import Selection
from pseudosel.selectors.inputs import checked_inputs
from pseudosel.validation import check_real

__all__ = ["DashSelector"]


class DashSelector(nn.Module):
    """Dash: keep positions with −log max p <= ρ_t; ρ decays every ``update_every`` steps.

    In training mode each ``forward`` is one step: ρ is updated when ``step`` is a multiple
    of ``update_every`` (also at step 0: ρ = C·ρ_init), then positions are selected, then
    ``step`` advances. ``use_hard_labels`` turns True once ρ reaches ρ_min.

    Args:
        rho_init: ρ_init, the mean labeled cross-entropy after warm-up (> 0). Can be reset
            later through the ``rho_init`` buffer.
        update_every: steps between ρ updates (Dash: 10 epochs' worth).
        gamma: decay γ > 1. Default 1.27.
        c: constant C. Default 1.0001.
        rho_min: floor ρ_min. Default 0.05.

    Buffers:
        ``rho_init``, ``rho``, ``step`` (long), ``update_count`` (long).

    Example:
        >>> import torch
        >>> from pseudosel import DashSelector
        >>> selector = DashSelector(1.0, update_every=100)
        >>> sel = selector(torch.tensor([[0.5, 0.5], [0.2, 0.8]]))
        >>> sel.mask, int(selector.step)
        (tensor([True, True]), 1)
    """

    rho_init: Tensor
    rho: Tensor
    step: Tensor
    update_count: Tensor

    def __init__(
        self,
        rho_init: float,
        *,
        update_every: int,
        gamma: float = 1.27,
        c: float = 1.0001,
        rho_min: float = 0.05,
        validate: bool = True,
    ) -> None:
        super().__init__()
        rho_init = check_real("rho_init", rho_init, low=0.0, low_open=True)
        if isinstance(update_every, bool) or not isinstance(update_every, int):
            raise TypeError(f"update_every must be an int, got {type(update_every).__name__}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.update_every = update_every
        self.gamma = check_real("gamma", gamma, low=0.0, low_open=True)
        self.c = check_real("c", c, low=0.0, low_open=True)
        self.rho_min = check_real("rho_min", rho_min, low=0.0)
        self.validate = bool(validate)
        init = torch.tensor(rho_init)
        self.register_buffer("rho_init", init)
        self.register_buffer("rho", self._rho_at(torch.tensor(0), init))
        self.register_buffer("step", torch.tensor(0))
        self.register_buffer("update_count", torch.tensor(0))

    def _rho_at(self, count: Tensor, rho_init: Tensor) -> Tensor:
        return F.dash_rho(count, rho_init, gamma=self.gamma, c=self.c, rho_min=self.rho_min)

    @property
    def use_hard_labels(self) -> Tensor:
        """0-dim bool tensor: ρ has reached ρ_min (Dash switches to hard labels)."""
        return self.rho <= self.rho_min

    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """One Dash step in training mode (update ρ if due, select, count); else select."""
        valid = checked_inputs(probs, valid, self.validate)
        if self.training:
            due = self.step % self.update_every == 0
            self.rho.copy_(
                torch.where(due, self._rho_at(self.update_count, self.rho_init), self.rho)
            )
            self.update_count.add_(due.long())
            self.step.add_(1)
        return F.dash_select(probs, self.rho, valid)

    def extra_repr(self) -> str:
        return (
            f"update_every={self.update_every}, gamma={self.gamma}, c={self.c}, "
            f"rho_min={self.rho_min}"
        )
