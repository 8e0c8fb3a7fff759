"""Queue-based distribution alignment (USB's DistAlignQueueHook, used by SimMatch and CoMatch).

p ← normalise(p · (mean(Q_target) + 1e-6) / (mean(Q_model) + 1e-6)), where Q_model is a
ring buffer of the last L batch means of the unlabelled predictions and Q_target holds L
rows of the target: uniform, a given distribution, or (``target="model"``) a ring buffer
of the last L labelled batch means. Both queues start as USB's do — Q_model all zeros,
the learned Q_target all zeros — and their mean is over all L rows, zero rows included
(until the queue has wrapped, the mean is scaled down; the scale cancels in the
normalisation except for the 1e-6). A training step writes the batch means first, then
aligns (USB's order). Means are over valid positions, global under torch.distributed
(sums and counts all-reduced, equal to USB's all-gathered mean on equal batches). One
deviation: a batch without any valid position (on every rank) leaves the queue as it is,
where USB would write a NaN row.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from pseudosel._deprecation import renamed_keywords, state_after_input
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.functional.alignment import class_mean, prepared, rescaled
from pseudosel.validation import compute_dtype, in_dtype

__all__ = [
    "AlignmentQueueState",
    "align_queue",
    "alignment_queue_init",
    "alignment_queue_update",
]

QUEUE_LENGTH = 128  # DistAlignQueueHook's default; SimMatch's and CoMatch's --da_len is 256


class AlignmentQueueState(NamedTuple):
    """p_model: (L, K) queue of unlabelled batch means; p_model_ptr: 0-dim long, the next
    row to write; p_target: (L, K) target rows; p_target_ptr: 0-dim long (used only when
    the target is learned)."""

    p_model: Tensor
    p_model_ptr: Tensor
    p_target: Tensor
    p_target_ptr: Tensor


def alignment_queue_init(
    num_classes: int,
    *,
    queue_length: int = QUEUE_LENGTH,
    target: None | str | Tensor = None,
    dtype=torch.float32,
    device=None,
) -> AlignmentQueueState:
    """USB's initial queues: Q_model zeros; Q_target uniform rows (``target=None``), zeros
    (``"model"``) or the given (K,) distribution repeated L times.

    Example:
        >>> from pseudosel.functional import alignment_queue_init
        >>> state = alignment_queue_init(4, queue_length=3)
        >>> state.p_model.shape, state.p_target[0]
        (torch.Size([3, 4]), tensor([0.2500, 0.2500, 0.2500, 0.2500]))
    """
    shape = (queue_length, num_classes)
    if target is None:
        p_target = torch.full(shape, 1.0 / num_classes, dtype=dtype, device=device)
    elif isinstance(target, str):
        p_target = torch.zeros(shape, dtype=dtype, device=device)
    else:
        p_target = target.to(dtype=dtype, device=device).expand(shape).clone()
    zero = torch.zeros((), dtype=torch.long, device=device)
    return AlignmentQueueState(
        torch.zeros(shape, dtype=dtype, device=device), zero, p_target, zero.clone()
    )


def _push(
    queue: Tensor, ptr: Tensor, probs: Tensor, valid: Tensor, group, all_valid: bool = False
) -> tuple[Tensor, Tensor]:
    """Write the mean of ``probs`` over valid positions (all ranks) at row ``ptr``."""
    mean, count = class_mean(probs, valid, group, all_valid)
    mean = in_dtype(mean, queue.dtype)
    if count is None:  # the batch's positions count: the row is written
        return queue.index_copy(0, ptr.view(1), mean.unsqueeze(0)), (ptr + 1) % queue.shape[0]
    seen = count > 0
    rows = torch.arange(queue.shape[0], device=queue.device)
    queue = torch.where(((rows == ptr) & seen).unsqueeze(1), mean.unsqueeze(0), queue)
    return queue, torch.where(seen, (ptr + 1) % queue.shape[0], ptr)


@no_grad
@state_after_input("alignment_queue_update", AlignmentQueueState)
@renamed_keywords("alignment_queue_update", group="process_group")
def alignment_queue_update(
    probs: Tensor,
    state: AlignmentQueueState,
    *,
    valid: Tensor | None = None,
    probs_labeled: Tensor | None = None,
    valid_labeled: Tensor | None = None,
    process_group: ProcessGroup | None = None,
    **front: Any,
) -> AlignmentQueueState:
    """Push the batch mean into Q_model (and the labelled mean into Q_target when
    ``probs_labeled`` is given: ``target="model"``).

    Args:
        probs: (N, K, *spatial); state: the current queues; valid: optional bool
            (N, *spatial); likewise the labelled pair.
        process_group: process group of the all-reduce (default group, if initialised).

    Example:
        >>> import torch
        >>> from pseudosel.functional import alignment_queue_init, alignment_queue_update
        >>> state = alignment_queue_init(2, queue_length=2)
        >>> state = alignment_queue_update(torch.tensor([[0.8, 0.2]]), state)
        >>> state.p_model, int(state.p_model_ptr)
        (tensor([[0.8000, 0.2000],
                [0.0000, 0.0000]]), 1)
    """
    function = "alignment_queue_update"
    probs, valid, all_valid = prepared(probs, valid, state, function, **front)
    # the plain lane of DistributionAlignmentQueue writes the batch mean into its queue's
    # row in place
    p_model, p_model_ptr = _push(
        state.p_model, state.p_model_ptr, probs, valid, process_group, all_valid
    )
    p_target, p_target_ptr = state.p_target, state.p_target_ptr
    if probs_labeled is not None:
        probs_labeled, valid_labeled, _ = prepared(
            probs_labeled, valid_labeled, state, function, name="probs_labeled", **front
        )
        p_target, p_target_ptr = _push(
            p_target, p_target_ptr, probs_labeled, valid_labeled, process_group
        )
    return AlignmentQueueState(p_model, p_model_ptr, p_target, p_target_ptr)


@no_grad
def align_queue(
    probs: Tensor,
    state: AlignmentQueueState,
    *,
    valid: Tensor | None = None,
    **front: Any,
) -> Tensor:
    """Aligned probabilities (N, K, *spatial): :func:`~pseudosel.functional.align` with
    the queues' means as p_model and p_target (``valid`` and sigmoid inputs as there).

    Example:
        >>> import torch
        >>> from pseudosel.functional import alignment_queue_init, align_queue
        >>> state = alignment_queue_init(2, queue_length=1)
        >>> state = state._replace(p_model=torch.tensor([[0.8, 0.2]]))
        >>> align_queue(torch.tensor([[0.8, 0.2]]), state)
        tensor([[0.5000, 0.5000]])
    """
    probs = prepared(probs, valid, state, "align_queue", **front).probs
    return align_queue_after_front_door(probs, state)


def align_queue_after_front_door(probs: Tensor, state: AlignmentQueueState) -> Tensor:
    """:func:`align_queue`'s formula on what the front door returned. (The plain lane of
    :class:`~pseudosel.DistributionAlignmentQueue` calls its parts, :func:`queue_mean` and
    :func:`~pseudosel.functional.alignment.rescaled_by`, with the target's numerator kept
    between calls.)"""
    work = compute_dtype(probs.dtype)
    return rescaled(probs, queue_mean(state.p_target, work), queue_mean(state.p_model, work))


def queue_mean(queue: Tensor, work: torch.dtype) -> Tensor:
    """The (K,) mean of the rows of an (L, K) queue, in the compute dtype ``work``."""
    return in_dtype(queue, work).mean(0)
