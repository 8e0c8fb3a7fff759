"""Deprecated: ``pseudosel compare`` lives in :mod:`pseudosel.tools.compare` (warns once)."""

from pseudosel._deprecation import warn_once
from pseudosel.tools.compare import (
    DEFAULT_PASSES,
    DEFAULT_SELECTORS,
    PredictionFile,
    compare,
    feature_space_sample,
    parse_selector,
    table,
)
from pseudosel.tools.compare import make_runner as make_selector

__all__ = [
    "DEFAULT_PASSES",
    "DEFAULT_SELECTORS",
    "PredictionFile",
    "compare",
    "feature_space_sample",
    "make_selector",
    "parse_selector",
    "table",
]

warn_once(
    "pseudosel.compare",
    "pseudosel.compare is deprecated and will be removed; use pseudosel.tools.compare",
)
