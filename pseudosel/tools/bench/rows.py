"""The rows ``pseudosel bench`` times on one input, read from the selector registry.

Fixed rows first: the floor ``probs.amax(dim=1)``, ``probs.max(dim=1)`` (the line users
replace), the read bandwidth ``probs.sum()`` and a copy. Then, for every registered selector,
the rows its :class:`~pseudosel.registry.BenchCase` entries declare, on the layouts they and
the selector take:

- stateless: ``spec.function(probs, validate=False, **options)``; a case with ``validate``
  adds ``"<label>, validate=True"``, one with ``compiled`` adds ``"<label>, compiled"``
  through :func:`pseudosel.compiled.compiled` (and with ``validate`` also ``"<label>,
  compiled, validate=True"``); on CUDA, a case with ``compiled`` of a selector that takes
  ``backend=`` also adds ``"<label>, triton"`` (and ``"<label>, triton, validate=True"``):
  :mod:`pseudosel.kernels.triton`, when triton is installed;
- stateful: one module, ``spec.build(K, num_unlabeled=..., validate=False, **options)``,
  timed over its training steps ``spec.step(module, probs, None, **inputs)`` — with
  ``index`` (random positions in an unlabelled set of 50,000, CIFAR-sized) for a selector
  that needs it on classification input, and the first seventh of the batch as the
  labelled batch (``probs_labeled``) for one that needs that.

A selector without declared cases gets one row under its own name with its default options
when it is named (``--selectors``) or comes from a plug-in. "Adaptive" rows — dropped by
``adaptive=False`` (``--no-adaptive``) — are those of selectors whose selection depends on
more than the batch's probabilities: state carried across steps, or per-call inputs (sample
positions, the labelled batch, held-out labels); the distribution-alignment step (a transform
applied before a selector, not a selector) is one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from pseudosel.registry import BenchCase, SelectorSpec, available_selectors, selector_spec
from pseudosel.tools.bench.report import FLOOR, MAX_ROW, READ_ROW
from pseudosel.tools.modules import build_module

__all__ = ["ALIGNMENT_ROW", "NUM_UNLABELED", "kernels", "selector_rows"]

#: the unlabelled set's size for selectors that record per sample (CIFAR-sized)
NUM_UNLABELED = 50_000
ALIGNMENT_ROW = "distribution alignment step"

Kernel = Callable[[], object]


def kernels(
    probs: torch.Tensor,
    *,
    compiled: bool = True,
    adaptive: bool = True,
    selectors: Sequence[str] | None = None,
) -> dict[str, Kernel]:
    """The rows timed on ``probs`` (N, K, *spatial): row name → zero-argument callable.

    Args:
        probs: the input, on the device to time.
        compiled: add the ``torch.compile`` rows.
        adaptive: add the adaptive selectors' rows (module docstring).
        selectors: only these registered selectors' rows (after the fixed ones); default
            None: every selector with declared cases, every plug-in, and the
            distribution-alignment step.

    Example:
        >>> import torch
        >>> rows = kernels(torch.full((4, 3), 1 / 3), compiled=False, selectors=["threshold"])
        >>> list(rows)[-2:]
        ['threshold', 'threshold, validate=True']
    """
    table: dict[str, Kernel] = {
        FLOOR: lambda: probs.amax(dim=1),
        MAX_ROW: lambda: probs.max(dim=1),
        READ_ROW: lambda: probs.sum(),
        "copy (read + write)": lambda: probs.clone(),
    }
    names = available_selectors() if selectors is None else list(selectors)
    for name in names:
        spec = selector_spec(name)
        if _adaptive(spec) and not adaptive:
            continue
        cases = spec.bench
        if not cases and (selectors is not None or not spec.builtin):
            cases = (BenchCase(name),)
        for case in cases:
            table.update(selector_rows(spec, case, probs, compiled=compiled))
    if adaptive and selectors is None:
        from pseudosel import DistributionAlignment

        alignment = DistributionAlignment(probs.shape[1], validate=False).to(probs.device)
        table[ALIGNMENT_ROW] = lambda: alignment(probs)
    return table


def selector_rows(
    spec: SelectorSpec, case: BenchCase, probs: torch.Tensor, *, compiled: bool = True
) -> dict[str, Kernel]:
    """The rows of one :class:`~pseudosel.registry.BenchCase` of ``spec`` on ``probs``
    (none when the case or the selector does not take its layout)."""
    dense = probs.dim() > 2
    takes = spec.dense if dense else spec.classification
    if not takes or case.dense not in (None, dense):
        return {}
    options = dict(case.options)
    inputs = _inputs(spec, probs)
    if spec.stateful:
        num_unlabeled = _unlabeled(probs) if "index" in inputs else None
        module = build_module(spec, probs.shape[1], num_unlabeled, options).to(probs.device)
        return {case.label: lambda: spec.step(module, probs, None, **inputs)}
    function = spec.function
    rows = {case.label: lambda: function(probs, validate=False, **inputs, **options)}
    if case.validate:
        rows[f"{case.label}, validate=True"] = lambda: function(probs, **inputs, **options)
    if compiled and case.compiled:
        # the users' compiled path (compile=True on the modules): pseudosel.compiled
        from pseudosel.compiled import compiled as compile_selector

        fast = compile_selector(function)
        rows[f"{case.label}, compiled"] = lambda: fast(probs, validate=False, **inputs, **options)
        if case.validate:
            rows[f"{case.label}, compiled, validate=True"] = lambda: fast(
                probs, **inputs, **options
            )
    if case.compiled and _triton_runs(spec, probs):
        rows[f"{case.label}, triton"] = lambda: function(
            probs, validate=False, backend="triton", **inputs, **options
        )
        if case.validate:
            rows[f"{case.label}, triton, validate=True"] = lambda: function(
                probs, backend="triton", **inputs, **options
            )
    return rows


def _triton_runs(spec: SelectorSpec, probs: torch.Tensor) -> bool:
    """Whether ``backend="triton"`` rows apply: a CUDA input, triton installed, and a
    selector that takes ``backend=``."""
    if probs.device.type != "cuda" or "backend" not in (spec.option_names() or ()):
        return False
    from pseudosel.kernels import triton as triton_kernels

    return triton_kernels.unavailable_reason(probs.device) is None


def _adaptive(spec: SelectorSpec) -> bool:
    """Its selection depends on more than the batch's probabilities."""
    return spec.stateful or bool(spec.needs)


def _inputs(spec: SelectorSpec, probs: torch.Tensor) -> dict[str, Any]:
    """The per-call inputs a selector needs, made up for the benchmark."""
    inputs: dict[str, Any] = {}
    if "index" in spec.needs and probs.dim() == 2:  # a dense input has no sample records
        inputs["index"] = torch.randperm(_unlabeled(probs), device=probs.device)[: len(probs)]
    if "labeled" in spec.needs:
        inputs["probs_labeled"] = probs[: max(1, probs.shape[0] // 7)]
    return inputs


def _unlabeled(probs: torch.Tensor) -> int:
    """The unlabelled set's size: NUM_UNLABELED, or the batch's if larger."""
    return max(NUM_UNLABELED, probs.shape[0])
