"""Efficient Teacher's dual thresholds as a module. Maths: functional.dual_threshold."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pseudosel import functional as F
from pseudosel._grad import no_grad
from pseudosel.functional.dual_threshold import check_dual_thresholds
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector

__all__ = ["DualThresholdSelector"]


class DualThresholdSelector(Selector):
    """Certain pseudo-labels (confidence >= ``high``) as the Selection; the uncertain ones
    (>= ``low``, not certain) from :meth:`uncertain` — Efficient Teacher's objectness-only
    boxes. Stateless.

    Options shared by every selector module (``validate``, ``activation``, ``multilabel``,
    ``weighting``): :mod:`pseudosel.selectors._base`.

    Args:
        low: the lowest confidence that is not dropped, in [0, 1], or a (K,) tensor per
            class. Default 0.1 (``ignore_thres_low``).
        high: the confidence of a certain pseudo-label, in [0, 1] or (K,). Default 0.6
            (``ignore_thres_high``).

    Shape:
        probs (N, K) or (N, K, *spatial) — a detection batch's (N, K, M) box scores with
        ``validate=False``; valid, every Selection field and the uncertain mask
        (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import DualThresholdSelector
        >>> selector = DualThresholdSelector(low=0.5, high=0.6)
        >>> certain = selector(torch.tensor([[0.9, 0.1], [0.55, 0.45], [0.5, 0.5]]))
        >>> certain.mask, selector.uncertain(certain)
        (tensor([ True, False, False]), tensor([False,  True,  True]))
    """

    shown = ("low", "high")

    def __init__(
        self, low: float | Tensor = 0.1, high: float | Tensor = 0.6, **shared: Any
    ) -> None:
        super().__init__(**shared)
        self.low, self.high = check_dual_thresholds(low, high)

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """The certain pseudo-labels; see :func:`pseudosel.functional.dual_threshold`."""
        selection = F.dual_threshold(
            probs,
            self.low,
            self.high,
            valid=valid,
            validate=self.validate,
            activation=self.activation,
            multilabel=self.multilabel,
        )
        return self.finish(selection)

    def uncertain(self, selection: Selection) -> Tensor:
        """The uncertain positions of a selection this module made (its ``low``)."""
        return F.uncertain_positions(selection, self.low)
