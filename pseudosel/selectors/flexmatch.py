"""FlexMatch's curriculum thresholds, state in buffers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.features import with_shared_features
from pseudosel.functional.flexmatch import check_flexmatch_options
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, check_positive_int

__all__ = ["FlexMatchSelector"]


class FlexMatchSelector(Selector):
    """FlexMatch's curriculum thresholds T(k) = τ·M(β(k)), held in buffers.

    Two forms (see :mod:`pseudosel.functional.flexmatch`):

    - per-sample (``num_unlabeled`` given): the published curriculum; ``forward`` needs
      ``index``, the positions of the batch's samples in the unlabeled set, and (N, K) input;
    - class-wise (``num_unlabeled=None``): for dense input (or classification without
      indices), driven by cumulative counts of confident positions per class.

    In training mode ``forward`` selects with the current thresholds, then records the
    batch (as USB); in eval mode it only selects. Under torch.distributed all ranks apply
    every rank's writes, so they hold the same state.

    Shared options: :mod:`pseudosel.selectors._base` (per-class state: binary sigmoid only).

    Args:
        num_classes: K.
        num_unlabeled: size of the unlabeled set (per-sample form), or None.
        tau: base threshold τ. Default 0.95.
        warmup: FlexMatch's threshold warm-up (β divided by max(max σ, unused)). Default True.
        mapping: ``"convex"`` (default), ``"linear"`` or ``"concave"``.
        process_group: for the collectives (default: the default group, if initialised).

    Buffers:
        ``classwise_acc`` (K,) β; ``counts`` (K + 1,) long σ and the unused count;
        ``selected_label`` (num_unlabeled,) long, -1 = unused (per-sample form only).

    Example:
        >>> import torch
        >>> from pseudosel import FlexMatchSelector
        >>> selector = FlexMatchSelector(10, num_unlabeled=1000)
        >>> sel = selector(torch.randn(64, 10).softmax(1), index=torch.arange(64))
        >>> int(selector.counts.sum())
        1000
    """

    shown = ("num_classes", "num_unlabeled", "tau", "warmup", "mapping")

    classwise_acc: Tensor
    counts: Tensor
    selected_label: Tensor

    per_class_state = True

    def __init__(
        self,
        num_classes: int,
        num_unlabeled: int | None = None,
        *,
        tau: float = 0.95,
        warmup: bool = True,
        mapping: str = "convex",
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        if num_unlabeled is not None:
            num_unlabeled = check_positive_int("num_unlabeled", num_unlabeled)
        self.num_unlabeled = num_unlabeled
        self.tau, self.mapping = check_flexmatch_options(tau, mapping)
        self.warmup = bool(warmup)
        self.process_group = process_group
        start = F.flexmatch_init(num_classes, num_unlabeled)
        self.register_buffer("classwise_acc", start.classwise_acc)
        if num_unlabeled is not None:
            self.register_buffer("selected_label", start.selected_label)
        self.register_buffer("counts", start.counts)

    def state(self) -> F.FlexMatchState:
        """The buffers as a :class:`~pseudosel.functional.FlexMatchState` (the store is
        empty in the class-wise form)."""
        store = self.selected_label if self.num_unlabeled is not None else self.counts[:0]
        return F.FlexMatchState(self.classwise_acc, self.counts, store)

    def thresholds(self) -> Tensor:
        """The current class thresholds T(k), (K,)."""
        return F.flexmatch_thresholds(self.classwise_acc, tau=self.tau, mapping=self.mapping)

    def in_warmup(self) -> Tensor:
        """0-dim bool tensor: FlexMatch's threshold warm-up is still on — more samples (or,
        class-wise, positions) are unused than any class has learnt, so β = σ / unused and
        every threshold stays far below τ. Always False with ``warmup=False``."""
        counts = self.counts
        return (counts[-1] > counts[:-1].max()) & self.warmup

    def _inputs(
        self, probs: Tensor, index: Tensor | None, valid: Tensor | None, *, recording: bool
    ) -> tuple[Tensor, Tensor]:
        probs, valid, _ = self.prepare(probs, valid)
        if self.num_unlabeled is None:
            if index is not None:
                raise ValueError(
                    "index was given but this FlexMatchSelector is class-wise; build it with "
                    "num_unlabeled=<size of the unlabeled set> for the per-sample curriculum"
                )
            return probs, valid
        if index is None and not recording:
            return probs, valid  # selecting with frozen thresholds needs no sample positions
        if index is None:
            raise ValueError(
                "index (positions of the batch's samples in the unlabeled set, long (N,)) is "
                "required: this FlexMatchSelector was built with "
                f"num_unlabeled={self.num_unlabeled}"
            )
        if probs.dim() != 2:
            raise ValueError(
                "the per-sample FlexMatch takes (N, K) probs, got shape "
                f"{tuple(probs.shape)}; use num_unlabeled=None for dense input"
            )
        if not isinstance(index, Tensor) or index.dtype != torch.long:
            got = index.dtype if isinstance(index, Tensor) else type(index).__name__
            raise TypeError(f"index must be a torch.long tensor, got {got}")
        if tuple(index.shape) != (probs.shape[0],) or index.device != probs.device:
            raise ValueError(
                f"index must have shape ({probs.shape[0]},) on {probs.device}, got "
                f"{tuple(index.shape)} on {index.device}"
            )
        if self.validate:
            check_index(index, self.num_unlabeled)
        return probs, valid

    @no_grad
    def forward(
        self, probs: Tensor, index: Tensor | None = None, valid: Tensor | None = None
    ) -> Selection:
        """Select with the current thresholds; in training mode then record the batch.

        ``index`` is required in training mode (per-sample form) and optional in eval mode,
        where nothing is recorded."""
        probs, valid = self._inputs(probs, index, valid, recording=self.training)
        # the selection and the record read one arg-max
        return with_shared_features(self._step, probs, index, valid)

    def _step(self, probs: Tensor, index: Tensor | None, valid: Tensor) -> Selection:
        selection = F.flexmatch_select(
            probs, self.state(), valid=valid, tau=self.tau, mapping=self.mapping, validate=False
        )
        if self.training:  # the arg-max comes from the shared pass (eager)
            self._record(probs, index, valid)
        return self.finish(selection)

    @no_grad
    def update(
        self, probs: Tensor, index: Tensor | None = None, valid: Tensor | None = None
    ) -> None:
        """Record a batch (store writes or class counts) and recompute β, without selecting."""
        probs, valid = self._inputs(probs, index, valid, recording=True)
        self._record(probs, index, valid)

    def _record(self, probs: Tensor, index: Tensor | None, valid: Tensor) -> None:
        F.flexmatch_update(
            probs,
            self.state(),
            valid=valid,
            index=index,
            tau=self.tau,
            warmup=self.warmup,
            process_group=self.process_group,
            inplace=True,
            validate=False,
        )


def check_index(index: Tensor, num_unlabeled: int) -> None:
    """Sample positions in [0, num_unlabeled): ``ValueError`` on a CPU, a device-side
    assertion elsewhere."""
    in_range = ((index >= 0) & (index < num_unlabeled)).all()
    # reading the verdict would synchronise a GPU and cannot be traced: assert on device
    if torch.compiler.is_compiling() or index.device.type != "cpu":
        torch._assert_async(in_range, "index out of range [0, num_unlabeled)")
    elif not bool(in_range):
        raise ValueError(
            f"index must lie in [0, {num_unlabeled}) (num_unlabeled), got values from "
            f"{int(index.min())} to {int(index.max())}"
        )
