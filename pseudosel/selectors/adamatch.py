"""AdaMatch's relative threshold as a module. Maths: functional.adamatch."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pseudosel import functional as F
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.features import plain_confidence_and_labels
from pseudosel.functional.adamatch import adamatch_after_front_door
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector
from pseudosel.selectors._lane import all_positions, takes_lane
from pseudosel.validation import check_real

__all__ = ["AdaMatchSelector"]


class AdaMatchSelector(Selector):
    """AdaMatch's relative threshold τ · mean labeled confidence. Stateless.

    ``forward(probs, probs_labeled, valid=None, valid_labeled=None)``; with
    :func:`~pseudosel.select_reliable`, pass ``probs_labeled=`` as an option.

    Options shared by every selector module (``validate``, ``activation``, ``multilabel``,
    ``weighting``): :mod:`pseudosel.selectors._base`; a sigmoid output applies to both
    inputs.

    Args:
        tau: relative threshold in [0, 1]. Default 0.95.
        process_group: process group of the labelled mean (default: the default group,
            when torch.distributed is initialised).

    Shape:
        probs (N, K, *spatial), probs_labeled (M, K, *spatial'); valid and every Selection
        field (N, *spatial) — (N, L, *spatial) for multi-label sigmoid probs (N, L, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import AdaMatchSelector
        >>> labeled = torch.tensor([[0.9, 0.1], [0.7, 0.3]])
        >>> AdaMatchSelector()(torch.tensor([[0.78, 0.22]]), labeled).mask
        tensor([True])
    """

    shown = ("tau",)

    def __init__(
        self,
        tau: float = 0.95,
        *,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.process_group = process_group

    @no_grad
    def forward(
        self,
        probs: Tensor,
        probs_labeled: Tensor,
        valid: Tensor | None = None,
        valid_labeled: Tensor | None = None,
    ) -> Selection:
        """Select on ``probs`` with a cutoff relative to ``probs_labeled``."""
        if (
            valid is None
            and valid_labeled is None
            and probs_labeled is not None  # (missing: the general path names it)
            and takes_lane(self, probs, labeled=probs_labeled)
        ):
            selection = adamatch_after_front_door(
                probs, all_positions(probs), True,
                probs_labeled, None, True,
                self.tau, self.process_group, plain_confidence_and_labels(probs),
            )  # fmt: skip
            return self.finish(selection)
        selection = F.adamatch(
            probs,
            probs_labeled,
            self.tau,
            valid=valid,
            valid_labeled=valid_labeled,
            process_group=self.process_group,
            validate=self.validate,
            activation=self.activation,
            multilabel=self.multilabel,
        )
        return self.finish(selection)
