"""Stateless selectors: ``pseudosel.functional`` is to ``pseudosel`` what
``torch.nn.functional`` is to ``torch.nn``. Each function takes probabilities
(N, K, *spatial) and returns a :class:`~pseudosel.Selection`."""

from pseudosel.functional.csl import csl
from pseudosel.functional.threshold import threshold

__all__ = ["csl", "threshold"]
