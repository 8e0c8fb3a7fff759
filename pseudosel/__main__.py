"""``python -m pseudosel``: the ``pseudosel`` command line (see :mod:`pseudosel.tools.cli`)."""

from __future__ import annotations

import sys

from pseudosel.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
