"""The ``pseudosel`` command line: ``pseudosel bench`` (kernel micro-benchmarks)."""

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


def main(argv: Sequence[str] | None = None, *, extra=()) -> int:
    """Entry point of the ``pseudosel`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="pseudosel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _bench_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(args, extra, argv)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
