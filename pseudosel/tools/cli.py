"""The pseudosel command line.

  pseudosel compare PREDICTIONS   compare selectors on saved predictions and true labels
  pseudosel bench                 time the selection kernels against the floor probs.amax(dim=1)

Also runs as "python -m pseudosel". Both commands take --plugin MODULE (repeatable): a
module on the Python path that registers selectors when imported (pseudosel.register_selector),
loaded before the selector names are checked. Installed plug-ins (the pseudosel.selectors
entry-point group) load by themselves.

Exit status: 0 on success, 2 for a bad argument, a plug-in that cannot be imported or a bad
input file, 1 when a file cannot be written; errors go to stderr as one message.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

COMPARE_DESCRIPTION = """\
Compare pseudo-label selectors on saved predictions with their true labels: stream the file
through every selector, print coverage, precision, weighted precision, recall, AUROC and
mean weight, and write compare.json and PNG plots under --out.

Input: one .npz file (read without pickles) or .pt file (read with weights_only=True) that
maps these names to arrays (N samples, K classes, optional H x W positions):
  probs        float (N, K) or (N, K, H, W): probabilities along K, finite, in [0, 1],
               summing to 1 at every valid position
  logits       the same shape, raw scores: softmax over K is applied (store exactly one of
               probs and logits; pass --from-logits when logits were saved as probs)
  labels       integer (N) or (N, H, W): the true class, or --ignore-index where unknown
  valid        optional bool (N) or (N, H, W): False marks positions no selector sees
  ignore_mask  optional integer (N) or (N, H, W), instead of valid: the value
               --ignore-index marks ignored positions (it must fit the array's dtype)
Each batch is checked as it is read; a bad file stops with a message naming the key and the
first offending sample, and exit status 2.

Selectors: any registered name (built-in, installed plug-ins, and those of --plugin
modules), written NAME, NAME:VALUE (the selector's value option, e.g. threshold:0.9 sets
tau) or NAME:KEY=VALUE,KEY2=VALUE2 (any options; values read as int, float, True/False,
None or text). The options are tried on the selector before the file is read.

Stateful selectors (flexmatch, freematch, softmatch, corrmatch, adsh, precision_target and
stateful plug-ins) first make --passes - 1 warm-up passes over the file that only advance
their state; the last pass is measured and the table marks them with *. The passes do not
end a selector's own warm-up: a row marked ! was still in it when measured (FlexMatch: more
samples unused than any class has learnt, so its thresholds stay near 0). Stateless
selectors are measured on one pass. precision_target (experimental) needs held-out labels:
it reads the file's labels in the first warm-up pass by two-fold cross-fitting
(even-indexed samples calibrate the threshold applied to the odd ones and vice versa), so
it needs --passes >= 2. adamatch needs the labelled batch at every step, which the file
does not hold: it does not run here.

Examples:
  pseudosel compare predictions.npz --selectors threshold threshold:0.9 freematch csl
  pseudosel compare predictions.npz --plugin mysel --selectors mine threshold csl
"""


def _integer(option: str, example: int, *, positive: bool = False):
    """An argparse type: an int (> 0 with ``positive``), or an error with an example."""
    what = "a positive integer" if positive else "an integer"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (positive and value < 1):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; e.g. {option} {example}")
        return value

    return parse


def _size(text: str) -> str:
    """An argparse type for --sizes: the text, once it parses as a shape."""
    from pseudosel.tools.bench.sizes import parse_size

    try:
        parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}; e.g. --sizes 448x10 8x21x321x321") from None
    return text


def _device(text: str) -> str:
    """An argparse type for --device: a torch device string that this machine has."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a torch device; e.g. --device cpu or --device cuda:0"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not available here (torch.cuda.is_available() is False); "
            "e.g. --device cpu"
        )
    return text


def _plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (a dotted name on the Python path, e.g. set PYTHONPATH to its "
        "folder) before the selectors are read: it registers its selectors with "
        "pseudosel.register_selector (repeatable; see docs/plugins.md)",
    )


def _selector_names() -> str:
    """The registered selectors, for the --selectors help."""
    from pseudosel import available_selectors

    return ", ".join(available_selectors())


