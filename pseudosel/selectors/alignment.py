"""Distribution alignment (a transform used before a selector), state in buffers."""

from __future__ import annotations

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel.distributed import ProcessGroup
from pseudosel.selectors._base import Alignment, check_momentum
from pseudosel.validation import check_choice

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
        super().__init__(num_classes=num_classes, validate=validate, activation=activation)
        self.momentum = check_momentum(momentum)
        self.process_group = process_group
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
        probs, valid, _ = self.prepare(probs, valid)
        if self.training:
            probs_labeled, valid_labeled = labelled_inputs(self, probs_labeled, valid_labeled)
            new = F.alignment_update(
                probs,
                self.state(),
                valid=valid,
                momentum=self.momentum,
                probs_labeled=probs_labeled,
                valid_labeled=valid_labeled,
                process_group=self.process_group,
                validate=False,
            )
            for buffer, value in zip(self.state(), new, strict=True):
                buffer.copy_(value)
        return F.align(probs, self.state(), validate=False)

    def extra_repr(self) -> str:
        target = "model" if self.learn_target else "fixed"
        return (
            f"num_classes={self.num_classes}, momentum={self.momentum}, target={target}"
            + self.input_repr()
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


def labelled_inputs(
    module: Alignment, probs_labeled: Tensor | None, valid_labeled: Tensor | None
) -> tuple[Tensor | None, Tensor | None]:
    """The labelled batch (class probabilities) and its validity for an alignment module's
    training step when the module learns its target (``probs_labeled`` is then required),
    else ``(None, None)``: a fixed target reads no labelled batch."""
    if not module.learn_target:
        return None, None
    if probs_labeled is None:
        raise ValueError("probs_labeled is required in training mode with target='model'")
    probs_labeled, valid_labeled, _ = module.prepare(probs_labeled, valid_labeled, "probs_labeled")
    return probs_labeled, valid_labeled


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
