"""A test guard that makes host synchronisation fail loudly, even on a CPU-only machine.

On a GPU, reading a tensor's value on the host (``bool(t)``, ``t.item()``, ``t.tolist()``,
``t.cpu()``, ``if t:`` ...) or running an op whose output *shape* depends on the data
(``t.nonzero()``, ``t[mask]``, ``torch.unique`` ...) waits for every queued kernel: a stall in
each training step. On a CPU those calls are free, so a CPU test suite cannot see them.
:func:`forbid_host_sync` makes them raise :class:`HostSyncError` (an ``AssertionError``) naming
the call, so a CPU test can prove that a code path would not synchronise on a GPU::

    with forbid_host_sync():
        stats.update(selection, target)  # any host read inside raises HostSyncError

What is caught (see ``GUARDED``): the Python conversions of a tensor (``__bool__``,
``__int__``, ``__float__``, ``__complex__``, ``__index__`` — so ``range(t)`` or
``torch.zeros(t)`` too), ``item``, ``tolist``, ``cpu``, ``numpy`` (hence ``np.asarray(t)``
and printing a tensor), the ops with data-dependent output shapes (``nonzero``,
``argwhere``, ``masked_select``, ``unique``, ``unique_consecutive``, ``bincount`` (it reads the
maximum on CUDA), one-argument ``torch.where``, ``repeat_interleave`` with tensor repeats and
no ``output_size``, indexing with a bool tensor ``t[mask]``) and the ops returning a Python
bool (``equal``, ``allclose``, ``is_nonzero``), both as ``torch.xxx`` and as ``Tensor.xxx``.

What is not caught: ``t.to("cpu")`` / ``copy_`` into a CPU tensor (on a CPU machine every
tensor is a CPU tensor, so they cannot be told from legitimate calls), ``t[mask] = value``,
and functions bound before the guard was entered (``from torch import nonzero``). Calls made
from C++ inside a torch op never pass through the patched Python attributes, except the
conversions, which go through the type slots.

The patches are global (the ``torch.Tensor`` class and the ``torch`` module) for the duration
of the ``with`` block and are undone on exit, also when the block raises; do not run
threads that use torch meanwhile. Keep asserts on tensors outside the block (``assert t.all()``
calls ``bool``). ``allow=`` exempts calls by their label, e.g.
``forbid_host_sync(allow={"torch.bincount"})``.

Example:
    >>> import torch
    >>> t = torch.tensor([1.0, 2.0])
    >>> with forbid_host_sync():
    ...     total = (t * 2).sum()  # device-side work is fine
    ...     t.sum().item()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    helpers.host_sync_guard.HostSyncError: host synchronisation: Tensor.item ...
    >>> float(total)  # outside the block everything works again
    6.0
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from pseudosel.kernels import formulas_only

__all__ = ["GUARDED", "HostSyncError", "forbid_host_sync"]


class HostSyncError(AssertionError):
    """A call inside :func:`forbid_host_sync` would read device data on the host."""


def _always(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return True


def _bool_index(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``t[index]`` where the index holds a bool/uint8 tensor (data-dependent shape)."""
    index = args[1] if len(args) > 1 else None
    parts = index if isinstance(index, tuple | list) else (index,)
    return any(
        isinstance(part, torch.Tensor) and part.dtype in (torch.bool, torch.uint8) for part in parts
    )


def _where_one_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``torch.where(cond)`` is ``nonzero``; the three-argument form is elementwise."""
    return len(args) + len(kwargs) == 1


def _repeat_unsized(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``repeat_interleave`` with tensor repeats and no ``output_size`` needs their sum."""
    if kwargs.get("output_size") is not None:
        return False
    if len(args) == 1 and "repeats" not in kwargs:  # torch.repeat_interleave(repeats)
        return True
    repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
    return isinstance(repeats, torch.Tensor)


# (owner, attribute) → when a call syncs. The label of an entry is "Tensor.attr" for a
# torch.Tensor attribute and "torch.attr" for a torch function.
_CONVERSIONS = ("__bool__", "__int__", "__float__", "__complex__", "__index__")
_READS = ("item", "tolist", "cpu", "numpy")
_SHAPE_FROM_DATA = (
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "bincount",
)
_PYTHON_BOOL = ("equal", "allclose", "is_nonzero")

GUARDED: dict[tuple[object, str], Callable[[tuple[Any, ...], dict[str, Any]], bool]] = {
    **{(torch.Tensor, name): _always for name in _CONVERSIONS + _READS},
    **{(owner, name): _always for owner in (torch.Tensor, torch) for name in _SHAPE_FROM_DATA},
    **{(owner, name): _always for owner in (torch.Tensor, torch) for name in _PYTHON_BOOL},
    (torch.Tensor, "repeat_interleave"): _repeat_unsized,
    (torch, "repeat_interleave"): _repeat_unsized,
    (torch, "where"): _where_one_arg,
    (torch.Tensor, "__getitem__"): _bool_index,
}


def _label(owner: object, name: str) -> str:
    return f"{'Tensor' if owner is torch.Tensor else 'torch'}.{name}"


def _guarded(label: str, original: Callable[..., Any], syncs: Callable[..., bool]) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        if syncs(args, kwargs):
            raise HostSyncError(
                f"host synchronisation: {label} was called inside forbid_host_sync() "
                "(on a GPU it would wait for the device)"
            )
        return original(*args, **kwargs)

    call.__name__ = label.rsplit(".", 1)[1]
    call.__qualname__ = label
    return call


@contextlib.contextmanager
def forbid_host_sync(*, allow: Iterable[str] = ()) -> Iterator[None]:
    """Within the block, calls that would synchronise a GPU with the host raise, and
    pseudosel runs the code a GPU runs (:func:`pseudosel.kernels.formulas_only`: no
    eager-CPU fast path).

    Args:
        allow: labels to leave alone, such as ``"torch.bincount"`` or ``"Tensor.cpu"``.

    Raises:
        HostSyncError: (an ``AssertionError``) at the first guarded call, naming it.
        ValueError: an ``allow`` label that the guard does not know.
    """
    allowed = set(allow)
    unknown = allowed - {_label(owner, name) for owner, name in GUARDED}
    if unknown:
        raise ValueError(f"allow has labels the guard does not know: {sorted(unknown)}")
    undo: list[Callable[[], None]] = []
    try:
        for (owner, name), syncs in GUARDED.items():
            label = _label(owner, name)
            if label in allowed:
                continue
            own = vars(owner)
            original = getattr(owner, name)
            if name in own:
                undo.append(
                    lambda owner=owner, name=name, value=own[name]: setattr(owner, name, value)
                )
            else:  # inherited (torch._C.TensorBase): removing the patch uncovers it again
                undo.append(lambda owner=owner, name=name: delattr(owner, name))
            setattr(owner, name, _guarded(label, original, syncs))
        # the path a GPU runs: the eager-CPU fast paths (pseudosel.kernels.eager_cpu) never
        # run there, and may read CPU tensors on the host, where that is free
        with formulas_only():
            yield
    finally:
        for restore in reversed(undo):
            restore()