def _bench_parser(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="time the selection kernels against the read-once floor probs.amax(dim=1)",
        description="Time every selection kernel on the current device, as ratios to the "
        "floor probs.amax(dim=1) (read every probability once, reduce over classes) measured "
        "in the same run, beside probs.max(dim=1) and the read bandwidth of probs.sum(); "
        "write JSON and markdown.",
    )
    bench.add_argument(
        "--sizes",
        nargs="+",
        type=_size,
        default=None,
        help="shapes N x K [x H x W] like 448x10 or 8x21x321x321 (default: the standard set)",
    )
    bench.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=["float32", "bfloat16", "float16", "float64"],
        metavar="DTYPE",
        help="probability dtypes from float32, bfloat16, float16, float64 "
        "(default: float32 bfloat16)",
    )
    bench.add_argument(
        "--repeats",
        type=_integer("--repeats", 21, positive=True),
        default=21,
        help="timed calls (median)",
    )
    bench.add_argument(
        "--device", type=_device, default=None, help="cpu or cuda (default: cuda if present)"
    )
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
    bench.add_argument(
        "--busy",
        action="store_true",
        help="also time every row beside a 2-thread torch training loop and a CPU-spinning "
        "process (all threads, then one thread) and report each row's slowdown beside the "
        "floor's",
    )
    bench.add_argument(
        "--selectors",
        nargs="+",
        default=None,
        metavar="NAME",
        help="time only these registered selectors (beside the floor rows); from "
        f"{_selector_names()} or a plug-in's (default: every selector with declared bench "
        "cases, every plug-in, and the distribution alignment step)",
    )
    _plugin_option(bench)
    bench.add_argument(
        "--gmm",
        action="store_true",
        help="instead: Consistent-Teacher's GMM step for 80 classes x 100 scores, pseudosel's "
        "gmm_thresholds against the published per-class scikit-learn loop (needs "
        "scikit-learn)",
    )
    bench.add_argument(
        "--peers",
        action="store_true",
        help="instead: every selector USB also has beside semilearn 0.3.2's own hook for it, "
        "on the same batches, at USB's sizes 448x10, 448x100 and 64x10 (or --sizes), with "
        "pseudosel's defaults (validate=True); needs semilearn (the README's test command "
        "installs it)",
    )
    bench.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    bench.add_argument(
        "--no-adaptive",
        action="store_true",
        help="skip the adaptive selectors: those whose selection depends on more than the "
        "batch (state across steps, sample positions, the labelled batch or held-out labels) "
        "and the distribution alignment step",
    )
    bench.add_argument(
        "--out",
        type=Path,
        default=Path("results/bench"),
        help="folder for the JSON and markdown results (default: results/bench)",
    )


