"""Deprecated: the command line lives in :mod:`pseudosel.tools.cli` (warns once)."""

import sys

from pseudosel._deprecation import warn_once
from pseudosel.tools.cli import main

__all__ = ["main"]

warn_once(
    "pseudosel.cli",
    "pseudosel.cli is deprecated and will be removed; use pseudosel.tools.cli",
)

if __name__ == "__main__":
    sys.exit(main())
