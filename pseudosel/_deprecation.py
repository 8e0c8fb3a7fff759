"""Old public names and signatures kept as aliases that warn once (``FutureWarning``).

Every alias names what replaces it. One warning per alias and process: a training loop that
calls an old name every step is told once, not flooded.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "keyword_valid",
    "moved_module",
    "renamed",
    "renamed_keywords",
    "state_after_input",
    "warn_once",
]

_Function = TypeVar("_Function", bound=Callable[..., Any])
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Issue ``message`` as a FutureWarning the first time ``key`` is seen."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, FutureWarning, stacklevel=3)


def renamed(old: str, new: Callable[..., Any], new_name: str) -> Callable[..., Any]:
    """A deprecated alias ``old`` of the function ``new`` (called ``new_name``)."""

    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warn_once(old, f"{old} is deprecated and will be removed; use {new_name}")
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old.rsplit(".", 1)[-1]
    alias.__doc__ = f"Deprecated alias of :func:`{new_name}` (warns once)."
    return alias


def renamed_keywords(function: str, **renames: str) -> Callable[[_Function], _Function]:
    """Accept the old keyword ``old=`` as ``new=`` (``renames``: old → new), warning once.

    Passing both is a ``TypeError``."""

    def decorate(func: _Function) -> _Function:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{function}() got both {old}= (deprecated) and {new}=")
                    warn_once(
                        f"{function}:{old}",
                        f"{function}({old}=...) is deprecated and will be removed; use {new}=",
                    )
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def state_after_input(function: str, state_type: type) -> Callable[[_Function], _Function]:
    """Accept the old argument order ``(state, probs, valid, ...)`` of a stateful core whose
    signature is now ``(probs, state, *, valid=None, ...)``, warning once."""

    def decorate(func: _Function) -> _Function:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], state_type):
                warn_once(
                    f"{function}:order",
                    f"{function}(state, probs, valid) is deprecated and will be removed; "
                    f"call {function}(probs, state, valid=valid)",
                )
                state, probs, *rest = args
                if rest:
                    kwargs["valid"] = rest.pop(0)
                args = (probs, state, *rest)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def keyword_valid(function: str, position: int) -> Callable[[_Function], _Function]:
    """Accept ``valid`` passed positionally at ``position`` (the old signature), as the
    keyword it now is, warning once."""

    def decorate(func: _Function) -> _Function:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > position:
                warn_once(
                    f"{function}:valid",
                    f"passing valid positionally to {function} is deprecated and will be "
                    "removed; pass valid=",
                )
                if "valid" in kwargs:
                    raise TypeError(f"{function}() got valid both by position and by keyword")
                kwargs["valid"] = args[position]
                args = args[:position] + args[position + 1 :]
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def moved_module(
    old: str, new: str, namespace: dict[str, Any], aliases: dict[str, str] | None = None
) -> None:
    """Make the module ``old`` (its ``namespace``, ``globals()``) a deprecated alias of the
    module ``new``: the same public names (``new.__all__``), plus ``aliases`` (old name →
    name in ``new``); warns once when imported."""
    import importlib

    module = importlib.import_module(new)
    aliases = aliases or {}
    namespace.update({name: getattr(module, name) for name in module.__all__})
    namespace.update({old_name: getattr(module, name) for old_name, name in aliases.items()})
    namespace["__all__"] = [*module.__all__, *aliases]
    warn_once(old, f"{old} is deprecated and will be removed; use {new}")
