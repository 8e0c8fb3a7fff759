"""Distribution alignment (a transform used before a selector), state in buffers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.functional import alignment
from pseudosel.kernels.scalars import operands
from pseudosel.selectors._base import Alignment, buffers_of, check_momentum
from pseudosel.validation import check_choice, in_dtype

__all__ = ["DistributionAlignment"]


class DistributionAlignment(Alignment):
    """Distribution alignment of probabilities (a transform, used before a selector).

    ``forward(probs, probs_labeled=None, valid=None, valid_labeled=None)`` returns aligned
    probabilities of the same shape. In training mode it first updates p_model (the EMA of
    the mean unlabeled prediction; the first batch sets it) and, with ``target="model"``,
    p_target from ``probs_labeled``.

    Options shared by every selector module (``validate``, ``activation``):
    :mod:`pseudosel.selectors._base`; a binary sigmoid output (and labelled batch) gives the
    aligned two-class (N, 2, *spatial) probabilities, to pass to a selector with its default
    activation (build with num_classes=2).

    Args:
        num_classes: K.
        momentum: EMA momentum. Default 0.999.
        target: None (uniform, default), ``"model"`` (EMA of labeled predictions) or a (K,)
            probability vector.
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).

    Buffers:
        ``p_model`` (K,), ``p_target`` (K,), ``initialized`` (bool).

    Example:
        >>> import torch
        >>> from pseudosel import DistributionAlignment, SoftMatchSelector
        >>> align, select = DistributionAlignment(10), SoftMatchSelector(10)
        >>> sel = select(align(torch.randn(64, 10).softmax(1)))
    """

    shown = ("num_classes", "momentum", "target_kind")
    update_stage = staticmethod(F.alignment_update)
    align_stage = staticmethod(F.align)
    update_options = ("momentum",)

    p_model: Tensor
    p_target: Tensor
    initialized: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        momentum: float = 0.999,
        target: None | str | Tensor = None,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **shared)
        self.momentum = check_momentum(momentum)
        self.process_group = process_group
        self.learn_target, p_target = resolve_target(target, num_classes)
        self.target_kind = "model" if self.learn_target else "given"
        if p_target is None:
            p_target = torch.full((num_classes,), 1.0 / num_classes)
        self.register_buffer("p_model", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("p_target", p_target)
        self.register_buffer("initialized", torch.tensor(False))

    def state(self) -> F.AlignmentState:
        """The current distributions as a :class:`~pseudosel.functional.AlignmentState`."""
        return F.AlignmentState(*buffers_of(self, "p_model", "p_target", "initialized"))

    def lane_update(self, probs: Tensor, state: F.AlignmentState) -> None:
        # the flag is read on the host (lane state is on the CPU): the EMA is written into
        # p_model, where the stage's where() would compute it and copy it over
        mean = in_dtype(alignment.plain_class_mean(probs), state.p_model.dtype)
        if state.initialized.item():
            m, rest = operands(state[:2], self.momentum, 1 - self.momentum)  # as the stage
            alignment.ema_step(state.p_model, mean, m, rest, out=state.p_model)
        else:
            state.p_model.copy_(mean)
            state.initialized.fill_(True)

    def lane_align(self, probs: Tensor, state: F.AlignmentState) -> Tensor:
        p_model = state.p_model if state.initialized.item() else state.p_target
        target_term, eps = self.lane_numerator(state.p_target, probs.dtype)
        return alignment.rescaled_by(probs, target_term, eps, in_dtype(p_model, probs.dtype))

    def target_vector(self, p_target: Tensor, work: torch.dtype) -> Tensor:
        return in_dtype(p_target, work)


def resolve_target(target: object, num_classes: int) -> tuple[bool, Tensor | None]:
    """An alignment module's ``target=`` argument: ``(learn_target, p_target)`` — learned
    from the labelled predictions (``"model"``), uniform (``None``: p_target None) or a given
    distribution (checked, float32)."""
    if isinstance(target, str):
        check_choice("target", target, ("model",))
        return True, None
    if target is None:
        return False, None
    if isinstance(target, Tensor):
        return False, _checked_target(target, num_classes)
    raise TypeError(
        f"target must be None, 'model' or a ({num_classes},) probability tensor, got "
        f"{type(target).__name__} {target!r}"
    )


def _checked_target(target: Tensor, num_classes: int) -> Tensor:
    """A given target distribution as a float32 (K,) buffer, after checking that it is one:
    finite, >= 0 and summing to 1 (within 1e-3). Construction-time check, so a host read
    is fine here."""
    if not target.is_floating_point() or tuple(target.shape) != (num_classes,):
        raise ValueError(
            f"target must be a floating-point ({num_classes},) probability vector, got "
            f"shape {tuple(target.shape)} and dtype {target.dtype}"
        )
    values = target.detach().to("cpu", torch.float64)
    total = float(values.sum())
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()) or abs(total - 1) > 1e-3:
        raise ValueError(
            "target must be a probability distribution over the classes (finite, >= 0, "
            f"summing to 1 within 1e-3), got {values.tolist()} (sum {total:.6g})"
        )
    return target.detach().to(torch.float32).clone()
