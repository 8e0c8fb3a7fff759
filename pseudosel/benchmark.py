"""Micro-benchmark engine for the selection kernels (``pseudosel bench``).

Every selector must read each probability at least once and reduce over the classes, so
each kernel is reported as a ratio to the floor ``probs.amax(dim=1)`` timed on the same
tensor in the same run, with the achieved bandwidth (input bytes read once / time) beside
the machine's own read bandwidth (``probs.sum()``), and the peak memory it allocates beyond
its input. ``probs.max(dim=1)`` — values and indices, the line users replace — is a row of
its own: on some CPUs it is 8–30x slower than reading the input once.

Contention (``busy=True``, ``pseudosel bench --busy``): the same rows are timed again beside
a multi-threaded torch process (a small training loop) and a CPU-spinning process, and once
more there with one torch thread. Each row reports its slowdown beside the floor's.

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

import contextlib
import json
import os
import platform
import statistics
import subprocess
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
    "allocator_settings",
    "Row",
    "kernels",
    "make_probs",
    "markdown",
    "median_seconds",
    "peak_extra_bytes",
    "run",
    "targets",
]

SCHEMA = "pseudosel-bench/2"
FLOOR = "floor: probs.amax(dim=1)"
MAX_ROW = "probs.max(dim=1) (the line users replace)"
READ_ROW = "read: probs.sum()"
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


@contextlib.contextmanager
def _quiet_native_output():
    """Silence what native code prints on stdout/stderr (the profiler's USDT chatter)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


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

    with (
        _quiet_native_output(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
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
    """The kernels timed on ``probs``: floor, the max(dim=1) line, read bandwidth, copy,
    threshold and CSL (eager, compiled, with value checks) and one training step of each
    adaptive selector."""
    table: dict[str, Callable[[], object]] = {
        FLOOR: lambda: probs.amax(dim=1),
        MAX_ROW: lambda: probs.max(dim=1),
        READ_ROW: lambda: probs.sum(),
        "copy (read + write)": lambda: probs.clone(),
        "threshold": lambda: F.threshold(probs, validate=False),
        "threshold, validate=True": lambda: F.threshold(probs),
        "csl": lambda: F.csl(probs, validate=False),
        "csl, validate=True": lambda: F.csl(probs),
    }
    if compiled:
        # the users' compiled path (compile=True on the modules): pseudosel.compiled
        from pseudosel.compiled import compiled as compile_selector

        csl_compiled = compile_selector(F.csl)
        threshold_compiled = compile_selector(F.threshold)
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
    """One timed kernel on one input. ``read_share``: achieved GB/s over the GB/s of
    ``probs.sum()`` on the same input. The ``busy_*`` fields exist in ``--busy`` runs:
    median ms beside the load (all threads, and one thread) and the slowdown over idle."""

    shape: list[int]
    dtype: str
    kernel: str
    median_ms: float
    ratio_to_floor: float
    gb_per_s: float
    read_share: float
    peak_extra_bytes: int | None
    peak_extra_ratio: float | None
    checked: bool | None = None
    busy_ms: float | None = None
    busy_one_thread_ms: float | None = None
    slowdown: float | None = None
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
    busy: bool = False
    allocator: str = ""
    rows: list[Row] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)


# Environment settings that decide whether memory freed by one call is reused by the next
# (glibc's malloc hands large freed buffers back to the OS; fresh pages cost a page fault
# each on first write, which on some machines costs more than reading the input).
_ALLOCATOR_SETTINGS = (
    "GLIBC_TUNABLES",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "THP_MEM_ALLOC_ENABLE",
    "LD_PRELOAD",
)


def allocator_settings() -> str:
    """The memory-reuse settings this process runs with, or "default" (see
    docs/performance.md: they move every row that allocates big outputs or temporaries)."""
    found = [f"{name}={os.environ[name]}" for name in _ALLOCATOR_SETTINGS if os.environ.get(name)]
    return " ".join(found) or "default"


# What --busy runs beside the benchmark: a small 2-thread torch training loop, and a spinner.
_TRAINING_LOAD = """
import torch
torch.set_num_threads(2)
net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))
while True:
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
"""
_SPINNER = "while True:\n    pass\n"


@contextlib.contextmanager
def contention():
    """Run a 2-thread torch training loop and a CPU-spinning process until the block ends."""
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
        for code in (_TRAINING_LOAD, _SPINNER)
    ]
    try:
        time.sleep(2.0)  # let the training loop import torch and start
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(total: int, quiet: bool):
    """A progress bar on stderr (tqdm when installed), or a no-op."""
    if quiet:
        return contextlib.nullcontext(None)
    try:
        from tqdm import tqdm
    except ImportError:
        return contextlib.nullcontext(None)
    return tqdm(total=total, unit="row", file=sys.stderr, leave=False, dynamic_ncols=True)


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
    busy: bool = False,
    progress: bool = True,
) -> Report:
    """Time every kernel on every (size, dtype); ``extra`` adds kernels (e.g. a baseline).

    An extra factory may return a tuple ``(kernels, checked)``: ``checked`` says whether its
    results were verified against ``pseudosel.functional.csl`` on that input. ``busy``
    times every row again beside :func:`contention`, with all threads and with one.
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
        busy=busy,
        allocator=allocator_settings(),
    )
    warmup = 1 if quick else 3
    # every input's compiled rows are compiled before any is timed (the --busy passes time
    # them all again): room for one graph per input and option set
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    tables = []
    for shape in shapes:
        for dtype_name in dtypes:
            probs = make_probs(shape, getattr(torch, dtype_name), where)
            table = kernels(probs, compiled=compiled, adaptive=adaptive)
            checked: dict[str, bool] = {}
            for factory in extra:
                produced = factory(probs)
                if isinstance(produced, tuple):
                    produced, ok = produced
                    checked.update({name: ok for name in produced})
                table.update(produced)
            tables.append((shape, dtype_name, probs, table, checked))
    total = sum(len(table) for *_, table, _ in tables) * (3 if busy else 1)
    with _progress(total, quiet=not progress) as bar:

        def time_all(table) -> dict[str, float]:
            timings = {}
            for name, fn in table.items():
                timings[name] = median_seconds(fn, where, repeats, warmup=warmup)
                if bar is not None:
                    bar.update()
            return timings

        idle = [time_all(table) for *_, table, _ in tables]
        busy_all: list[dict[str, float]] = []
        busy_one: list[dict[str, float]] = []
        if busy:
            with contention():
                busy_all = [time_all(table) for *_, table, _ in tables]
                with _threads(1):
                    busy_one = [time_all(table) for *_, table, _ in tables]
    for i, (shape, dtype_name, probs, table, checked) in enumerate(tables):
        timings = idle[i]
        floor, read = timings[FLOOR], timings[READ_ROW]
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
                    read_share=read / seconds,
                    peak_extra_bytes=peak,
                    peak_extra_ratio=peak / input_bytes if input_bytes else None,
                    checked=checked.get(name),
                    busy_ms=busy_all[i][name] * 1e3 if busy else None,
                    busy_one_thread_ms=busy_one[i][name] * 1e3 if busy else None,
                    slowdown=busy_all[i][name] / seconds if busy else None,
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


DENSE_SIZES = ("8x21x321x321", "64x21x32x32")
CLASSIFICATION_SIZES = ("448x10", "448x100", "256x1000")
ADAPTIVE_STEPS = (
    "flexmatch step (per-sample)",
    "flexmatch step (class-wise)",
    "freematch step",
    "freematch step (quantile)",
    "softmatch step",
    "softmatch step (per class)",
    "dash step",
    "u2pl entropy split step",
    "distribution alignment step",
    "adamatch",
)


def targets(report: Report) -> list[dict]:
    """The CPU targets of issue [2/6], evaluated on whatever rows this report has (float32).

    Ratios are to the floor ``probs.amax(dim=1)`` of the same run."""
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

    def validate_cost(shape: str, kernel: str) -> float | None:
        plain, checked = ratio(shape, kernel), ratio(shape, f"{kernel}, validate=True")
        return None if plain is None or checked is None else checked - plain

    for shape in DENSE_SIZES:
        add(f"csl compiled at {shape}, x floor", ratio(shape, "csl, compiled"), 1.5)
        add(f"csl eager at {shape}, x floor", ratio(shape, "csl"), 5.0)
        add(f"threshold compiled at {shape}, x floor", ratio(shape, "threshold, compiled"), 1.2)
        add(f"threshold eager at {shape}, x floor", ratio(shape, "threshold"), 2.0)
        for step in ADAPTIVE_STEPS:
            add(f"{step} eager at {shape}, x floor", ratio(shape, step), 5.0)
        for kernel in ("csl", "threshold"):
            add(
                f"{kernel} validate=True extra at {shape}, x floor",
                validate_cost(shape, kernel),
                1.0,
            )
        peak = _find(report, shape, "csl")
        add(
            f"csl eager peak extra memory at {shape}, x input",
            None if peak is None else peak.peak_extra_ratio,
            0.5,
        )
        add(
            f"csl eager speed-up over the reference-style loop at {shape}",
            speedup(shape),
            10.0,
            at_most=False,
        )
    for shape in CLASSIFICATION_SIZES:
        add(f"csl eager at {shape}, x floor", ratio(shape, "csl"), 30.0)
        add(f"threshold eager at {shape}, x floor", ratio(shape, "threshold"), 3.0)
    if report.busy:
        floors = {
            (tuple(r.shape), r.dtype): r for r in report.rows if r.kernel == FLOOR and r.slowdown
        }
        for row in report.rows:
            floor = floors.get((tuple(row.shape), row.dtype))
            if row.dtype != "float32" or floor is None or row.kernel in (FLOOR, READ_ROW):
                continue
            shape = "x".join(map(str, row.shape))
            add(
                f"busy: {row.kernel} at {shape}, slowdown / floor's slowdown",
                row.slowdown / floor.slowdown,
                1.5,
            )
            add(
                f"busy: {row.kernel} at {shape}, all threads / one thread",
                row.busy_ms / row.busy_one_thread_ms,
                1.0,
            )
    return checks


def markdown(report: Report) -> str:
    """The report as markdown: a header line, the table, the targets."""
    lines = [
        f"{report.date} · {report.device} · {report.machine} · torch {report.torch} · "
        f"median of {report.repeats} · allocator: {report.allocator or 'default'}"
        + (" · quick" if report.quick else ""),
        "",
    ]
    header = (
        "| shape | dtype | kernel | median ms | x floor | GB/s | x read GB/s | "
        "peak extra MB | x input |"
    )
    rule = "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    if report.busy:
        header += " busy ms | slowdown | floor's slowdown | busy, 1 thread ms |"
        rule += " ---: | ---: | ---: | ---: |"
    lines += [header, rule]
    floors = {(tuple(r.shape), r.dtype): r for r in report.rows if r.kernel == FLOOR}
    for row in report.rows:
        shape = "x".join(map(str, row.shape))
        peak_mb = "" if row.peak_extra_bytes is None else f"{row.peak_extra_bytes / 1e6:.1f}"
        peak_ratio = "" if row.peak_extra_ratio is None else f"{row.peak_extra_ratio:.2f}"
        kernel = row.kernel + (" (checked)" if row.checked else "")
        line = (
            f"| {shape} | {row.dtype} | {kernel} | {row.median_ms:.3f} | "
            f"{row.ratio_to_floor:.2f} | {row.gb_per_s:.1f} | {row.read_share:.2f} | "
            f"{peak_mb} | {peak_ratio} |"
        )
        if report.busy and row.busy_ms is not None:
            floor = floors[(tuple(row.shape), row.dtype)]
            line += (
                f" {row.busy_ms:.3f} | {row.slowdown:.2f} | {floor.slowdown:.2f} | "
                f"{row.busy_one_thread_ms:.3f} |"
            )
        lines.append(line)
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
