"""FlexMatch's curriculum thresholds, state in buffers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.features import confidence_and_labels, with_shared_features
from pseudosel.functional.flexmatch import MAPPINGS
from pseudosel.selection import Selection
from pseudosel.selectors.inputs import (
    check_binary_classes,
    check_num_classes,
    check_weighting,
    options_repr,
    selector_inputs,
    weighted,
)
from pseudosel.validation import check_choice, check_real

__all__ = ["FlexMatchSelector"]


class FlexMatchSelector(nn.Module):
    """FlexMatch's curriculum thresholds T(k) = τ·M(β(k)), held in buffers.

    Two forms (see :mod:`pseudosel.functional.flexmatch`):

    - per-sample (``num_unlabeled`` given): the published curriculum; ``forward`` needs
      ``index``, the positions of the batch's samples in the unlabeled set, and (N, K) input;
    - class-wise (``num_unlabeled=None``): for dense input (or classification without
      indices), driven by cumulative counts of confident positions per class.

    In training mode ``forward`` selects with the current thresholds, then records the
    batch (as USB); in eval mode it only selects. Under torch.distributed all ranks apply
    every rank's writes, so they hold the same state.

    Args:
        num_classes: K.
        num_unlabeled: size of the unlabeled set (per-sample form), or None.
        tau: base threshold τ. Default 0.95.
        warmup: FlexMatch's threshold warm-up (β divided by max(max σ, unused)). Default True.
        mapping: ``"convex"`` (default), ``"linear"`` or ``"concave"``.
        process_group: for the collectives (default: the default group, if initialised).
        validate: check input values on every call (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"``: a binary (N, 1, *spatial)
            sigmoid output p, read as the two classes (1 − p, p) (build with
            num_classes=2). Multi-label input is refused (docs/binary.md).
        weighting: ``"soft"`` (default: the selector's own weights; already 0/1 here) or ``"hard"``
            (weight = mask as 0/1, :meth:`~pseudosel.Selection.hard`).

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

    classwise_acc: Tensor
    counts: Tensor
    selected_label: Tensor

    def __init__(
        self,
        num_classes: int,
        num_unlabeled: int | None = None,
        *,
        tau: float = 0.95,
        warmup: bool = True,
        mapping: str = "convex",
        process_group: ProcessGroup | None = None,
        validate: bool = True,
        activation: str = "softmax",
        weighting: str = "soft",
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if num_unlabeled is not None:
            if isinstance(num_unlabeled, bool) or not isinstance(num_unlabeled, int):
                raise TypeError(
                    f"num_unlabeled must be an int or None, got {type(num_unlabeled).__name__}"
                )
            if num_unlabeled < 1:
                raise ValueError(f"num_unlabeled must be >= 1, got {num_unlabeled}")
        self.num_unlabeled = num_unlabeled
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.warmup = bool(warmup)
        self.mapping = check_choice("mapping", mapping, MAPPINGS)
        self.process_group = process_group
        self.validate = bool(validate)
        self.activation = check_binary_classes(self.num_classes, activation, "FlexMatchSelector")
        self.weighting = check_weighting(weighting)
        self.register_buffer("classwise_acc", torch.zeros(num_classes))
        counts = torch.zeros(num_classes + 1, dtype=torch.long)
        if num_unlabeled is not None:
            counts[-1] = num_unlabeled
            self.register_buffer(
                "selected_label", torch.full((num_unlabeled,), -1, dtype=torch.long)
            )
        self.register_buffer("counts", counts)

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
        probs, valid = selector_inputs(
            probs,
            valid,
            self.validate,
            self.num_classes,
            activation=self.activation,
            selector="FlexMatchSelector",
        )
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
            in_range = ((index >= 0) & (index < self.num_unlabeled)).all()
            if torch.compiler.is_compiling() or index.device.type != "cpu":
                torch._assert_async(in_range, "index out of range [0, num_unlabeled)")
            elif not bool(in_range):
                raise ValueError(
                    f"index must lie in [0, {self.num_unlabeled}) (num_unlabeled), got values "
                    f"from {int(index.min())} to {int(index.max())}"
                )
        return probs, valid

    @torch.no_grad()
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
            probs, self.classwise_acc, valid, tau=self.tau, mapping=self.mapping
        )
        if self.training:  # the confidence comes from the shared arg-max pass (eager)
            self._record(confidence_and_labels(probs)[0], selection.labels, index, valid)
        return weighted(selection, self.weighting)

    @torch.no_grad()
    def update(
        self, probs: Tensor, index: Tensor | None = None, valid: Tensor | None = None
    ) -> None:
        """Record a batch (store writes or class counts) and recompute β, without selecting."""
        probs, valid = self._inputs(probs, index, valid, recording=True)
        self._record(*confidence_and_labels(probs), index, valid)

    def _record(self, confidence: Tensor, labels: Tensor, index: Tensor | None, valid: Tensor):
        confident = valid & (confidence >= self.tau)
        if index is None:
            F.flexmatch_record_classes(
                self.counts, labels, confident, valid, group=self.process_group, inplace=True
            )
        else:
            F.flexmatch_record_samples(
                self.selected_label,
                self.counts,
                labels,
                confident,
                index,
                group=self.process_group,
                inplace=True,
            )
        self.classwise_acc.copy_(
            F.flexmatch_classwise_acc(self.counts, self.classwise_acc, warmup=self.warmup)
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, num_unlabeled={self.num_unlabeled}, "
            f"tau={self.tau}, warmup={self.warmup}, mapping={self.mapping!r}"
        ) + options_repr(self.activation, self.weighting)
