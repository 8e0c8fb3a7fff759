"""Micro-benchmark engine for the selection kernels (``pseudosel bench``).

Every selector must read each probability at least once, so each kernel is reported as a
ratio to the floor ``probs.max(dim=1)`` timed on the same tensor in the same run, with the
achieved bandwidth (input bytes read once / time) and the peak memory it allocates beyond
its input.

Timing: warm-up calls (which also compile the ``torch.compile`` variants), then the median
of ``repeats`` calls — wall clock on CPU, CUDA events after a synchronisation on GPU.

Peak extra memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one call minus the
memory allocated before it. On CPU, which has no allocator statistics, one call runs under
``torch.profiler`` with ``profile_memory=True``: every allocation (an op's
``self_cpu_memory_usage`` > 0) and every free (a ``[memory]`` event < 0) is replayed in time
order, and the peak of the running total is the peak extra memory. Outputs count (they are
alive at the end of the call); the input does not.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import torch

import pseudosel
import pseudosel.functional as F

__all__ = [
    "DEFAULT_SIZES",
    "Row",
    "kernels",
    "make_probs",
    "markdown",
    "median_seconds",
    "peak_extra_bytes",
    "run",
    "targets",
]

SCHEMA = "pseudosel-bench/1"
FLOOR = "floor: probs.max(dim=1)"
DEFAULT_SIZES = ["448x10", "448x100", "256x1000", "8x21x321x321", "64x21x32x32"]
LARGE_SIZES = ["16x19x512x512", "16x21x512x512"]  # GPU / large-memory only
QUICK_SIZES = ["64x10", "4x5x16x16"]

# A kernel factory gets the probabilities and returns {name: zero-argument callable}.
KernelFactory = Callable[[torch.Tensor], dict[str, Callable[[], object]]]


def parse_size(text: str) -> tuple[int, ...]:
    """``"8x21x321x321"`` → (8, 21, 321, 321): N x K [x spatial], positive, K >= 2.

    Raises ``TypeError`` for a non-string and ``ValueError`` naming the text otherwise.
    """
    if not isinstance(text, str):
        raise TypeError(f"a size must be a string like '8x21x321x321', got {text!r}")
    parts = text.strip().lower().split("x")
    if len(parts) < 2 or not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(
            f"{text!r} is not a shape like 448x10 or 8x21x321x321 (N x K [x H x W]: positive "
            "integers joined by 'x')"
        )
    shape = tuple(int(part) for part in parts)
    if min(shape) < 1 or shape[1] < 2:
        raise ValueError(
            f"{text!r} is not a shape like 448x10 or 8x21x321x321: every size must be >= 1 "
            "and K (the second) >= 2"
        )
    return shape


def make_probs(shape: Sequence[int], dtype: torch.dtype, device: str | torch.device):
    """Softmax of smooth random logits (a spread of confidences, as from a real model)."""
    gen = torch.Generator().manual_seed(0)
    shape = tuple(shape)
    if len(shape) == 4:
        n, k, h, w = shape
        coarse = torch.randn(n, k, max(2, h // 8), max(2, w // 8), generator=gen)
        logits = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")
        logits = logits * 6 + 0.3 * torch.randn(shape, generator=gen)
    else:
        logits = torch.randn(shape, generator=gen) * 4
    return logits.softmax(1).to(device=device, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 3
) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory allocated during one call of ``fn`` beyond what existed before it."""
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del result
        return int(peak)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    del result
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage),
        key=lambda e: e.time_range.start,
    )
    running = peak = 0
    for event in events:
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return int(peak)


def kernels(probs: torch.Tensor, *, compiled: bool = True, adaptive: bool = True):
    """The kernels timed on ``probs``: floor, copy, threshold, CSL (eager, compiled, with
    value checks) and one training step of each adaptive selector."""
    table: dict[str, Callable[[], object]] = {
        FLOOR: lambda: probs.max(dim=1),
        "copy (read + write)": lambda: probs.clone(),
        "threshold": lambda: F.threshold(probs, validate=False),
        "threshold, validate=True": lambda: F.threshold(probs),
        "csl": lambda: F.csl(probs, validate=False),
        "csl, validate=True": lambda: F.csl(probs),
    }
    if compiled:
        csl_compiled = torch.compile(F.csl, fullgraph=True, dynamic=False)
        threshold_compiled = torch.compile(F.threshold, fullgraph=True, dynamic=False)
        table["threshold, compiled"] = lambda: threshold_compiled(probs, validate=False)
        table["csl, compiled"] = lambda: csl_compiled(probs, validate=False)
        table["csl, compiled, validate=True"] = lambda: csl_compiled(probs)
    if adaptive:
        table.update(_adaptive_kernels(probs))
    return table


