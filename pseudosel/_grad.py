"""A lighter ``@torch.no_grad()`` for functions that call one another."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["no_grad"]

_Function = TypeVar("_Function", bound=Callable[..., Any])


def no_grad(function: _Function) -> _Function:
    """``@torch.no_grad()``, entered only where gradients are on.

    A selector module's forward calls its update and select stages, each a public function
    that must not build a graph when called on its own; nested ``torch.no_grad()``
    decorators each cost a context object and two grad-mode switches, more than a small
    batch's arithmetic. Inside an outer one, this wrapper only checks the grad mode; the
    outer one switches the mode off and back on directly in eager code, and enters
    ``torch.no_grad()`` while torch.compile traces.

    Example:
        >>> import torch
        >>> from pseudosel._grad import no_grad
        >>> double = no_grad(lambda x: x * 2)
        >>> double(torch.ones(1, requires_grad=True)).requires_grad
        False
    """

    @functools.wraps(function)
    def without_grad(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return function(*args, **kwargs)
        if torch.compiler.is_compiling():  # the form the compiler traces
            with torch.no_grad():
                return function(*args, **kwargs)
        # eager: the switch itself, without building a context object
        torch._C._set_grad_enabled(False)
        try:
            return function(*args, **kwargs)
        finally:
            torch._C._set_grad_enabled(True)

    return without_grad  # type: ignore[return-value]
