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
  and its selection (eager).

:func:`formulas_only` turns every fast path off, so that the readable formulas run
everywhere (the tests compare the two; a user can do the same when in doubt).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["compiling", "eager_cpu", "formulas_only"]

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
    return _ENABLED and tensor.device.type == "cpu" and not torch.compiler.is_compiling()


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
