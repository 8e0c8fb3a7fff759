"""The compiled path of the stateless selectors: ``torch.compile(fullgraph=True)`` once, with
a dynamic batch size.

Compiled, the feature pass walks the class planes once in one fused kernel and the split
runs as a handful of fused reductions (benchmarks/RESULTS.md has the ratios to the
read-once floor). Use it through the modules' ``compile=True`` (:class:`~pseudosel.CSLSelector`,
:class:`~pseudosel.ThresholdSelector`) or wrap a functional selector with :func:`compiled`.

What happens when: the first call compiles for the input's dtype, class count, spatial
size and options (tens of seconds on a CPU, a few on a GPU); later calls with the same
ones reuse it. The batch size is marked dynamic, so a different N (a smaller last batch, a
DDP rank with fewer samples) does not recompile; N = 0 and N = 1 are specialised once each,
as torch.compile does for every size 0/1.

Inside the graph the bool fields (``mask``, and ``valid`` when the selector builds it) are
converted to the weight's float dtype and then to 0/1 uint8, and after the graph the bytes
are reinterpreted as bool (``Tensor.view(torch.bool)``, no copy): on a CPU, inductor stores
bool tensors several times slower than float ones, and of the forms measured the
float-then-byte store is the fastest (benchmarks/RESULTS.md). The results are the same
tensors either way.

The value check (``validate=True``, the default) is computed inside the graph, fused into
the selector's pass over the probabilities, but raised on after it: on a CPU a failed check
raises the same ``ValueError`` as eager mode (naming the first offending position), on a
GPU it is a device-side assertion (``RuntimeError``, no host synchronisation). A plain
``torch.compile`` of a selector keeps the assertion inside the graph, where inductor's CPU
code throws it from inside an OpenMP parallel region for some shapes, which terminates the
process (measured with torch 2.13: 448x100, 2x70x6x6) — on a CPU, compile through this
function (or the modules' ``compile=True``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pseudosel.inputs import prepare
from pseudosel.registry import spec_of_function
from pseudosel.selection import Selection
from pseudosel.validation import resolve_valid, values_hint, values_ok

__all__ = ["compiled", "raise_on_verdict", "shared_compiled"]


def compiled(selector: Callable[..., Selection]) -> Callable[..., Selection]:
    """``selector`` compiled with ``torch.compile(fullgraph=True)``, batch size dynamic.

    Args:
        selector: a functional selector taking ``probs`` first, e.g.
            :func:`pseudosel.functional.csl`. When it is a registered stateless selector
            that reads only ``probs`` (``csl``, ``threshold``, a plug-in's function:
            :func:`pseudosel.registry.spec_of_function`), its value check is computed
            inside the graph and raised after it (see the module docstring); any other
            selector keeps its own checks.

    Returns:
        A function with the same signature and results (up to rounding).

    Example:
        >>> import torch
        >>> import pseudosel.functional as F
        >>> from pseudosel.compiled import compiled
        >>> fast_csl = compiled(F.csl)  # compiles on its first call
    """

    checks_after = _checks_after_graph(selector)

    def graph(probs: Tensor, *args: Any, **kwargs: Any):
        verdict = None
        if checks_after:
            validate = kwargs.pop("validate", True)
            selection = selector(probs, *args, validate=False, **kwargs)
            if validate:  # the check's verdict as a tensor: raised on after the graph
                activation = kwargs.get("activation", "softmax")
                valid = kwargs.get("valid")
                resolved = resolve_valid(probs, valid, activation=activation)
                verdict = values_ok(probs, resolved, activation=activation, all_valid=valid is None)
        else:
            selection = selector(probs, *args, **kwargs)
        valid, as_float = selection.valid, selection.weight.dtype
        if kwargs.get("valid") is None:  # built inside the graph: stored, so as bytes too
            valid = _as_bytes(valid, as_float)
        return selection._replace(mask=_as_bytes(selection.mask, as_float), valid=valid), verdict

    compiled_graph = torch.compile(graph, fullgraph=True)

    @functools.wraps(selector)
    def call(probs: Tensor, *args: Any, **kwargs: Any) -> Selection:
        for tensor in (probs, kwargs.get("valid")):
            if isinstance(tensor, Tensor) and tensor.dim() > 0 and tensor.shape[0] > 1:
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        selection, verdict = compiled_graph(probs, *args, **kwargs)
        if verdict is not None:
            _raise_on(verdict, probs, kwargs.get("valid"), kwargs.get("activation", "softmax"))
        return selection._replace(mask=_as_bool(selection.mask), valid=_as_bool(selection.valid))

    return call


@functools.cache
def shared_compiled(selector: Callable[..., Selection]) -> Callable[..., Selection]:
    """:func:`compiled` of ``selector``, made once per process: what ``backend="compiled"``
    of :func:`pseudosel.functional.threshold` and :func:`pseudosel.functional.csl` calls.

    Example:
        >>> import pseudosel.functional as F
        >>> from pseudosel.compiled import shared_compiled
        >>> shared_compiled(F.threshold) is shared_compiled(F.threshold)
        True
    """
    return compiled(selector)


def raise_on_verdict(
    verdict: Tensor, probs: Tensor, valid: Tensor | None, activation: str = "softmax"
) -> None:
    """Raise on a value check's verdict computed apart from the check itself (inside a
    graph, or fused into a Triton kernel): on a CPU a failed check raises the eager
    ``ValueError`` naming the first offending position (the eager check runs again on
    ``probs`` and ``valid`` as the caller gave them); elsewhere the verdict becomes a
    device-side assertion (``RuntimeError``, no host synchronisation)."""
    _raise_on(verdict, probs, valid, activation)


def _checks_after_graph(selector: Callable[..., Selection]) -> bool:
    """Whether the value check can move out of the graph: ``selector`` is a registered
    stateless functional selector that reads nothing but ``probs`` (csl, threshold, a
    plug-in's function). Others (AdaMatch's labelled batch, unregistered functions) keep
    their own checks inside the graph."""
    spec = spec_of_function(selector)
    return spec is not None and not spec.stateful and not spec.needs


def _raise_on(verdict: Tensor, probs: Tensor, valid: Tensor | None, activation: str) -> None:
    """After the graph: on a CPU, a failed check raises the ValueError of eager mode (the
    eager check runs again to name the first offending position); elsewhere the verdict
    becomes a device-side assertion (RuntimeError, no host synchronisation)."""
    if verdict.device.type != "cpu":
        torch._assert_async(verdict, values_hint(probs, activation))
        return
    if bool(verdict):
        return
    prepare(probs, valid, activation=activation, validate=True)
    raise ValueError(values_hint(probs, activation))  # the eager check passed at the boundary


def _as_bytes(flags: Tensor, float_dtype: torch.dtype) -> Tensor:
    """A bool tensor as 0/1 uint8, by way of the float dtype (inside the graph)."""
    return flags.to(float_dtype).to(torch.uint8)


def _as_bool(flags: Tensor) -> Tensor:
    """0/1 uint8 from the graph reinterpreted as bool (no copy); bool passes through."""
    return flags.view(torch.bool) if flags.dtype == torch.uint8 else flags
