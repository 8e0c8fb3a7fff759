"""``pseudosel bench``: time the selection kernels against the read-once floor.

Every selector must read each probability at least once and reduce over the classes, so
each kernel is reported as a ratio to the floor ``probs.amax(dim=1)`` timed on the same
tensor in the same run, with the achieved bandwidth (input bytes read once / time) beside
the machine's own read bandwidth (``probs.sum()``), and the peak memory it allocates beyond
its input. ``probs.max(dim=1)`` — values and indices, the line users replace — is a row of
its own: on some CPUs it is 8–30x slower than reading the input once.

The selectors' rows come from the registry (:mod:`pseudosel.tools.bench.rows`): every
registered selector's declared :class:`~pseudosel.registry.BenchCase` entries, a plug-in's
included. How the rows are timed: :mod:`pseudosel.tools.bench.timing`; the report, its
targets and markdown: :mod:`pseudosel.tools.bench.report`.

Contention (``busy=True``, ``pseudosel bench --busy``): the same rows are timed again beside
a multi-threaded torch process (a small training loop) and a CPU-spinning process, and once
more there with one torch thread. Each row reports its slowdown beside the floor's.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Callable, Sequence
from datetime import date

import torch

from pseudosel.tools.bench.report import (
    FLOOR,
    READ_ROW,
    SCHEMA,
    Report,
    Row,
    markdown,
    save,
    targets,
)
from pseudosel.tools.bench.rows import kernels
from pseudosel.tools.bench.sizes import (
    DEFAULT_SIZES,
    LARGE_SIZES,
    QUICK_SIZES,
    make_probs,
    parse_size,
)
from pseudosel.tools.bench.timing import (
    allocator_settings,
    contention,
    median_seconds,
    one_thread,
    peak_extra_bytes,
)

__all__ = [
    "DEFAULT_SIZES",
    "LARGE_SIZES",
    "QUICK_SIZES",
    "KernelFactory",
    "Report",
    "Row",
    "allocator_settings",
    "kernels",
    "make_probs",
    "markdown",
    "median_seconds",
    "parse_size",
    "peak_extra_bytes",
    "run",
    "save",
    "targets",
]

#: an extra row factory: the probabilities → {row name: zero-argument callable}, or that and
#: whether its results were checked against pseudosel on this input
KernelFactory = Callable[[torch.Tensor], dict[str, Callable[[], object]]]


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
    selectors: Sequence[str] | None = None,
) -> Report:
    """Time every kernel on every (size, dtype); ``extra`` adds kernels (e.g. a baseline).

    Args:
        sizes: shapes such as ``"448x10"`` or ``"8x21x321x321"`` (:func:`parse_size`), all
            checked before any timing.
        dtypes: probability dtype names, e.g. ``["float32", "bfloat16"]``.
        repeats: timed calls per row (the median is reported). Default 21.
        device: ``"cpu"``, ``"cuda"``, ... Default None: CUDA when available.
        compiled, adaptive, selectors: which selector rows (:func:`kernels`).
        extra: factories of more rows; one may return a tuple ``(kernels, checked)``, where
            ``checked`` says whether its results were verified against
            ``pseudosel.functional.csl`` on that input.
        quick: recorded in the report (and one warm-up call instead of three).
        command: the command line, recorded in the report.
        busy: time every row again beside :func:`~pseudosel.tools.bench.timing.contention`,
            with all threads and with one.
        progress: a progress bar on stderr (tqdm, when installed).

    Returns:
        The :class:`Report`, with its rows and :func:`targets`.
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
            table = kernels(probs, compiled=compiled, adaptive=adaptive, selectors=selectors)
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
                with one_thread():
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
