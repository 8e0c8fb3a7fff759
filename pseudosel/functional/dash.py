"""Dash: keep positions whose pseudo-label loss is below a shrinking threshold ρ_t.

With hard pseudo-labels the loss is CE(p, ŷ) = −log max p. The threshold decays every
``update_every`` steps: ρ_t = max(C·γ^(−k)·ρ_init, ρ_min) at the k-th update (k = 0 at the
first step). ρ_init is the mean cross-entropy of the model on labeled data after warm-up.
Dash switches to hard labels once ρ reaches ρ_min (``use_hard_labels``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pseudosel.features import confidence_and_labels
from pseudosel.selection import Selection
from pseudosel.validation import compute_dtype

__all__ = ["dash_rho", "dash_select"]


def dash_rho(
    update_count: Tensor,
    rho_init: Tensor,
    *,
    gamma: float = 1.27,
    c: float = 1.0001,
    rho_min: float = 0.05,
) -> Tensor:
    """ρ after ``update_count`` previous updates: max(C·γ^(−k)·ρ_init, ρ_min).

    Example:
        >>> import torch
        >>> from pseudosel.functional import dash_rho
        >>> dash_rho(torch.tensor(2), torch.tensor(1.0), gamma=2.0, c=1.0)
        tensor(0.2500)
    """
    decay = torch.pow(
        torch.as_tensor(gamma, dtype=rho_init.dtype), -update_count.to(rho_init.dtype)
    )
    return torch.clamp_min(c * decay * rho_init, rho_min)


def dash_select(probs: Tensor, rho: Tensor, valid: Tensor) -> Selection:
    """mask = −log max p <= ρ; score = log max p (higher = more reliable).

    Example:
        >>> import torch
        >>> from pseudosel.functional import dash_select
        >>> dash_select(torch.tensor([[0.9, 0.1], [0.5, 0.5]]), torch.tensor(0.5),
        ...             torch.ones(2, dtype=torch.bool)).mask
        tensor([ True, False])
    """
    confidence, labels = confidence_and_labels(probs)
    log_conf = torch.log(confidence.to(compute_dtype(probs.dtype)))
    mask = valid & (-log_conf <= rho.to(log_conf.dtype))
    return Selection(
        labels=labels,
        weight=mask.to(log_conf.dtype),
        mask=mask,
        score=torch.where(valid, log_conf, 0.0),
        valid=valid,
    )
