"""The plain lane of the selector modules: a small eager CPU batch straight to its formula.

At USB's sizes (64 to 448 samples, 10 to 100 classes) a training step's selection costs a
few dozen microseconds of arithmetic on a CPU, and the layers a module call passes through
on its way to the formula — the public functional stages, each with its own front door,
keyword shims and grad-mode wrapper, the shared arg-max context, the state tuples — cost
as much again (docs/performance.md, "Beside USB's own hooks"). A module whose call
qualifies skips them: it checks the values once and calls the formula cores its
functional stages call, in the same order; it writes its new state into its buffers where
the stages return new tensors to copy back (the EMAs through ``out=``, the queue's row in
place), keeps an alignment's fixed target term between calls while its buffer is unchanged
(:meth:`pseudosel.Alignment.lane_numerator`), and computes its scalar statistics —
SoftMatch's μ and σ², FreeMatch's τ, Dash's phase — on Python numbers rounded op by op as
the 0-dim tensor ops round them (:func:`~pseudosel.kernels.scalars.ema_on_host`). Outputs
and state are bit for bit those of the general path (tests/selectors/test_lane.py; a NaN,
from a state already NaN, is a NaN whose sign may differ). A call qualifies when

- ``probs`` (and a labelled batch, for the modules that take one) is a plain float32 or
  float64 (N, K) tensor with N >= 1 — K the module's class count when it has one — on the
  CPU, not requiring grad, with nothing ignored (no ``valid`` mask);
- the module reads softmax probabilities (``activation="softmax"``);
- the call is eager, one process (no default process group), under no torch function or
  dispatch mode, outside ``torch.func`` transforms and :func:`~pseudosel.kernels.formulas_only`;
  the module's state, when it has one, is plain CPU tensors as well (its values are read
  on the host);
- with ``validate``, the values pass the check (:func:`~pseudosel.validation.
  probability_vectors_ok_on_host`); a batch that fails it takes the general path, which
  raises the error that names the offending position.

Everything else — masks, dense maps, half precision, GPUs, DDP, torch.compile — takes the
general path as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from pseudosel import kernels
from pseudosel.distributed import is_distributed
from pseudosel.validation import probability_vectors_ok_on_host

__all__ = ["all_positions", "lane_closed", "takes_lane"]

_PLAIN_DTYPES = (torch.float32, torch.float64)
# False inside lane_closed(): a plain global, like kernels.formulas_only's switch
_OPEN = True


def takes_lane(
    module: torch.nn.Module, probs: object, *state: Tensor, labeled: object = None
) -> bool:
    """Whether ``module``'s call on ``probs`` (no ``valid`` mask: the caller checks that)
    with its state tensors ``state`` takes the plain lane (module docstring); runs the
    value check when the module validates. ``labeled``: the labelled batch of a module that
    takes one (no ``valid_labeled``), which must qualify as well, with the classes of
    ``probs``."""
    if not (_OPEN and module.activation == "softmax" and _plain_batch(probs, module.num_classes)):
        return False
    if labeled is not None and not _plain_batch(labeled, probs.shape[1]):
        return False
    if torch._C._len_torch_function_stack() or is_distributed():
        return False
    batches = (probs,) if labeled is None else (probs, labeled)
    if not kernels.read_on_host(*batches, *state):
        return False
    if not module.validate:
        return True
    if labeled is None:
        return probability_vectors_ok_on_host(probs)
    if labeled.dtype == probs.dtype:  # one check of both: the same verdict, row by row
        return probability_vectors_ok_on_host(torch.cat((probs, labeled)))
    return probability_vectors_ok_on_host(probs) and probability_vectors_ok_on_host(labeled)


def _plain_batch(probs: object, classes: int | None) -> bool:
    """A plain float32/float64 (N, K) tensor, N >= 1, K >= 2 (K = ``classes`` when given),
    that needs no detaching."""
    if type(probs) is not Tensor or probs.dtype not in _PLAIN_DTYPES or probs.dim() != 2:
        return False
    size, count = probs.shape
    if size == 0 or count < 2 or (classes is not None and count != classes):
        return False
    return not probs.requires_grad


def all_positions(probs: Tensor) -> Tensor:
    """The validity mask of a lane batch (N, K) — on the CPU, as lane batches are: every
    position, bool (N,)."""
    return torch.ones(probs.shape[0], dtype=torch.bool)


@contextlib.contextmanager
def lane_closed() -> Iterator[None]:
    """Within this block every module call takes the general path (for tests that compare
    the two, and for profiling the layers).

    Example:
        >>> import torch
        >>> from pseudosel import ThresholdSelector
        >>> from pseudosel.selectors._lane import lane_closed
        >>> probs = torch.tensor([[0.97, 0.03], [0.6, 0.4]])
        >>> with lane_closed():
        ...     general = ThresholdSelector()(probs)
        >>> torch.equal(general.mask, ThresholdSelector()(probs).mask)
        True
    """
    global _OPEN
    before, _OPEN = _OPEN, False
    try:
        yield
    finally:
        _OPEN = before
