"""Binary and multi-label (sigmoid) outputs as the class probabilities every selector takes.

Selectors work on class probabilities along dim 1. ``activation="sigmoid"`` says that dim 1
instead holds independent positive-class probabilities p, and this module is the one place
where they become classes (docs/binary.md):

- binary, (N, 1, *spatial): the two classes (1 − p, p), ``torch.cat((1 - p, p), 1)`` —
  shape (N, 2, *spatial), class 1 the positive class; positions (N, *spatial). Every
  selector then gives exactly what it gives on that explicit two-class input;
- multi-label, (N, L, *spatial) with L > 1: ``torch.stack((1 - p, p), 1)`` — shape
  (N, 2, L, *spatial), a "dense" two-class input whose positions are the (sample, label)
  pairs; positions (N, L, *spatial).

With ``activation="softmax"`` (the default) the input is returned as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pseudosel.validation import (
    check_activation,
    check_probability_values,
    check_probs,
    check_sigmoid_values,
    compute_dtype,
    is_multilabel,
    resolve_valid,
)

__all__ = ["apply_activation", "checked_class_probs", "class_probs", "two_class"]


def two_class(p: Tensor, *, multilabel: bool) -> Tensor:
    """(1 − p, p) along dim 1: concatenated for a binary (N, 1, …) ``p``, stacked on a new
    dim 1 for a multi-label (N, L, …) one. 1 − p is computed in ``p``'s dtype."""
    if multilabel:
        return torch.stack((1 - p, p), 1)
    return torch.cat((1 - p, p), 1)


def refuse_multilabel(probs: Tensor, selector: str) -> None:
    """The error of a selector whose per-class state would mix the labels of a multi-label
    output."""
    raise ValueError(
        f'{selector} does not support multi-label input: with activation="sigmoid", probs '
        f"of shape {tuple(probs.shape)} holds {probs.shape[1]} independent labels at dim 1, "
        "and its per-class state would mix them. Binary sigmoid outputs (N, 1, *spatial) "
        "are supported; for multi-label use threshold, csl, adamatch, entropy_split or "
        "Dash (docs/binary.md)"
    )


def class_probs(
    probs: Tensor,
    activation: str = "softmax",
    *,
    from_logits: bool = False,
    selector: str | None = None,
) -> Tensor:
    """The class probabilities a selector takes, from a softmax or sigmoid output.

    Args:
        probs: probabilities (or logits with ``from_logits``): (N, K, *spatial) class
            probabilities for ``"softmax"``; for ``"sigmoid"``, (N, 1, *spatial) binary or
            (N, L, *spatial) multi-label (L > 1) positive-class probabilities.
        activation: ``"softmax"`` (default) or ``"sigmoid"``.
        from_logits: apply the activation first — softmax over dim 1, or the element-wise
            sigmoid — computed in float32 for float16/bfloat16 input.
        selector: the name of a selector that does not support multi-label input: a
            multi-label ``probs`` then raises ``ValueError`` naming it. None (default)
            accepts both.

    Returns:
        ``"softmax"``: (N, K, *spatial), ``probs`` itself without ``from_logits``.
        ``"sigmoid"``: ``torch.cat((1 - p, p), 1)`` (N, 2, *spatial) for binary input,
        ``torch.stack((1 - p, p), 1)`` (N, 2, L, *spatial) for multi-label input; class 1
        is the positive class.

    Example:
        >>> import torch
        >>> from pseudosel.functional import class_probs
        >>> class_probs(torch.tensor([[0.9], [0.2]]), "sigmoid")
        tensor([[0.1000, 0.9000],
                [0.8000, 0.2000]])
        >>> class_probs(torch.rand(4, 3), "sigmoid").shape   # 3 labels
        torch.Size([4, 2, 3])
    """
    activation = check_activation(activation)
    if activation == "softmax":
        return apply_activation(probs, activation) if from_logits else probs
    check_probs(probs, name="logits" if from_logits else "probs", min_classes=1)
    if from_logits:
        probs = apply_activation(probs, activation)
    multilabel = is_multilabel(probs, activation)
    if multilabel and selector is not None:
        refuse_multilabel(probs, selector)
    return two_class(probs, multilabel=multilabel)


def apply_activation(logits: Tensor, activation: str) -> Tensor:
    """Softmax over dim 1 or the element-wise sigmoid of ``logits``, in float32 for
    float16/bfloat16 input (the ``from_logits`` step of :func:`~pseudosel.select_reliable`).

    Example:
        >>> import torch
        >>> from pseudosel.activation import apply_activation
        >>> apply_activation(torch.zeros(1, 2), "sigmoid")
        tensor([[0.5000, 0.5000]])
    """
    dtype = compute_dtype(logits.dtype)
    if check_activation(activation) == "sigmoid":
        return logits.to(dtype).sigmoid()
    return logits.softmax(1, dtype=dtype)


def checked_class_probs(
    probs: Tensor,
    valid: Tensor | None,
    *,
    activation: str = "softmax",
    validate: bool = True,
    selector: str | None = None,
    name: str = "probs",
) -> tuple[Tensor, Tensor]:
    """The checked entry of a selector: shape/dtype checks, the validity mask, the value
    check (with ``validate``), then :func:`class_probs`.

    Args:
        probs: the selector's input, as in :func:`class_probs` (no logits).
        valid: optional bool mask of the positions: (N, *spatial), or (N, L, *spatial) for
            a multi-label output.
        activation: ``"softmax"`` (default) or ``"sigmoid"``.
        validate: check the values: probability vectors along dim 1 (softmax) or
            probabilities in [0, 1] (sigmoid), at valid positions.
        selector: a selector without multi-label support (see :func:`class_probs`).
        name: the argument's name in error messages.

    Returns:
        ``(class probabilities, valid)``; with ``"softmax"`` the first is ``probs`` itself.

    Example:
        >>> import torch
        >>> from pseudosel.activation import checked_class_probs
        >>> probs, valid = checked_class_probs(torch.rand(4, 3), None, activation="sigmoid")
        >>> probs.shape, valid.shape
        (torch.Size([4, 2, 3]), torch.Size([4, 3]))
    """
    activation = check_activation(activation)
    sigmoid = activation == "sigmoid"
    check_probs(probs, name=name, min_classes=1 if sigmoid else 2)
    if sigmoid and selector is not None and is_multilabel(probs, activation):
        refuse_multilabel(probs, selector)
    all_valid = valid is None
    valid = resolve_valid(probs, valid, activation=activation)
    if validate:
        if sigmoid:
            check_sigmoid_values(probs, valid)
        else:
            check_probability_values(probs, valid, all_valid=all_valid)
    if not sigmoid:
        return probs, valid
    return two_class(probs, multilabel=is_multilabel(probs, activation)), valid
