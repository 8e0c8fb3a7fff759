"""Input checks shared by the selector modules."""

from __future__ import annotations

from torch import Tensor

from pseudosel.validation import check_probability_values, check_probs, resolve_valid

__all__ = ["check_num_classes", "checked_inputs"]


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
    valid = resolve_valid(probs, valid)
    if validate:
        check_probability_values(probs, valid)
    return valid


def check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return num_classes
