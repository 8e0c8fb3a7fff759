"""Input checks shared by the selector modules, and their ``activation=``/``weighting=``."""

from __future__ import annotations

from torch import Tensor

from pseudosel.activation import checked_class_probs
from pseudosel.selection import WEIGHTINGS, Selection
from pseudosel.validation import (
    check_activation,
    check_choice,
    check_probability_values,
    check_probs,
    resolve_valid,
)

__all__ = [
    "check_binary_classes",
    "check_num_classes",
    "check_weighting",
    "checked_inputs",
    "options_repr",
    "selector_inputs",
    "weighted",
]


def checked_inputs(
    probs: Tensor, valid: Tensor | None, validate: bool, num_classes: int | None = None
) -> Tensor:
    """Shape/dtype/value checks shared by the selector modules; returns the validity mask."""
    check_probs(probs)
    if num_classes is not None and probs.shape[1] != num_classes:
        raise ValueError(
            f"probs has {probs.shape[1]} classes at dim 1 (shape {tuple(probs.shape)}), but "
            f"the selector was built for num_classes={num_classes}"
        )
    all_valid = valid is None
    valid = resolve_valid(probs, valid)
    if validate:
        check_probability_values(probs, valid, all_valid=all_valid)
    return valid


def selector_inputs(
    probs: Tensor,
    valid: Tensor | None,
    validate: bool,
    num_classes: int | None = None,
    *,
    activation: str = "softmax",
    selector: str | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`checked_inputs` for a module with an ``activation``: returns the class
    probabilities the functional cores take (:func:`pseudosel.functional.class_probs`) and
    the validity mask. ``selector``: the module's name when it refuses multi-label input.
    With ``"sigmoid"`` the module was built with ``num_classes=2``
    (:func:`check_binary_classes`), which the two-class form always has."""
    if check_activation(activation) == "softmax":
        return probs, checked_inputs(probs, valid, validate, num_classes)
    return checked_class_probs(
        probs, valid, activation=activation, validate=validate, selector=selector
    )


def check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2, got {num_classes} (a binary sigmoid output is two "
            'classes: num_classes=2 with activation="sigmoid")'
        )
    return num_classes


def check_binary_classes(num_classes: int, activation: str, selector: str) -> str:
    """Check ``activation`` for a module with per-class state; with ``"sigmoid"`` (a binary
    output, two classes) ``num_classes`` must be 2. Returns ``activation``."""
    activation = check_activation(activation)
    if activation == "sigmoid" and num_classes != 2:
        raise ValueError(
            f'activation="sigmoid" reads a binary output (N, 1, *spatial) as two classes '
            f"(1 - p, p), so {selector} needs num_classes=2, got num_classes={num_classes}; "
            f"multi-label outputs are not supported by {selector} (docs/binary.md)"
        )
    return activation


def check_weighting(weighting: object) -> str:
    """Check ``weighting`` (``"soft"`` or ``"hard"``); return it."""
    return check_choice("weighting", weighting, WEIGHTINGS)


def weighted(selection: Selection, weighting: str) -> Selection:
    """``selection`` as it is (``"soft"``), or :meth:`~pseudosel.Selection.hard`."""
    return selection.hard() if weighting == "hard" else selection


def options_repr(activation: str, weighting: str | None = None) -> str:
    """The non-default ``activation``/``weighting`` for a module's ``extra_repr``."""
    parts = [f"activation={activation!r}"] if activation != "softmax" else []
    if weighting is not None and weighting != "soft":
        parts.append(f"weighting={weighting!r}")
    return "".join(f", {part}" for part in parts)
