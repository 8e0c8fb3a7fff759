"""Queue-based distribution alignment (a transform used before a selector), state in buffers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.functional import alignment, alignment_queue
from pseudosel.selectors._base import Alignment, buffers_of, check_positive_int
from pseudosel.selectors.alignment import resolve_target
from pseudosel.validation import in_dtype

__all__ = ["DistributionAlignmentQueue"]


class DistributionAlignmentQueue(Alignment):
    r"""Distribution alignment against a queue of recent batch means (USB's
    ``DistAlignQueueHook``, used by SimMatch and CoMatch).

    p ← normalise(p · (mean(Q_target) + 1e-6) / (mean(Q_model) + 1e-6)). In training mode
    ``forward`` first writes the batch mean of ``probs`` (valid positions, all ranks) into
    the ring buffer Q_model — and, with ``target="model"``, the labelled batch mean into
    Q_target — then aligns (USB's order); in eval mode it aligns with the frozen queues.
    Both queues start as in USB (Q_model zeros; a learned Q_target zeros) and are averaged
    over all L rows, zero rows included. Maths: :mod:`pseudosel.functional.alignment_queue`.

    Options shared by every selector module (``validate``, ``activation``):
    :mod:`pseudosel.selectors._base`; a binary sigmoid output (and labelled batch) gives the
    aligned two-class (N, 2, *spatial) probabilities, to pass to a selector with its default
    activation (build with num_classes=2).

    Args:
        num_classes: K >= 2.
        queue_length: L. Default 128 (the hook's default; SimMatch and CoMatch pass
            ``--da_len``, 256 by default).
        target: None (uniform, default — what SimMatch and CoMatch use), ``"model"``
            (queue of labelled batch means) or a (K,) probability vector.
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).

    Shape:
        probs (N, K) or (N, K, *spatial); valid (N, *spatial); output like probs.

    Buffers:
        ``p_model`` (L, K), ``p_model_ptr`` (long), ``p_target`` (L, K), ``p_target_ptr``
        (long). DDP: class sums and counts are all-reduced before the write, so every rank
        holds the same queues, equal to one process on the concatenated batch.

    Example:
        >>> import torch
        >>> from pseudosel import DistributionAlignmentQueue
        >>> align = DistributionAlignmentQueue(10, queue_length=32)
        >>> aligned = align(torch.randn(64, 10).softmax(1))
        >>> int(align.p_model_ptr)
        1
    """

    shown = ("num_classes", "queue_length", "target_kind")
    update_stage = staticmethod(F.alignment_queue_update)
    align_stage = staticmethod(F.align_queue)

    p_model: Tensor
    p_model_ptr: Tensor
    p_target: Tensor
    p_target_ptr: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        queue_length: int = 128,
        target: None | str | Tensor = None,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        self.queue_length = check_positive_int("queue_length", queue_length)
        self.process_group = process_group
        self.learn_target, p_target = resolve_target(target, num_classes)
        self.target_kind = "model" if self.learn_target else "given"
        initial = "model" if self.learn_target else p_target  # "model": USB's zero queue
        state = F.alignment_queue_init(num_classes, queue_length=queue_length, target=initial)
        self.register_buffer("p_model", state.p_model)
        self.register_buffer("p_model_ptr", state.p_model_ptr)
        self.register_buffer("p_target", state.p_target)
        self.register_buffer("p_target_ptr", state.p_target_ptr)

    def state(self) -> F.AlignmentQueueState:
        """The queues as a :class:`~pseudosel.functional.AlignmentQueueState`."""
        names = ("p_model", "p_model_ptr", "p_target", "p_target_ptr")
        return F.AlignmentQueueState(*buffers_of(self, *names))

    def lane_update(self, probs: Tensor, state: F.AlignmentQueueState) -> None:
        # the pointer is read on the host (lane state is on the CPU): the batch mean is
        # written into its row, where the stage returns a copy of the queue to copy back
        queue, pointer = state.p_model, state.p_model_ptr
        row = pointer.item()
        if not 0 <= row < queue.shape[0]:  # Python indexing would wrap a negative one
            raise IndexError(
                f"p_model_ptr must index a row of the ({queue.shape[0]}, K) queue, got {row}"
            )
        queue[row] = in_dtype(alignment.plain_class_mean(probs), queue.dtype)
        pointer.fill_((row + 1) % queue.shape[0])

    def lane_align(self, probs: Tensor, state: F.AlignmentQueueState) -> Tensor:
        target_term, eps = self.lane_numerator(state.p_target, probs.dtype)
        p_model = alignment_queue.queue_mean(state.p_model, probs.dtype)
        return alignment.rescaled_by(probs, target_term, eps, p_model)

    def target_vector(self, p_target: Tensor, work: torch.dtype) -> Tensor:
        return alignment_queue.queue_mean(p_target, work)
