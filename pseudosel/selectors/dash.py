"""Dash's decaying loss threshold, state in buffers. Xu et al., "Dash: Semi-Supervised
Learning with Dynamic Thresholding", ICML 2021; schedule and phases as in USB. Maths:
functional.dash."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel import kernels
from pseudosel._grad import no_grad
from pseudosel.features import plain_confidence_and_labels
from pseudosel.functional.dash import dash_after_front_door
from pseudosel.kernels.scalars import ROUNDED_DTYPES, rounded
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, buffers_of, check_positive_int
from pseudosel.selectors._lane import all_positions, takes_lane
from pseudosel.validation import check_real

__all__ = ["DashSelector"]


class DashSelector(Selector):
    """Dash: keep positions with pseudo-label loss ℓ <= ρ_t; ρ decays every ``update_every`` steps.

    As in USB, ℓ is the cross-entropy of p against the soft target softmax(logits / T)
    (T = 0.5; from probabilities q = softmax(log p / T)), ℓ = −Σ_k q_k·log p_k, while
    ρ > ρ_min, and against the hard pseudo-label once ρ reaches ρ_min: ℓ = −log max p
    (``use_hard_labels``). The soft loss is never below the hard one, so the soft phase
    keeps fewer positions. ``hard_labels=True`` uses the hard loss from the first step
    (pseudosel's earlier behaviour; not USB's).

    In training mode each ``forward`` is one step: ρ is updated when ``step`` is a multiple
    of ``update_every`` (also at step 0: ρ = C·ρ_init), then the phase is read from the new
    ρ (on the device, no host read), then positions are selected, then ``step`` advances.
    In eval mode ``forward`` selects with the current ρ and phase.

    Options shared by every selector module (``validate``, ``activation``, ``multilabel``,
    ``weighting``): :mod:`pseudosel.selectors._base`; multi-label: ℓ per (sample, label),
    one ρ_t for all.

    Args:
        rho_init: ρ_init, the mean labeled cross-entropy after warm-up (> 0). Can be reset
            later through the ``rho_init`` buffer.
        update_every: steps between ρ updates (Dash: 10 epochs' worth).
        gamma: decay γ > 1. Default 1.27.
        c: constant C. Default 1.0001.
        rho_min: floor ρ_min. Default 0.05.
        T: temperature of the soft targets (> 0). Default 0.5 (USB).
        hard_labels: always use hard pseudo-labels (ℓ = −log max p), also while
            ρ > ρ_min. Default False (USB: soft until ρ reaches ρ_min).

    Shape:
        probs (N, K) or (N, K, *spatial); valid and every Selection field (N, *spatial).
        ``score`` is −ℓ (higher = more reliable), ``labels`` the arg-max.

    Buffers:
        ``rho_init``, ``rho``, ``step`` (long), ``update_count`` (long). No DDP reduction:
        the schedule depends on the step count only, so it is the same on every rank.

    Example:
        >>> import torch
        >>> from pseudosel import DashSelector
        >>> selector = DashSelector(1.0, update_every=100)
        >>> sel = selector(torch.tensor([[0.5, 0.5], [0.2, 0.8]]))
        >>> sel.mask, int(selector.step), bool(selector.use_hard_labels)
        (tensor([True, True]), 1, False)
        >>> sel.score  # −ℓ with soft targets: 0.5 → ℓ = log 2; 0.8 → ℓ = 0.30
        tensor([-0.6931, -0.3047])
    """

    shown = ("update_every", "gamma", "c", "rho_min", "T", "hard_labels")

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
        T: float = 0.5,
        hard_labels: bool = False,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        rho_init = check_real("rho_init", rho_init, low=0.0, low_open=True)
        self.update_every = check_positive_int("update_every", update_every)
        self.gamma = check_real("gamma", gamma, low=0.0, low_open=True)
        self.c = check_real("c", c, low=0.0, low_open=True)
        self.rho_min = check_real("rho_min", rho_min, low=0.0)
        self.T = check_real("T", T, low=0.0, low_open=True)
        if not isinstance(hard_labels, bool):
            raise TypeError(f"hard_labels must be a bool, got {type(hard_labels).__name__}")
        self.hard_labels = hard_labels
        init = torch.tensor(rho_init)
        self.register_buffer("rho_init", init)
        self.register_buffer("rho", self._rho_at(torch.tensor(0), init))
        self.register_buffer("step", torch.tensor(0))
        self.register_buffer("update_count", torch.tensor(0))

    def _rho_at(self, count: Tensor, rho_init: Tensor) -> Tensor:
        return F.dash_rho(count, rho_init, gamma=self.gamma, c=self.c, rho_min=self.rho_min)

    @property
    def use_hard_labels(self) -> Tensor:
        """0-dim bool tensor: ρ has reached ρ_min, so Dash uses hard pseudo-labels.

        Always True with ``hard_labels=True``. A tensor, so reading it costs no host sync.
        """
        if self.hard_labels:
            return torch.ones((), dtype=torch.bool, device=self.rho.device)
        return self.rho <= self.rho_min

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """One Dash step in training mode (update ρ if due, select, count); else select."""
        rho, rho_init, step, count = buffers_of(self, "rho", "rho_init", "step", "update_count")
        features = None
        if valid is None and takes_lane(self, probs, rho, rho_init, step):
            valid, all_valid = all_positions(probs), True
            features = plain_confidence_and_labels(probs)
        else:
            probs, valid, all_valid = self.prepare(probs, valid)
        # on the CPU a read of the step counter is free: the schedule is decided in Python
        # (the same ρ as the device-side form below, which reads nothing on the host)
        on_host = kernels.eager_cpu(step)
        if self.training and on_host:
            if step.item() % self.update_every == 0:
                rho.copy_(self._rho_at(count, rho_init))
                count.add_(1)
            step.add_(1)
        elif self.training:
            due = step % self.update_every == 0
            rho.copy_(torch.where(due, self._rho_at(count, rho_init), rho))
            count.add_(due.long())
            step.add_(1)
        hard: Tensor | bool
        if self.hard_labels:
            hard = True
        elif on_host and rho.dtype in ROUNDED_DTYPES:
            # one loss computed, not both; ρ_min rounded as the tensor comparison rounds it
            hard = rho.item() <= rounded(self.rho_min, rho.dtype)
        else:
            hard = rho <= self.rho_min
            if on_host:
                hard = bool(hard)
        selection = dash_after_front_door(probs, rho, valid, all_valid, hard, self.T, features)
        return self.finish(selection)
