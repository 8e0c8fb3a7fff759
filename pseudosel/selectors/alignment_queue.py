"""Queue-based distribution alignment (a transform used before a selector), state in buffers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.selectors.alignment import checked_labelled_inputs, module_inputs, resolve_target
from pseudosel.selectors.inputs import check_binary_classes, check_num_classes, options_repr

__all__ = ["DistributionAlignmentQueue"]


class DistributionAlignmentQueue(nn.Module):
    r"""Distribution alignment against a queue of recent batch means (USB's
    ``DistAlignQueueHook``, used by SimMatch and CoMatch).

    p ← normalise(p · (mean(Q_target) + 1e-6) / (mean(Q_model) + 1e-6)). In training mode
    ``forward`` first writes the batch mean of ``probs`` (valid positions, all ranks) into
    the ring buffer Q_model — and, with ``target="model"``, the labelled batch mean into
    Q_target — then aligns (USB's order); in eval mode it aligns with the frozen queues.
    Both queues start as in USB (Q_model zeros; a learned Q_target zeros) and are averaged
    over all L rows, zero rows included. Maths: :mod:`pseudosel.functional.alignment_queue`.

    Args:
        num_classes: K >= 2.
        queue_length: L. Default 128 (the hook's default; SimMatch and CoMatch pass
            ``--da_len``, 256 by default).
        target: None (uniform, default — what SimMatch and CoMatch use), ``"model"``
            (queue of labelled batch means) or a (K,) probability vector.
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).
        validate: check input values on every call (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"``: a binary (N, 1, *spatial)
            sigmoid output p (and labelled batch), read as the two classes (1 − p, p) (build
            with num_classes=2); the output is then the aligned two-class (N, 2, *spatial)
            probabilities, to pass to a selector with its default activation. Multi-label
            input is refused (docs/binary.md).

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
        validate: bool = True,
        activation: str = "softmax",
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if isinstance(queue_length, bool) or not isinstance(queue_length, int):
            raise TypeError(f"queue_length must be an int, got {type(queue_length).__name__}")
        if queue_length < 1:
            raise ValueError(f"queue_length must be >= 1, got {queue_length}")
        self.queue_length = queue_length
        self.process_group = process_group
        self.validate = bool(validate)
        self.activation = check_binary_classes(
            self.num_classes, activation, "DistributionAlignmentQueue"
        )
        self.learn_target, p_target = resolve_target(target, num_classes)
        initial = "model" if self.learn_target else p_target  # "model": USB's zero queue
        state = F.alignment_queue_init(num_classes, queue_length=queue_length, target=initial)
        self.register_buffer("p_model", state.p_model)
        self.register_buffer("p_model_ptr", state.p_model_ptr)
        self.register_buffer("p_target", state.p_target)
        self.register_buffer("p_target_ptr", state.p_target_ptr)

    def state(self) -> F.AlignmentQueueState:
        """The queues as a :class:`~pseudosel.functional.AlignmentQueueState`."""
        return F.AlignmentQueueState(
            self.p_model, self.p_model_ptr, self.p_target, self.p_target_ptr
        )

    @torch.no_grad()
    def update(
        self,
        probs: Tensor,
        probs_labeled: Tensor | None = None,
        valid: Tensor | None = None,
        valid_labeled: Tensor | None = None,
    ) -> None:
        """Push a batch into the queues, without aligning."""
        probs, valid = module_inputs(self, probs, valid)
        self._update(probs, probs_labeled, valid, valid_labeled)

    @torch.no_grad()
    def forward(
        self,
        probs: Tensor,
        probs_labeled: Tensor | None = None,
        valid: Tensor | None = None,
        valid_labeled: Tensor | None = None,
    ) -> Tensor:
        """Aligned probabilities (N, K, *spatial); pushes the batch first in training mode."""
        probs, valid = module_inputs(self, probs, valid)
        if self.training:
            self._update(probs, probs_labeled, valid, valid_labeled)
        return F.align_queue(probs, self.state())

    def _update(
        self, probs: Tensor, probs_labeled: Tensor | None, valid: Tensor, valid_labeled
    ) -> None:
        probs_labeled, valid_labeled = checked_labelled_inputs(self, probs_labeled, valid_labeled)
        new = F.alignment_queue_update(
            self.state(),
            probs,
            valid,
            probs_labeled=probs_labeled if self.learn_target else None,
            valid_labeled=valid_labeled if self.learn_target else None,
            group=self.process_group,
        )
        for buffer, value in zip(self.state(), new, strict=True):
            buffer.copy_(value)

    def extra_repr(self) -> str:
        target = "model" if self.learn_target else "fixed"
        return (
            f"num_classes={self.num_classes}, queue_length={self.queue_length}, target={target}"
            + options_repr(self.activation)
        )
