"""U2PL's entropy split: the most uncertain share of positions is unreliable.

Unreliable = entropy >= the (1 − α)-quantile of the entropies of all valid positions; the
rest of the valid positions are reliable (the selection). U2PL anneals α_t = α₀(1 − t/T)
with α₀ = 20%; even at α = 0 the positions at the maximum entropy are dropped, as in U2PL.
The quantile is exact (numpy's linear interpolation) and global across ranks, computed on
the device from all-reduced histograms (:mod:`pseudosel.functional.quantile`) — U2PL
computes it per rank with numpy on the CPU.
"""

from __future__ import annotations

from torch import Tensor

from pseudosel._deprecation import renamed_keywords, warn_once
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.features import confidence_and_labels, entropy
from pseudosel.functional.quantile import masked_quantile
from pseudosel.inputs import prepare
from pseudosel.selection import Selection, hard_selection
from pseudosel.validation import check_real

__all__ = ["entropy_split", "split_by_entropy"]


@no_grad
@renamed_keywords("entropy_split", group="process_group")
def entropy_split(
    probs: Tensor,
    unreliable: float | Tensor = 0.2,
    *,
    valid: Tensor | None = None,
    process_group: ProcessGroup | None = None,
    validate: bool = True,
    activation: str = "softmax",
    multilabel: bool | None = None,
) -> Selection:
    """Reliable = valid and entropy below the (1 − ``unreliable``)-quantile (U2PL).

    Args:
        probs: (N, K, *spatial) probabilities.
        unreliable: share α in [0, 1] of valid positions treated as unreliable, a float or
            a 0-dim tensor (U2PL's annealed α_t: :class:`~pseudosel.EntropySplitSelector`).
            Default 0.2.
        valid: optional bool (N, *spatial).
        process_group: process group of the global quantile (default group if initialised).
        validate: check that valid positions hold probabilities (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"`` (binary (N, 1, *spatial) or
            multi-label (N, L, *spatial) probabilities read as (1 − p, p); see
            :func:`~pseudosel.functional.class_probs`). Multi-label: one quantile of the
            binary entropies over all valid (sample, label) positions.
        multilabel: for ``"sigmoid"``, as in :func:`~pseudosel.functional.threshold`.

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
    if not isinstance(unreliable, Tensor):
        unreliable = check_real("unreliable", unreliable, low=0.0, high=1.0)
    probs, valid, _ = prepare(
        probs, valid, activation=activation, multilabel=multilabel, validate=validate
    )
    uncertainty = entropy(probs)
    cut = masked_quantile(uncertainty, valid, 1.0 - unreliable, process_group)
    mask = valid & (uncertainty < cut.to(uncertainty.dtype))
    return hard_selection(confidence_and_labels(probs)[1], mask, -uncertainty, valid)


def split_by_entropy(
    probs: Tensor, valid: Tensor, unreliable: float | Tensor, group: ProcessGroup | None = None
) -> Selection:
    """Deprecated (warns once): ``entropy_split(probs, unreliable, valid=valid,
    process_group=group, validate=False)``."""
    warn_once(
        "split_by_entropy",
        "split_by_entropy is deprecated and will be removed; use entropy_split(probs, "
        "unreliable, valid=valid, process_group=group, validate=False)",
    )
    return entropy_split(probs, unreliable, valid=valid, process_group=group, validate=False)
