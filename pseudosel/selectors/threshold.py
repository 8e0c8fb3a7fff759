"""FixMatch's fixed threshold as a module. Maths: functional.threshold."""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor

from pseudosel import functional as F
from pseudosel._grad import no_grad
from pseudosel.compiled import compiled
from pseudosel.features import plain_confidence_and_labels
from pseudosel.functional.threshold import threshold_after_front_door
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, check_backend
from pseudosel.selectors._lane import all_positions, takes_lane
from pseudosel.validation import check_real

__all__ = ["ThresholdSelector"]


class ThresholdSelector(Selector):
    """Fixed confidence threshold (FixMatch): mask = max p >= tau. Stateless.

    Options shared by every selector module (``validate``, ``activation``, ``multilabel``,
    ``weighting``): :mod:`pseudosel.selectors._base`.

    Args:
        tau: threshold in [0, 1]. Default 0.95 (FixMatch, UniMatch).
        compile: run the compiled path (:mod:`pseudosel.compiled`): compiled on the first
            call, batch size dynamic. Default False (eager).
        backend: ``"auto"`` (default), ``"eager"``, ``"compiled"`` (the same as
            ``compile=True``) or ``"triton"`` (CUDA): see
            :func:`pseudosel.functional.threshold`. With ``compile=True`` it must be
            ``"auto"`` or ``"compiled"``.

    Shape:
        probs (N, K) or (N, K, *spatial); valid (N, *spatial); every Selection field
        (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import ThresholdSelector
        >>> selector = ThresholdSelector(tau=0.9)
        >>> selector(torch.tensor([[0.95, 0.05]])).mask
        tensor([True])
    """

    shown = ("tau", "compile", "backend")

    def __init__(
        self,
        tau: float = 0.95,
        *,
        compile: bool = False,
        backend: str = "auto",
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.backend = check_backend(backend, compile)
        self.compile = bool(compile) or self.backend == "compiled"
        if self.compile:
            self._select = compiled(F.threshold)
        else:
            self._select = functools.partial(F.threshold, backend=self.backend)

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select on ``probs``; see :func:`pseudosel.functional.threshold`."""
        # the plain lane runs the eager formula: not for the compiled or Triton paths
        plain = not self.compile and self.backend in ("auto", "eager")
        if valid is None and plain and takes_lane(self, probs):
            features = plain_confidence_and_labels(probs)
            valid = all_positions(probs)
            selection = threshold_after_front_door(probs, self.tau, valid, True, features)
            return self.finish(selection)
        selection = self._select(
            probs,
            self.tau,
            valid=valid,
            validate=self.validate,
            activation=self.activation,
            multilabel=self.multilabel,
        )
        return self.finish(selection)
