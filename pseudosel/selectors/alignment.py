"""Distribution alignment (a transform used before a selector), state in buffers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.selectors.inputs import (
    check_binary_classes,
    check_num_classes,
    options_repr,
    selector_inputs,
)
from pseudosel.validation import check_choice, check_real

__all__ = ["DistributionAlignment"]


class DistributionAlignment(nn.Module):
    """Distribution alignment of probabilities (a transform, used before a selector).

    ``forward(probs, probs_labeled=None, valid=None, valid_labeled=None)`` returns aligned
    probabilities of the same shape. In training mode it first updates p_model (the EMA of
    the mean unlabeled prediction; the first batch sets it) and, with ``target="model"``,
    p_target from ``probs_labeled``.

    Args:
        num_classes: K.
        momentum: EMA momentum. Default 0.999.
        target: None (uniform, default), ``"model"`` (EMA of labeled predictions) or a (K,)
            probability vector.
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).
        validate: check input values on every call (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"``: a binary (N, 1, *spatial)
            sigmoid output p (and labelled batch), read as the two classes (1 − p, p) (build
            with num_classes=2); the output is then the aligned two-class (N, 2, *spatial)
            probabilities, to pass to a selector with its default activation. Multi-label
            input is refused (docs/binary.md).

    Buffers:
        ``p_model`` (K,), ``p_target`` (K,), ``initialized`` (bool).

    Example:
        >>> import torch
        >>> from pseudosel import DistributionAlignment, SoftMatchSelector
        >>> align, select = DistributionAlignment(10), SoftMatchSelector(10)
        >>> sel = select(align(torch.randn(64, 10).softmax(1)))
    """

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
        validate: bool = True,
        activation: str = "softmax",
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.momentum = check_real("momentum", momentum, low=0.0, high=1.0)
        self.process_group = process_group
        self.validate = bool(validate)
        self.activation = check_binary_classes(
            self.num_classes, activation, "DistributionAlignment"
        )
        self.learn_target, p_target = resolve_target(target, num_classes)
        if p_target is None:
            p_target = torch.full((num_classes,), 1.0 / num_classes)
        self.register_buffer("p_model", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("p_target", p_target)
        self.register_buffer("initialized", torch.tensor(False))

    def state(self) -> F.AlignmentState:
        """The current distributions as a :class:`~pseudosel.functional.AlignmentState`."""
        return F.AlignmentState(self.p_model, self.p_target, self.initialized)

    @torch.no_grad()
    def forward(
        self,
        probs: Tensor,
        probs_labeled: Tensor | None = None,
        valid: Tensor | None = None,
        valid_labeled: Tensor | None = None,
    ) -> Tensor:
        """Aligned probabilities (N, K, *spatial); updates first in training mode."""
        probs, valid = module_inputs(self, probs, valid)
        if self.training:
            probs_labeled, valid_labeled = checked_labelled_inputs(
                self, probs_labeled, valid_labeled
            )
            new = F.alignment_update(
                self.state(),
                probs,
                valid,
                momentum=self.momentum,
                probs_labeled=probs_labeled if self.learn_target else None,
                valid_labeled=valid_labeled if self.learn_target else None,
                group=self.process_group,
            )
            for buffer, value in zip(self.state(), new, strict=True):
                buffer.copy_(value)
        return F.align(probs, self.state())

    def extra_repr(self) -> str:
        target = "model" if self.learn_target else "fixed"
        return (
            f"num_classes={self.num_classes}, momentum={self.momentum}, target={target}"
            + options_repr(self.activation)
        )


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


def module_inputs(module: nn.Module, probs: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """An alignment module's checked input: class probabilities (two classes for a binary
    sigmoid output) and validity."""
    return selector_inputs(
        probs,
        valid,
        module.validate,
        module.num_classes,
        activation=module.activation,
        selector=type(module).__name__,
    )


def checked_labelled_inputs(
    module: nn.Module, probs_labeled: Tensor | None, valid_labeled: Tensor | None
) -> tuple[Tensor | None, Tensor | None]:
    """The labelled batch (class probabilities) and its validity for an alignment module's
    training step: checked when the module learns its target (``probs_labeled`` is then
    required), else unused."""
    if not module.learn_target:
        return probs_labeled, valid_labeled
    if probs_labeled is None:
        raise ValueError("probs_labeled is required in training mode with target='model'")
    return module_inputs(module, probs_labeled, valid_labeled)


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
