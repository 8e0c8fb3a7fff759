"""`Selection`: the one result type every selector returns."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["Selection"]


class Selection(NamedTuple):
    """Pseudo-labels chosen by a selector, one entry per position.

    A position is one sample for classification input (N, K) and one pixel for dense input
    (N, K, *spatial); every field has the position shape (N, *spatial). Being a NamedTuple of
    tensors, a Selection passes through ``torch.compile``, DDP and ``torch.utils._pytree`` as
    plain data.

    Attributes:
        labels: long — the pseudo-label of each position (the arg-max class, lowest index on
            ties). Defined at ignored positions too; their weight is 0.
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

    def ratio(self) -> Tensor:
        """Selected / valid positions, as a 0-dim float tensor (0 when nothing is valid).

        Computed on the device without a host synchronisation.
        """
        return self.mask.sum() / self.valid.sum().clamp_min(1)
