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

from pseudosel.validation import check_activation, compute_dtype

__all__ = ["apply_activation", "class_probs", "two_class"]


def two_class(p: Tensor, *, multilabel: bool) -> Tensor:
    """(1 − p, p) along dim 1: concatenated for a binary (N, 1, …) ``p``, stacked on a new
    dim 1 for a multi-label (N, L, …) one. 1 − p is computed in ``p``'s dtype."""
    if multilabel:
        return torch.stack((1 - p, p), 1)
    return torch.cat((1 - p, p), 1)


def class_probs(
    probs: Tensor,
    activation: str = "softmax",
    *,
    from_logits: bool = False,
    multilabel: bool | None = None,
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
        multilabel: for ``"sigmoid"``, whether dim 1 holds L labels; None (default) reads it
            from the shape, but a 3-D (N, X, Y) input must say
            (:func:`pseudosel.inputs.check_multilabel`).
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
    from pseudosel.inputs import prepare  # the front door builds on this module

    return prepare(
        probs,
        from_logits=from_logits,
        activation=activation,
        multilabel=multilabel,
        validate=False,
        per_class_state=selector,
    ).probs


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
