"""`Selection`: the one result type every selector returns."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["WEIGHTINGS", "Selection", "hard_selection"]

# What a selector's ``weight`` holds: its own (soft) weights, or its hard mask as 0/1
# (``weighting=`` of select_reliable and the selector modules; Selection.hard).
WEIGHTINGS = ("soft", "hard")


class Selection(NamedTuple):
    """Pseudo-labels chosen by a selector, one entry per position.

    A position is one sample for classification input (N, K) and one pixel for dense input
    (N, K, *spatial); every field has the position shape (N, *spatial) — (N, L, *spatial)
    for a multi-label sigmoid output, one position per (sample, label). Being a NamedTuple of
    tensors, a Selection passes through ``torch.compile``, DDP and ``torch.utils._pytree`` as
    plain data.

    Attributes:
        labels: long — the pseudo-label of each position (the arg-max class, lowest index on
            ties; for sigmoid outputs 1 = positive, p > 0.5). Defined at ignored positions
            too (a valid class index; which one is unspecified where the ignored entries
            are NaN, and may differ between eager and compiled code); their weight is 0.
        weight: float in [0, 1] — what the unlabeled loss multiplies by (0/1 for hard
            selectors). float32 for float16/bfloat16 input, else the input dtype.
        mask: bool — the hard selection (for CSL the trusted set, where weight == 1).
        score: float — the reliability score the selector ranked positions by (confidence
            for thresholds, a signed z-score for CSL); 0 at ignored positions.
        valid: bool — positions that took part (not ignored). Ignored positions have
            weight 0 and mask False.

    Example:
        >>> import torch, pseudosel
        >>> sel = pseudosel.select_reliable(torch.tensor([[0.97, 0.03], [0.6, 0.4]]),
        ...                                 method="threshold")
        >>> sel.mask
        tensor([ True, False])
        >>> sel.ratio()
        tensor(0.5000)
    """

    labels: Tensor
    weight: Tensor
    mask: Tensor
    score: Tensor
    valid: Tensor

    def hard(self) -> Selection:
        """The hard form of this selection: ``weight`` := ``mask`` (as the weight's dtype).

        Labels, mask, score and valid are unchanged, so the loss counts exactly the
        selected positions, each with weight 1 — for CSL the trusted set, for SoftMatch
        the positions at or above the mean. A no-op for selectors that are already hard
        (threshold, FlexMatch, FreeMatch, ...). The modules' and
        :func:`~pseudosel.select_reliable`'s ``weighting="hard"`` call it.

        Example:
            >>> import torch
            >>> from pseudosel import Selection
            >>> sel = Selection(torch.tensor([0, 1]), torch.tensor([1.0, 0.4]),
            ...                 torch.tensor([True, False]), torch.tensor([2.0, -0.5]),
            ...                 torch.tensor([True, True]))
            >>> sel.hard().weight
            tensor([1., 0.])
        """
        return Selection(
            self.labels, self.mask.to(self.weight.dtype), self.mask, self.score, self.valid
        )

    def ratio(self) -> Tensor:
        """Selected / valid positions, as a 0-dim float tensor (0 when nothing is valid).

        Computed on the device without a host synchronisation.
        """
        return self.mask.sum() / self.valid.sum().clamp_min(1)


def hard_selection(
    labels: Tensor, mask: Tensor, score: Tensor, valid: Tensor, *, all_valid: bool = False
) -> Selection:
    """The Selection of a hard selector: weight = ``mask`` as 0/1 in the dtype of ``score``,
    and ``score`` 0 at ignored positions. ``mask`` already excludes them. ``all_valid``:
    promise that ``valid`` is all True (``score`` is then taken as it is).

    Example:
        >>> import torch
        >>> from pseudosel.selection import hard_selection
        >>> valid = torch.tensor([True, True, False])
        >>> sel = hard_selection(torch.tensor([0, 1, 1]), torch.tensor([True, False, False]),
        ...                      torch.tensor([0.9, 0.6, 0.8]), valid)
        >>> sel.weight, sel.score
        (tensor([1., 0., 0.]), tensor([0.9000, 0.6000, 0.0000]))
    """
    # ``float()`` is ``to(torch.float32)`` without parsing the arguments (a small batch's
    # per-call cost)
    weight = mask.float() if score.dtype == torch.float32 else mask.to(score.dtype)
    if all_valid:  # nothing to zero
        return Selection(labels, weight, mask, score, valid)
    return Selection(labels, weight, mask, torch.where(valid, score, 0.0), valid)