def _bench(args: argparse.Namespace, extra, argv: Sequence[str]) -> int:
    from pseudosel.tools import bench as benchmark

    if args.gmm:
        return _bench_gmm(args)
    if args.peers:
        return _bench_peers(args)
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
        busy=args.busy,
        command="pseudosel " + shlex.join(argv),
        selectors=args.selectors,
    )
    json_path, md_path = benchmark.save(report, args.out)
    print(benchmark.markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


def _bench_peers(args: argparse.Namespace) -> int:
    import json

    import torch

    from pseudosel.tools.bench import peers

    if args.device is not None and torch.device(args.device).type != "cpu":
        raise SystemExit("--peers times the CPU: USB's hooks move their state on every call")
    sizes = args.sizes or (["64x10"] if args.quick else list(peers.PEER_SIZES))
    try:
        report = peers.peer_report(sizes, rounds=3 if args.quick else 15)
    except ImportError as error:  # no semilearn: say how to install it, no traceback
        print(f"pseudosel bench: error: {error}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / "peers.json", args.out / "peers.md"
    json_path.write_text(json.dumps(peers.report_dict(report), indent=2) + "\n")
    table = peers.peer_markdown(report)
    md_path.write_text(table + "\n")
    print(table)
    print(f"wrote {json_path} and {md_path}")
    return 0


def _bench_gmm(args: argparse.Namespace) -> int:
    import json

    from pseudosel.tools.bench.gmm import gmm_markdown, gmm_report

    classes, scores = (8, 50) if args.quick else (80, 100)
    report = gmm_report(
        classes,
        scores,
        device=args.device,
        repeats=3 if args.quick else args.repeats,
        compiled=not args.no_compile,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / "gmm.json", args.out / "gmm.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    table = gmm_markdown(report)
    md_path.write_text(table + "\n")
    print(table)
    print(f"wrote {json_path} and {md_path}")
    return 0


def _compare_parser(sub) -> None:
    from pseudosel.tools.compare import DEFAULT_SELECTORS

    compare = sub.add_parser(
        "compare",
        help="compare selectors on a predictions file with true labels",
        description=COMPARE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument(
        "predictions",
        type=Path,
        help=".npz or .pt file with probs or logits, labels and optionally valid or ignore_mask",
    )
    compare.add_argument(
        "--selectors",
        nargs="+",
        default=DEFAULT_SELECTORS,
        metavar="SPEC",
        help=f"NAME, NAME:VALUE or NAME:KEY=VALUE,...; NAME from {_selector_names()} or a "
        f"plug-in's (default: {' '.join(DEFAULT_SELECTORS)})",
    )
    _plugin_option(compare)
    compare.add_argument(
        "--from-logits",
        action="store_true",
        help="the predictions are logits whatever their key: apply softmax over K",
    )
    compare.add_argument(
        "--out",
        type=Path,
        default=Path("results/compare"),
        help="folder for compare.json and the plots (default: results/compare)",
    )
    compare.add_argument(
        "--batch-size",
        type=_integer("--batch-size", 64, positive=True),
        default=64,
        help="samples per batch (memory is bounded by the batch)",
    )
    compare.add_argument(
        "--ignore-index",
        type=_integer("--ignore-index", 255),
        default=255,
        help="label (and ignore_mask) value of unknown / ignored positions (default: 255)",
    )
    compare.add_argument(
        "--passes",
        type=_integer("--passes", 3, positive=True),
        default=3,
        help="passes over the file for stateful selectors: the last is measured, the ones "
        "before only warm their state up (default: 3; 1 = cold start)",
    )
    compare.add_argument("--no-plots", action="store_true", help="write compare.json only")


def _compare(args: argparse.Namespace) -> int:
    from pseudosel.tools.compare import compare, table

    report = compare(
        args.predictions,
        selectors=args.selectors,
        out=args.out,
        batch_size=args.batch_size,
        ignore_index=args.ignore_index,
        from_logits=args.from_logits,
        plots=not args.no_plots,
        passes=args.passes,
    )
    print(table(report))
    print(f"wrote {args.out / 'compare.json'}" + ("" if args.no_plots else " and plots"))
    return 0


def main(argv: Sequence[str] | None = None, *, extra=()) -> int:
    """Entry point of the ``pseudosel`` script and ``python -m pseudosel``; returns the status.

    Argument errors exit through argparse (status 2, usage on stderr); a plug-in that cannot
    be imported or a bad input file returns 2 and an unwritable output returns 1, each with
    one message on stderr and no traceback. ``extra``: row factories added to ``bench``
    (:func:`pseudosel.tools.bench.run`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="pseudosel", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from pseudosel import __version__

    parser.add_argument("--version", action="version", version=f"pseudosel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _compare_parser(sub)
    _bench_parser(sub)
    args = parser.parse_args(argv)
    try:
        # the plug-ins first: the selector names are checked against the registry after
        from pseudosel.registry import load_plugin

        for module in args.plugin:
            load_plugin(module)
    except ValueError as error:
        print(f"pseudosel {args.command}: error: {error}", file=sys.stderr)
        return 2
    _check_selectors(sub.choices[args.command], args)
    try:
        if args.command == "compare":
            return _compare(args)
        return _bench(args, extra, argv)
    except ValueError as error:  # input errors; a TypeError is a bug and keeps its traceback
        print(f"pseudosel {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"pseudosel {args.command}: error: {error}", file=sys.stderr)
        return 1


def _check_selectors(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a bad --selectors entry as argparse refuses a bad argument (status 2, usage),
    once the plug-ins are loaded: specs for compare, names for bench."""
    if args.selectors is None:
        return
    if args.command == "compare":
        from pseudosel.tools.compare.specs import check_selector as check
    else:
        from pseudosel.registry import selector_spec as check
    for text in args.selectors:
        try:
            check(text)
        except ValueError as error:
            message = str(error)
            if args.command == "bench" and "e.g." not in message:
                message += "; e.g. --selectors threshold csl"
            parser.error(f"argument --selectors: {message}")


if __name__ == "__main__":
    sys.exit(main())
