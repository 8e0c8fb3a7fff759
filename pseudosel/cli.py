"""The ``pseudosel`` command line.

- ``pseudosel compare PREDICTIONS`` — compare selectors on saved predictions and true labels;
- ``pseudosel bench`` — time the selection kernels against ``probs.max(dim=1)``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _bench_parser(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="time the selection kernels against probs.max(dim=1)",
        description="Time every selection kernel on the current device, as ratios to the "
        "floor probs.max(dim=1) measured in the same run; write JSON and markdown.",
    )
    bench.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        help="shapes like 448x10 or 8x21x321x321 (default: the standard set)",
    )
    bench.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=["float32", "bfloat16", "float16", "float64"],
    )
    bench.add_argument("--repeats", type=int, default=21, help="timed calls (median)")
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    bench.add_argument(
        "--large",
        action="store_true",
        help="add (16, 19/21, 512, 512): GPU or large-memory machines",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, float32, 3 repeats: checks the pipeline in seconds",
    )
    bench.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    bench.add_argument("--no-adaptive", action="store_true", help="skip the adaptive selectors")
    bench.add_argument("--out", type=Path, default=Path("results/bench"))


def _bench(args: argparse.Namespace, extra, argv: Sequence[str]) -> int:
    from pseudosel import benchmark

    sizes = args.sizes or (benchmark.QUICK_SIZES if args.quick else benchmark.DEFAULT_SIZES)
    if args.large and not args.quick:
        sizes = [*sizes, *benchmark.LARGE_SIZES]
    dtypes = ["float32"] if args.quick else args.dtypes
    report = benchmark.run(
        sizes,
        dtypes,
        repeats=3 if args.quick else args.repeats,
        device=args.device,
        compiled=not args.no_compile,
        adaptive=not args.no_adaptive,
        extra=extra,
        quick=args.quick,
        command="pseudosel " + shlex.join(argv),
    )
    json_path, md_path = benchmark.save(report, args.out)
    print(benchmark.markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


def _compare_parser(sub) -> None:
    from pseudosel.compare import DEFAULT_SELECTORS, SELECTOR_NAMES

    compare = sub.add_parser(
        "compare",
        help="compare selectors on a predictions file with true labels",
        description="Stream a .npz/.pt file of probs or logits (N, K[, H, W]) and true labels "
        "through every selector; print coverage, precision, weighted precision, recall, AUROC "
        "and mean weight, and write JSON and PNG plots.",
    )
    compare.add_argument("predictions", type=Path)
    compare.add_argument(
        "--selectors",
        nargs="+",
        default=DEFAULT_SELECTORS,
        help=f"from {', '.join(SELECTOR_NAMES)}; threshold:TAU sets tau "
        f"(default: {' '.join(DEFAULT_SELECTORS)})",
    )
    compare.add_argument("--out", type=Path, default=Path("results/compare"))
    compare.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="samples per batch (memory is bounded by the batch)",
    )
    compare.add_argument("--ignore-index", type=int, default=255)
    compare.add_argument("--no-plots", action="store_true")


def _compare(args: argparse.Namespace) -> int:
    from pseudosel.compare import compare, table

    report = compare(
        args.predictions,
        selectors=args.selectors,
        out=args.out,
        batch_size=args.batch_size,
        ignore_index=args.ignore_index,
        plots=not args.no_plots,
    )
    print(table(report))
    print(f"wrote {args.out / 'compare.json'}" + ("" if args.no_plots else " and plots"))
    return 0


def main(argv: Sequence[str] | None = None, *, extra=()) -> int:
    """Entry point of the ``pseudosel`` script. Input errors exit with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="pseudosel", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _compare_parser(sub)
    _bench_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            return _compare(args)
        return _bench(args, extra, argv)
    except ValueError as error:
        print(f"pseudosel {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