def _adaptive_kernels(probs: torch.Tensor) -> dict[str, Callable[[], object]]:
    k, device = probs.shape[1], probs.device
    table: dict[str, Callable[[], object]] = {}
    if probs.dim() == 2:
        # the per-sample curriculum over an unlabeled set of 50,000 (CIFAR-sized)
        flex = pseudosel.FlexMatchSelector(k, 50_000, validate=False).to(device)
        index = torch.randperm(50_000, device=device)[: probs.shape[0]]
        table["flexmatch step (per-sample)"] = lambda: flex(probs, index=index)
    else:
        flex_classwise = pseudosel.FlexMatchSelector(k, validate=False).to(device)
        table["flexmatch step (class-wise)"] = lambda: flex_classwise(probs)
    modules = {
        "freematch step": pseudosel.FreeMatchSelector(k, validate=False),
        "freematch step (quantile)": pseudosel.FreeMatchSelector(
            k, use_quantile=True, validate=False
        ),
        "softmatch step": pseudosel.SoftMatchSelector(k, validate=False),
        "softmatch step (per class)": pseudosel.SoftMatchSelector(
            k, per_class=True, validate=False
        ),
        "dash step": pseudosel.DashSelector(1.0, update_every=100, validate=False),
        "u2pl entropy split step": pseudosel.EntropySplitSelector(10_000, validate=False),
        "distribution alignment step": pseudosel.DistributionAlignment(k, validate=False),
    }
    for name, module in modules.items():
        table[name] = _step(module.to(device), probs)
    adamatch = pseudosel.AdaMatchSelector(validate=False)
    labeled = probs[: max(1, probs.shape[0] // 7)]
    table["adamatch"] = lambda: adamatch(probs, labeled)
    return table


def _step(module: torch.nn.Module, probs: torch.Tensor) -> Callable[[], object]:
    return lambda: module(probs)


@dataclass
class Row:
    """One timed kernel on one input."""

    shape: list[int]
    dtype: str
    kernel: str
    median_ms: float
    ratio_to_floor: float
    gb_per_s: float
    peak_extra_bytes: int | None
    peak_extra_ratio: float | None
    checked: bool | None = None
    note: str = ""


@dataclass
class Report:
    schema: str
    date: str
    device: str
    machine: str
    torch: str
    python: str
    repeats: int
    quick: bool
    command: str
    rows: list[Row] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)


def run(
    sizes: Sequence[str],
    dtypes: Sequence[str],
    *,
    repeats: int = 21,
    device: str | None = None,
    compiled: bool = True,
    adaptive: bool = True,
    extra: Sequence[KernelFactory] = (),
    quick: bool = False,
    command: str = "",
) -> Report:
    """Time every kernel on every (size, dtype); ``extra`` adds kernels (e.g. a baseline).

    An extra factory may return a tuple ``(kernels, checked)``: ``checked`` says whether its
    results were verified against ``pseudosel.functional.csl`` on that input.
    """
    if isinstance(sizes, str):
        raise TypeError(f"sizes must be a list of shapes like ['448x10'], got {sizes!r}")
    shapes = [parse_size(size) for size in sizes]  # every size checked before any timing
    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    report = Report(
        schema=SCHEMA,
        date=date.today().isoformat(),
        device=torch.cuda.get_device_name(where) if where.type == "cuda" else "cpu",
        machine=f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.platform()}",
        torch=torch.__version__,
        python=sys.version.split()[0],
        repeats=repeats,
        quick=quick,
        command=command,
    )
    for shape in shapes:
        for dtype_name in dtypes:
            probs = make_probs(shape, getattr(torch, dtype_name), where)
            if compiled:
                # fresh compile caches per input, so the recompile limit is never hit
                torch._dynamo.reset()
            table = kernels(probs, compiled=compiled, adaptive=adaptive)
            checked: dict[str, bool] = {}
            for factory in extra:
                produced = factory(probs)
                if isinstance(produced, tuple):
                    produced, ok = produced
                    checked.update({name: ok for name in produced})
                table.update(produced)
            timings = {
                name: median_seconds(fn, where, repeats, warmup=1 if quick else 3)
                for name, fn in table.items()
            }
            floor = timings[FLOOR]
            input_bytes = probs.numel() * probs.element_size()
            for name, seconds in timings.items():
                peak = peak_extra_bytes(table[name], where)
                report.rows.append(
                    Row(
                        shape=list(shape),
                        dtype=dtype_name,
                        kernel=name,
                        median_ms=seconds * 1e3,
                        ratio_to_floor=seconds / floor,
                        gb_per_s=input_bytes / seconds / 1e9,
                        peak_extra_bytes=peak,
                        peak_extra_ratio=peak / input_bytes if input_bytes else None,
                        checked=checked.get(name),
                    )
                )
    report.targets = targets(report)
    return report


