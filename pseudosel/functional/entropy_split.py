"""U2PL's entropy split: the most uncertain share of positions is unreliable.

Unreliable = entropy >= the (1 − α)-quantile of the entropies of all valid positions; the
rest of the valid positions are reliable (the selection). U2PL anneals α_t = α₀(1 − t/T)
with α₀ = 20%; even at α = 0 the positions at the maximum entropy are dropped, as in U2PL.
The quantile is exact (numpy's linear interpolation) and global across ranks, computed on
the device from all-reduced histograms (:mod:`pseudosel.functional.quantile`) — U2PL
computes it per rank with numpy on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pseudosel.activation import checked_class_probs
from pseudosel.distributed import ProcessGroup
from pseudosel.features import confidence_and_labels, entropy
from pseudosel.functional.quantile import masked_quantile
from pseudosel.selection import Selection
from pseudosel.validation import check_real

__all__ = ["entropy_split", "split_by_entropy"]


@torch.no_grad()
def entropy_split(
    probs: Tensor,
    unreliable: float = 0.2,
    *,
    valid: Tensor | None = None,
    group: ProcessGroup | None = None,
    validate: bool = True,
    activation: str = "softmax",
) -> Selection:
    """Reliable = valid and entropy below the (1 − ``unreliable``)-quantile.

    Args:
        probs: (N, K, *spatial) probabilities.
        unreliable: share α in [0, 1] of valid positions treated as unreliable. Default 0.2.
        valid: optional bool (N, *spatial).
        group: process group for the global quantile (default group if initialised).
        validate: check that valid positions hold probabilities (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"`` (binary (N, 1, *spatial) or
            multi-label (N, L, *spatial) probabilities read as (1 − p, p); see
            :func:`~pseudosel.functional.class_probs`). Multi-label: one quantile of the
            binary entropies over all valid (sample, label) positions.

    Returns:
        :class:`~pseudosel.Selection` (hard); score = −entropy. The unreliable set (U2PL's
        negatives) is ``sel.valid & ~sel.mask``.

    Example:
        >>> import torch
        >>> from pseudosel.functional import entropy_split
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.99, 0.01], [0.5, 0.5]])
        >>> entropy_split(probs, 0.5).mask
        tensor([ True, False,  True, False])
    """
    probs, valid = checked_class_probs(probs, valid, activation=activation, validate=validate)
    unreliable = check_real("unreliable", unreliable, low=0.0, high=1.0)
    return split_by_entropy(probs, valid, unreliable, group)


@torch.no_grad()
def split_by_entropy(
    probs: Tensor, valid: Tensor, unreliable: float | Tensor, group=None
) -> Selection:
    """The unchecked core of :func:`entropy_split`; ``unreliable`` may be a 0-dim tensor.

    Example:
        >>> import torch
        >>> from pseudosel.functional import split_by_entropy
        >>> probs = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
        >>> split_by_entropy(probs, torch.ones(2, dtype=torch.bool), torch.tensor(0.5)).mask
        tensor([ True, False])
    """
    uncertainty = entropy(probs)
    cut = masked_quantile(uncertainty, valid, 1.0 - unreliable, group).to(uncertainty.dtype)
    mask = valid & (uncertainty < cut)
    return Selection(
        labels=confidence_and_labels(probs)[1],
        weight=mask.to(uncertainty.dtype),
        mask=mask,
        score=torch.where(valid, -uncertainty, 0.0),
        valid=valid,
    )
