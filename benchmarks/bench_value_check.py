"""The host value check's smallest entry: the integer minimum against the float minimum.

``validate=True`` on an eager CPU checks plain input with three reductions read on the
host (:func:`pseudosel.validation.probability_vectors_ok_on_host`): the row sums' smallest
and largest, and the smallest entry. From ``INT_MINIMUM_FROM`` float32 or half-precision
entries the smallest entry is read through same-width integers. This times the whole check
both ways on the same fresh softmax outputs (each call on a batch the softmax has just
written, as in a training step), alternating the two in rounds, and prints the median
per call and their ratio.

Run::

    .venv/bin/python benchmarks/bench_value_check.py [--sizes 448x100 256x1000 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pseudosel.validation as validation
from pseudosel.tools.bench.sizes import parse_size

SIZES = ("448x10", "448x100", "256x1000", "8x21x128x128", "8x21x321x321")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}  # fmt: skip


def time_check(shape: tuple[int, ...], dtype: torch.dtype, rounds: int) -> tuple[float, float]:
    """Median seconds per check with the integer minimum and with the float minimum."""
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(shape, generator=generator).mul(3) for _ in range(4)]
    numel = logits[0].numel()
    calls = max(3, min(200, 2_000_000 // numel))
    settings = (validation.INT_MINIMUM_FROM, numel + 1)  # integer pass on, then off
    times: list[list[float]] = [[], []]
    before = validation.INT_MINIMUM_FROM
    try:
        for round_ in range(rounds + 1):
            for index, threshold in enumerate(settings):
                validation.INT_MINIMUM_FROM = threshold
                spent = 0.0
                for call in range(calls):
                    probs = logits[call % 4].softmax(1).to(dtype)
                    begin = time.perf_counter()
                    if not validation.probability_vectors_ok_on_host(probs):
                        raise AssertionError("softmax outputs failed the check")
                    spent += time.perf_counter() - begin
                if round_ > 0:  # the first round warms up
                    times[index].append(spent / calls)
    finally:
        validation.INT_MINIMUM_FROM = before
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=DTYPES)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    start = validation.INT_MINIMUM_FROM
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, integer minimum "
          f"from {start} entries, median of {args.rounds} rounds\n")  # fmt: skip
    print("| shape | dtype | check, integer minimum µs | check, float minimum µs | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for size in args.sizes:
        for name in args.dtypes:
            integer, floating = time_check(parse_size(size), DTYPES[name], args.rounds)
            print(f"| {size} | {name} | {integer * 1e6:.1f} | {floating * 1e6:.1f} | "
                  f"{integer / floating:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
