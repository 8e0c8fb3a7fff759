"""How ``pseudosel bench`` measures: median wall time (CUDA events on a GPU), peak extra
memory, and the busy machine of ``--busy``.

Timing: warm-up calls (which also compile the ``torch.compile`` variants), then the median
of ``repeats`` calls — wall clock on CPU, CUDA events after a synchronisation on GPU.

Peak extra memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one call minus the
memory allocated before it. On CPU, which has no allocator statistics, one call runs under
``torch.profiler`` with ``profile_memory=True``: every allocation (an op's
``self_cpu_memory_usage`` > 0) and every free (a ``[memory]`` event < 0) is replayed in time
order, and the peak of the running total is the peak extra memory. Outputs count (they are
alive at the end of the call); the input does not.

Contention (``--busy``): a 2-thread torch training loop and a CPU-spinning process run beside
the timed calls (:func:`contention`).
"""

from __future__ import annotations

import contextlib
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

__all__ = [
    "allocator_settings",
    "contention",
    "median_seconds",
    "one_thread",
    "peak_extra_bytes",
    "synchronize",
]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
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
steps = 0
while True:
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    steps += 1
    if steps == 3:  # running: tell the benchmark
        print("running", flush=True)
"""
# How long the training load may take to import torch and run its first steps.
_START_TIMEOUT = 120.0
_SPINNER = "while True:\n    pass\n"


@contextlib.contextmanager
def contention():
    """Run a 2-thread torch training loop and a CPU-spinning process until the block ends.

    The block starts once the training loop has run its first steps (it says so on its
    stdout), not after a fixed wait: importing torch beside the spinner can take seconds,
    and rows timed before the load runs would look unaffected by it.

    Raises:
        RuntimeError: the training loop did not start within ``_START_TIMEOUT`` seconds.
    """
    training = subprocess.Popen(
        [sys.executable, "-c", _TRAINING_LOAD], stdout=subprocess.PIPE, text=True
    )
    procs = [training, subprocess.Popen([sys.executable, "-c", _SPINNER])]
    try:
        ready, _, _ = select.select([training.stdout], [], [], _START_TIMEOUT)
        if not ready or training.stdout.readline().strip() != "running":
            raise RuntimeError(
                f"the --busy training load did not start within {_START_TIMEOUT:.0f} s"
            )
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        training.stdout.close()


@contextlib.contextmanager
def one_thread():
    """Run the block with one torch thread (``--busy``'s second pass)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
