"""Micro-benchmark of the selection kernels against the floor, probs.max(dim=1).

    python benchmarks/bench_selection.py [--sizes ...] [--dtypes float32 bfloat16]
        [--repeats 21] [--large] [--quick] [--no-compile] [--out results/bench]

Same as ``pseudosel bench``, plus the reference-style baseline of ``reference_loop.py``
(the authors' structure), which is checked on each input against
``pseudosel.functional.csl``. Writes ``bench_selection.json`` and ``bench_selection.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_loop import baseline  # noqa: E402

from pseudosel.tools.cli import main as cli_main  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["bench", *args], extra=[baseline])


if __name__ == "__main__":
    sys.exit(main())
