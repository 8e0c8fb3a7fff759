"""Deprecated: the engine of ``pseudosel bench`` lives in :mod:`pseudosel.tools.bench`
(warns once)."""

from pseudosel._deprecation import warn_once
from pseudosel.tools.bench import (
    DEFAULT_SIZES,
    LARGE_SIZES,
    QUICK_SIZES,
    Report,
    Row,
    allocator_settings,
    kernels,
    make_probs,
    markdown,
    median_seconds,
    parse_size,
    peak_extra_bytes,
    run,
    save,
    targets,
)

__all__ = [
    "DEFAULT_SIZES",
    "LARGE_SIZES",
    "QUICK_SIZES",
    "Report",
    "Row",
    "allocator_settings",
    "kernels",
    "make_probs",
    "markdown",
    "median_seconds",
    "parse_size",
    "peak_extra_bytes",
    "run",
    "save",
    "targets",
]

warn_once(
    "pseudosel.benchmark",
    "pseudosel.benchmark is deprecated and will be removed; use pseudosel.tools.bench",
)