def _find(report: Report, shape: str, kernel: str, dtype: str = "float32") -> Row | None:
    wanted = list(parse_size(shape))
    for row in report.rows:
        if row.shape == wanted and row.kernel == kernel and row.dtype == dtype:
            return row
    return None


def targets(report: Report) -> list[dict]:
    """The issue-[6/8] CPU targets, evaluated on whatever rows this report has."""
    checks = []

    def add(name: str, value: float | None, limit: float, at_most: bool = True) -> None:
        if value is None:
            return
        met = value <= limit if at_most else value >= limit
        checks.append(
            {"name": name, "value": value, "limit": limit, "at_most": at_most, "met": met}
        )

    def ratio(shape: str, kernel: str) -> float | None:
        row = _find(report, shape, kernel)
        return None if row is None else row.ratio_to_floor

    def speedup(shape: str) -> float | None:
        ours, theirs = _find(report, shape, "csl"), _find(report, shape, "reference-style loop")
        return None if ours is None or theirs is None else theirs.median_ms / ours.median_ms

    big, small = "8x21x321x321", "64x21x32x32"
    add(f"csl eager at {big}, x floor", ratio(big, "csl"), 2.5)
    add(f"csl compiled at {big}, x floor", ratio(big, "csl, compiled"), 1.5)
    peak = _find(report, big, "csl")
    add(
        f"csl eager peak extra memory at {big}, x input",
        None if peak is None else peak.peak_extra_ratio,
        1.0,
    )
    add(f"csl compiled at {small}, x floor", ratio(small, "csl, compiled"), 1.0)
    add(
        f"csl eager speed-up over the reference-style loop at {small}",
        speedup(small),
        10.0,
        at_most=False,
    )
    add(
        f"csl eager speed-up over the reference-style loop at {big}",
        speedup(big),
        5.0,
        at_most=False,
    )
    for row in report.rows:
        if row.kernel == "threshold" and row.dtype == "float32":
            shape = "x".join(map(str, row.shape))
            add(f"threshold at {shape}, x floor", row.ratio_to_floor, 1.2)
    return checks


def markdown(report: Report) -> str:
    """The report as markdown: a header line, the table, the targets."""
    lines = [
        f"{report.date} · {report.device} · {report.machine} · torch {report.torch} · "
        f"median of {report.repeats}" + (" · quick" if report.quick else ""),
        "",
        "| shape | dtype | kernel | median ms | x floor | GB/s | peak extra MB | x input |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report.rows:
        shape = "x".join(map(str, row.shape))
        peak_mb = "" if row.peak_extra_bytes is None else f"{row.peak_extra_bytes / 1e6:.1f}"
        peak_ratio = "" if row.peak_extra_ratio is None else f"{row.peak_extra_ratio:.2f}"
        kernel = row.kernel + (" (checked)" if row.checked else "")
        lines.append(
            f"| {shape} | {row.dtype} | {kernel} | {row.median_ms:.3f} | "
            f"{row.ratio_to_floor:.2f} | {row.gb_per_s:.1f} | {peak_mb} | {peak_ratio} |"
        )
    if report.targets:
        lines += ["", "| target | measured | limit | met |", "| --- | ---: | ---: | --- |"]
        for target in report.targets:
            sign = "<=" if target["at_most"] else ">="
            lines.append(
                f"| {target['name']} | {target['value']:.2f} | {sign} {target['limit']} | "
                f"{'yes' if target['met'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def save(report: Report, out: Path) -> tuple[Path, Path]:
    """Write ``bench_selection.json`` and ``bench_selection.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "bench_selection.json", out / "bench_selection.md"
    json_path.write_text(json.dumps(asdict(report), indent=2))
    md_path.write_text(markdown(report))
    return json_path, md_path
