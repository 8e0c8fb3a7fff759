"""Time per group of CSL's convex path (cvxpylayers) against the closed-form kernel.

    python benchmarks/bench_convex.py [--repeats 5]

The convex path is a reference, not the training path; this measures by how much.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import torch

import pseudosel.functional as F
from pseudosel.convex import solve_separation
from pseudosel.features import csl_features
from pseudosel.functional.separation import principal_axes, second_moments


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print("| groups B | what | total ms | ms per group |")
    print("| ---: | --- | ---: | ---: |")
    for groups in (1, 16):
        probs = torch.randn(groups, 21, 32, 32, generator=torch.Generator().manual_seed(0))
        probs = (probs * 4).softmax(1)
        c, s, _ = csl_features(probs)
        moments = second_moments(c.reshape(groups, -1), s.reshape(groups, -1), torch.float64)
        rows = {
            "2x2 eigen-split, closed form": lambda m=moments: principal_axes(m),
            "2x2 SDP, cvxpylayers (CLARABEL)": lambda m=moments: solve_separation(m),
            "csl(), closed form": lambda p=probs: F.csl(p),
            "csl(solver='cvxpy')": lambda p=probs: F.csl(p, solver="cvxpy"),
            "csl(boundary='max_margin'), experimental": lambda p=probs: F.csl(
                p, boundary="max_margin"
            ),
        }
        for name, fn in rows.items():
            seconds = median_seconds(fn, args.repeats)
            print(f"| {groups} | {name} | {seconds * 1e3:.3f} | {seconds * 1e3 / groups:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
