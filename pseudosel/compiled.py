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
returned in the weight's float dtype and turned back into bool after the graph: on a CPU,
inductor stores bool tensors several times slower than float ones (measured at
8x21x321x321: the compiled threshold 2.7x the read-once floor with a bool mask, 1.4x with
a float one converted afterwards). The results are the same tensors either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pseudosel.selection import Selection

__all__ = ["compiled"]


def compiled(selector: Callable[..., Selection]) -> Callable[..., Selection]:
    """``selector`` compiled with ``torch.compile(fullgraph=True)``, batch size dynamic.

    Args:
        selector: a functional selector taking ``probs`` first, e.g.
            :func:`pseudosel.functional.csl`.

    Returns:
        A function with the same signature and results (up to rounding).

    Example:
        >>> import torch
        >>> import pseudosel.functional as F
        >>> from pseudosel.compiled import compiled
        >>> fast_csl = compiled(F.csl)  # compiles on its first call
    """

    def float_masks(probs: Tensor, *args: Any, **kwargs: Any) -> Selection:
        selection = selector(probs, *args, **kwargs)
        as_float = selection.weight.dtype
        valid = selection.valid
        if kwargs.get("valid") is None:  # built inside the graph: stored, so as float too
            valid = valid.to(as_float)
        return selection._replace(mask=selection.mask.to(as_float), valid=valid)

    compiled_selector = torch.compile(float_masks, fullgraph=True)

    @functools.wraps(selector)
    def call(probs: Tensor, *args: Any, **kwargs: Any) -> Selection:
        for tensor in (probs, kwargs.get("valid")):
            if isinstance(tensor, Tensor) and tensor.dim() > 0 and tensor.shape[0] > 1:
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        selection = compiled_selector(probs, *args, **kwargs)
        return selection._replace(mask=selection.mask.bool(), valid=selection.valid.bool())

    return call
