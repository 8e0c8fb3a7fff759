"""Micro-benchmark of the selection kernels against the floor, probs.max(dim=1).

Every selector must read each probability at least once, so its cost is reported as a ratio
to ``probs.max(dim=1)`` on the same tensor, measured in the same run. Value checks are off
(``validate=False``) unless a row says otherwise.

    python benchmarks/bench_selection.py [--sizes 8x21x321x321 64x21x32x32] [--repeats 21]
        [--out results/bench]

Writes ``bench_selection.json`` and ``bench_selection.md`` to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import torch

import pseudosel
import pseudosel.functional as F

DEFAULT_SIZES = ["448x10", "448x100", "256x1000", "8x21x321x321", "64x21x32x32"]


def parse_size(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.lower().split("x"))


def make_probs(shape: tuple[int, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    """Softmax of smooth-ish random logits: a spread of confidences, like a real model."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=gen) * 4
    return logits.softmax(1).to(device=device, dtype=dtype)


def median_seconds(fn: Callable[[], object], device: str, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` after ``warmup`` calls (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def candidates(probs: torch.Tensor, adaptive: bool) -> dict[str, Callable[[], object]]:
    """Kernels to time on ``probs``; adaptive selectors run one training step per call."""
    kernels: dict[str, Callable[[], object]] = {
        "floor: probs.max(dim=1)": lambda: probs.max(dim=1),
        "threshold": lambda: F.threshold(probs, validate=False),
        "threshold, validate=True": lambda: F.threshold(probs),
        "csl": lambda: F.csl(probs, validate=False),
        "csl, validate=True": lambda: F.csl(probs),
    }
    if not adaptive:
        return kernels
    k, device = probs.shape[1], probs.device
    if probs.dim() == 2:
        # per-sample curriculum over an unlabeled set of 50,000 (CIFAR-sized)
        flex = pseudosel.FlexMatchSelector(k, 50_000, validate=False).to(device)
        index = torch.randperm(50_000, device=device)[: probs.shape[0]]
        kernels["flexmatch step (per-sample)"] = lambda: flex(probs, index=index)
    else:
        flex = pseudosel.FlexMatchSelector(k, validate=False).to(device)
        kernels["flexmatch step (class-wise)"] = lambda: flex(probs)
    free = pseudosel.FreeMatchSelector(k, validate=False).to(device)
    free_q = pseudosel.FreeMatchSelector(k, use_quantile=True, validate=False).to(device)
    soft = pseudosel.SoftMatchSelector(k, validate=False).to(device)
    soft_pc = pseudosel.SoftMatchSelector(k, per_class=True, validate=False).to(device)
    dash = pseudosel.DashSelector(1.0, update_every=100, validate=False).to(device)
    u2pl = pseudosel.EntropySplitSelector(10_000, validate=False).to(device)
    align = pseudosel.DistributionAlignment(k, validate=False).to(device)
    ada = pseudosel.AdaMatchSelector(validate=False)
    labeled = probs[: max(1, probs.shape[0] // 7)]
    kernels.update(
        {
            "freematch step": lambda: free(probs),
            "freematch step (quantile)": lambda: free_q(probs),
            "softmatch step": lambda: soft(probs),
            "softmatch step (per class)": lambda: soft_pc(probs),
            "adamatch": lambda: ada(probs, labeled),
            "dash step": lambda: dash(probs),
            "u2pl entropy split step": lambda: u2pl(probs),
            "distribution alignment step": lambda: align(probs),
        }
    )
    return kernels


def run(
    sizes: Sequence[str], dtypes: Sequence[str], repeats: int, device: str, adaptive: bool
) -> dict:
    rows = []
    for size in sizes:
        shape = parse_size(size)
        for dtype_name in dtypes:
            probs = make_probs(shape, getattr(torch, dtype_name), device)
            timings = {
                name: median_seconds(fn, device, repeats)
                for name, fn in candidates(probs, adaptive).items()
            }
            floor = timings["floor: probs.max(dim=1)"]
            for name, seconds in timings.items():
                rows.append(
                    {
                        "shape": list(shape),
                        "dtype": dtype_name,
                        "kernel": name,
                        "median_ms": seconds * 1e3,
                        "ratio_to_floor": seconds / floor,
                        "gb_per_s": probs.numel() * probs.element_size() / seconds / 1e9,
                    }
                )
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.platform()}",
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "repeats": repeats,
        "rows": rows,
    }


def markdown(report: dict) -> str:
    lines = [
        f"{report['date']} · {report['device']} · {report['machine']} · torch {report['torch']}"
        f" · median of {report['repeats']}",
        "",
        "| shape | dtype | kernel | median ms | x floor | GB/s |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        shape = "x".join(map(str, row["shape"]))
        lines.append(
            f"| {shape} | {row['dtype']} | {row['kernel']} | {row['median_ms']:.2f} "
            f"| {row['ratio_to_floor']:.2f} | {row['gb_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument(
        "--adaptive", action="store_true", help="also time one step of each adaptive selector"
    )
    args = parser.parse_args(argv)
    report = run(args.sizes, args.dtypes, args.repeats, args.device, args.adaptive)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_selection.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (args.out / "bench_selection.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
