"""Dense Teacher's top share of positions as a module. Maths: functional.top_ratio."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pseudosel import functional as F
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector
from pseudosel.validation import check_real

__all__ = ["TopRatioSelector"]


class TopRatioSelector(Selector):
    """Keep the ``ratio`` share of the batch's valid positions with the highest confidence,
    weighted by it (Dense Teacher). Stateless: the share is counted over the batch and,
    under torch.distributed, over every rank.

    Options shared by every selector module (``validate``, ``activation``, ``multilabel``,
    ``weighting``): :mod:`pseudosel.selectors._base`.

    Args:
        ratio: the kept share in [0, 1]. Default 0.01 (Dense Teacher's ``RATIO``).
        process_group: process group of the global count and cut (default: the default
            group, when torch.distributed is initialised).

    Shape:
        probs (N, K) or (N, K, *spatial) — a detection batch's (N, K, M) box scores with
        ``validate=False``; valid and every Selection field (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import TopRatioSelector
        >>> selector = TopRatioSelector(ratio=0.5)
        >>> selector(torch.tensor([[0.9, 0.1], [0.6, 0.4]])).weight
        tensor([0.9000, 0.0000])
    """

    shown = ("ratio",)

    def __init__(
        self, ratio: float = 0.01, *, process_group: ProcessGroup | None = None, **shared: Any
    ) -> None:
        super().__init__(**shared)
        self.ratio = check_real("ratio", ratio, low=0.0, high=1.0)
        self.process_group = process_group

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select on ``probs``; see :func:`pseudosel.functional.top_ratio`."""
        selection = F.top_ratio(
            probs,
            self.ratio,
            valid=valid,
            process_group=self.process_group,
            validate=self.validate,
            activation=self.activation,
            multilabel=self.multilabel,
        )
        return self.finish(selection)
