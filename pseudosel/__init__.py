"""pseudosel: pseudo-label selection for semi-supervised learning.

``select_reliable(probs)`` is a drop-in replacement for the fixed 0.95 confidence threshold
of FixMatch-, UniMatch- and USB-style training; ``pseudosel.functional`` holds the stateless
selectors and this package the ``nn.Module`` selectors.
"""

from pseudosel import features, functional, masking, registry, selectors
from pseudosel.functional.shrinkmatch import ShrunkClasses
from pseudosel.losses import (
    generalized_cross_entropy,
    shrunk_cross_entropy,
    weighted_binary_cross_entropy,
    weighted_cross_entropy,
)
from pseudosel.registry import available_selectors, register_selector
from pseudosel.registry import builtin as _builtin  # noqa: F401  (declares the built-ins)
from pseudosel.schedules import linear_rampup
from pseudosel.select import select_reliable
from pseudosel.selection import Selection
from pseudosel.selectors import *  # noqa: F403  (the selector modules: selectors.__all__)

__version__ = "0.1.0"

__all__ = [
    "Selection",
    "ShrunkClasses",
    "__version__",
    "available_selectors",
    "features",
    "functional",
    "generalized_cross_entropy",
    "linear_rampup",
    "masking",
    "register_selector",
    "registry",
    "select_reliable",
    "selectors",
    "shrunk_cross_entropy",
    "weighted_binary_cross_entropy",
    "weighted_cross_entropy",
]
__all__ += selectors.__all__
