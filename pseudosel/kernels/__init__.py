"""Fast paths of pseudosel's formulas, kept apart from the readable formulas themselves.

Every formula is written once, readably, where a reader checks it against its paper
(:mod:`pseudosel.features`, :mod:`pseudosel.functional`). This subpackage holds the faster
ways to compute the same results, each tested equal to its formula
(tests/kernels/): the formula's module asks :func:`eager_cpu` or :func:`compiling` whether
a fast path applies, calls it when it does, and otherwise computes the formula as written —
which is what runs on a GPU in eager mode and on the ``meta`` device.

- :mod:`pseudosel.kernels.blocks`: how eager CPU code walks its input in cache-sized
  blocks, with one reused scratch buffer per call;
- :mod:`pseudosel.kernels.cpu`: the blocked eager CPU passes (arg-max, entropy, CSL's
  features, masked class sums, Dash's soft loss);
- :mod:`pseudosel.kernels.planes`: the passes written for ``torch.compile``, which walk the
  class planes one by one so that the compiler fuses them into one kernel;
- :mod:`pseudosel.kernels.split`: CSL's per-group passes (moments, assignment, cluster
  statistics, weights), blocked for eager CPU and fused under ``torch.compile``;
- :mod:`pseudosel.kernels.shared`: a training step's arg-max computed once for its update
  and its selection (eager);
- :mod:`pseudosel.kernels.scalars`: Python numbers as cached 0-dim operands on an eager
  CPU (a small batch's ops without a tensor allocation per number);
- :mod:`pseudosel.kernels.triton`: Triton kernels for CUDA tensors (the feature pass with
  the threshold selection and the value check fused in), chosen by ``backend="triton"``
  (:func:`resolve_backend`); imported only when used.

:func:`formulas_only` turns every fast path off, so that the readable formulas run
everywhere (the tests compare the two; a user can do the same when in doubt).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from pseudosel.distributed import is_distributed

__all__ = [
    "BACKENDS",
    "MEASURED_FASTEST",
    "compiling",
    "counted_plainly",
    "eager_cpu",
    "formulas_only",
    "read_on_host",
    "resolve_backend",
]

#: the values of the ``backend=`` option of :func:`pseudosel.functional.threshold` and
#: :func:`pseudosel.functional.csl` (and their modules)
BACKENDS = ("auto", "eager", "compiled", "triton")
#: what ``backend="auto"`` picks on CUDA tensors, per selector: the path measured fastest by
#: the GPU run (benchmarks/gpu.sh, docs/performance.md). Empty until a GPU has measured
#: it: "auto" then stays on the eager path (or the compiled one, for a module built with
#: ``compile=True``).
MEASURED_FASTEST: dict[str, str] = {}

# False inside formulas_only(): a plain global, which torch.compile guards on (a context
# variable would break its graph)
_ENABLED = True


def eager_cpu(tensor: Tensor) -> bool:
    """Whether the blocked eager CPU kernels apply to ``tensor``: eager mode, on the CPU.

    On a CPU, reading the input from memory and writing fresh temporaries cost more than
    the arithmetic; the blocked kernels keep their temporaries in cache-sized, reused
    buffers. On a GPU the formulas' own ops are already the fast form.

    Example:
        >>> import torch
        >>> from pseudosel.kernels import eager_cpu, formulas_only
        >>> eager_cpu(torch.zeros(2)), eager_cpu(torch.zeros(2, device="meta"))
        (True, False)
        >>> with formulas_only():
        ...     eager_cpu(torch.zeros(2))
        False
    """
    # ``is_cpu`` rather than ``device.type``: it builds no device object
    return _ENABLED and tensor.is_cpu and not torch.compiler.is_compiling()


def counted_plainly(valid: Tensor, all_valid: bool) -> bool:
    """Whether a statistic over the positions may sum and count them plainly: nothing
    ignored (``all_valid``), at least one position, one process (nothing to all-reduce),
    eager CPU — a per-call saving for small batches. On CPUs a sum divided by the count
    as a number rounds as one divided by the count as a tensor (tests/test_plain_input.py);
    elsewhere the general path runs (CUDA divides by a number as by its reciprocal, and
    the plain histogram, ``bincount``, reads the device there).

    Example:
        >>> import torch
        >>> from pseudosel.kernels import counted_plainly
        >>> counted_plainly(torch.ones(3, dtype=torch.bool), True)
        True
    """
    return all_valid and eager_cpu(valid) and valid.numel() > 0 and not is_distributed()


def read_on_host(*tensors: Tensor) -> bool:
    """Whether ``tensors`` may be read as Python numbers at no cost: plain eager CPU tensors
    (no device to synchronise), none of them inside a ``torch.func`` transform (``vmap``,
    ``grad``) or under a dispatch mode such as fake tensors' (their values cannot be read
    there).

    Example:
        >>> import torch
        >>> from pseudosel.kernels import read_on_host
        >>> read_on_host(torch.zeros(2)), read_on_host(torch.zeros(2, device="meta"))
        (True, False)
    """
    # not while compiling, asked before the dispatch stack (a graph break under fullgraph)
    if not _ENABLED or torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return False
    for tensor in tensors:  # a loop, not generators: selector modules ask on every call
        if type(tensor) is not Tensor or not tensor.is_cpu:
            return False
        if torch._C._functorch.is_functorch_wrapped_tensor(tensor):
            return False
    return True


def compiling() -> bool:
    """Whether torch.compile is tracing: its kernels read each probability once in one
    fused pass over the class planes, where the formulas' reductions over dim 1 and
    boolean temporaries compile to several passes (the one compile guard of a formula).

    Example:
        >>> from pseudosel.kernels import compiling
        >>> compiling()  # eager
        False
    """
    return _ENABLED and torch.compiler.is_compiling()


@contextlib.contextmanager
def formulas_only() -> Iterator[None]:
    """Within this block every formula runs as written: no fast path is taken.

    Example:
        >>> import torch
        >>> from pseudosel import functional as F
        >>> from pseudosel.kernels import formulas_only
        >>> probs = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(0)).softmax(1)
        >>> with formulas_only():  # the readable formulas, not the blocked CPU kernels
        ...     readable = F.csl(probs)
        >>> torch.equal(readable.mask, F.csl(probs).mask)
        True
    """
    global _ENABLED
    before, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = before


def resolve_backend(selector: str, backend: object, probs: object) -> str:
    """The path a selector call takes: ``"eager"``, ``"compiled"`` or ``"triton"``.

    ``backend="auto"`` (the default) takes :data:`MEASURED_FASTEST`'s entry for
    ``selector`` on CUDA tensors and ``"eager"`` otherwise; while torch.compile traces,
    every backend but ``"triton"`` is ``"eager"`` (the call is already in a graph).

    Raises:
        ValueError: an unknown backend; ``"triton"`` where it cannot run (not a CUDA tensor
            and not ``TRITON_INTERPRET=1``, or under torch.compile).
        ImportError: ``"triton"`` without triton installed.

    Example:
        >>> import torch
        >>> from pseudosel.kernels import resolve_backend
        >>> resolve_backend("threshold", "auto", torch.zeros(2, 3))
        'eager'
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        options = ", ".join(repr(name) for name in BACKENDS)  # as validation.check_choice
        raise ValueError(f"backend must be one of {options}, got {backend!r}")
    if backend == "triton":
        if torch.compiler.is_compiling():
            raise ValueError(
                'backend="triton" launches its own kernels and does not run inside '
                'torch.compile; use backend="compiled" (or "auto") there'
            )
        from pseudosel.kernels import triton as triton_kernels

        triton_kernels.require(_device_of(probs))
        return "triton"
    if torch.compiler.is_compiling():
        return "eager"
    if backend == "auto":
        if not (isinstance(probs, Tensor) and probs.is_cuda):
            return "eager"
        choice = MEASURED_FASTEST.get(selector, "eager")
        if choice == "triton":
            from pseudosel.kernels import triton as triton_kernels

            ready = triton_kernels.unavailable_reason(_device_of(probs)) is None
            return "triton" if ready else "eager"
        return choice
    return backend


def _device_of(probs: object) -> torch.device:
    """The device of ``probs`` (a non-tensor is refused later, by the front door)."""
    return probs.device if isinstance(probs, Tensor) else torch.device("cpu")
