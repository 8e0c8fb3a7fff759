"""Deprecated: the plots live in :mod:`pseudosel.tools.plots` (warns once)."""

from pseudosel._deprecation import warn_once
from pseudosel.tools.plots import (
    plot_coverage_precision,
    plot_curves,
    plot_feature_space,
    plot_reliability,
)

__all__ = [
    "plot_coverage_precision",
    "plot_curves",
    "plot_feature_space",
    "plot_reliability",
]

warn_once(
    "pseudosel.viz",
    "pseudosel.viz is deprecated and will be removed; use pseudosel.tools.plots",
)
