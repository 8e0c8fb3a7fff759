"""A training step's arg-max computed once, for its update and its selection (eager).

A selector step that updates its statistics and then selects (FreeMatch, SoftMatch,
CorrMatch, FlexMatch) reads the arg-max twice, and on a CPU the arg-max is the dearest part
of both. Within :func:`shared_features`, :func:`pseudosel.features.confidence_and_labels`
of the same, unmodified tensor is computed once. Eager only: the context is not traceable
by torch.compile, whose compiler merges the duplicate work itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["cached", "shared_features", "with_shared_features"]

_Result = TypeVar("_Result")

# Within shared_features(): results by input (id and version of the tensor).
_SHARED: ContextVar[dict[tuple[int, int], tuple[Tensor, Any]] | None] = ContextVar(
    "pseudosel_shared_features", default=None
)


@contextlib.contextmanager
def shared_features() -> Iterator[None]:
    """Within this block, :func:`pseudosel.features.confidence_and_labels` of the same,
    unmodified tensor is computed once. It ignores the block while compiling and for
    inference tensors (made under ``torch.inference_mode``, they have no version counter
    to tell a modified tensor). Within the block every call returns the same result
    tensors: do not modify them in place (writes through ``.data`` or a NumPy view are not
    seen either).

    Example:
        >>> import torch
        >>> from pseudosel.features import confidence_and_labels
        >>> from pseudosel.kernels.shared import shared_features
        >>> probs = torch.tensor([[0.2, 0.5, 0.3]])
        >>> with shared_features():
        ...     first = confidence_and_labels(probs)
        ...     confidence_and_labels(probs)[1] is first[1]
        True
    """
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def with_shared_features(step: Callable[..., _Result], *args: Any) -> _Result:
    """``step(*args)`` inside :func:`shared_features` in eager mode, and directly while
    compiling (the context is not traceable, and the compiler merges the work itself)."""
    if torch.compiler.is_compiling():
        return step(*args)
    with shared_features():
        return step(*args)


def cached(probs: Tensor, compute: Callable[[Tensor], _Result]) -> _Result:
    """``compute(probs)``, computed once per unmodified ``probs`` within
    :func:`shared_features` (eager, non-inference tensors); directly elsewhere."""
    cache = None if torch.compiler.is_compiling() else _SHARED.get()
    if cache is None or probs.is_inference():  # inference tensors have no version counter
        return compute(probs)
    key = (id(probs), probs._version)  # the cached entry holds probs: its id stays unique
    if key not in cache:
        cache[key] = (probs, compute(probs))
    return cache[key][1]
