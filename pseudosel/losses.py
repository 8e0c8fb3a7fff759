"""The unlabeled-data loss: cross-entropy against pseudo-labels, weighted by a Selection —
softmax cross-entropy for class outputs, binary cross-entropy for sigmoid outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pseudosel.selection import Selection
from pseudosel.validation import check_choice

__all__ = ["weighted_binary_cross_entropy", "weighted_cross_entropy"]

NORMALIZATIONS = ("valid", "selected", "weight", "batch")


def weighted_cross_entropy(
    logits: Tensor, selection: Selection, *, normalize: str = "valid"
) -> Tensor:
    """Cross-entropy of ``logits`` against ``selection.labels``, times ``selection.weight``.

    The per-position losses ℓ_i = CE(logits_i, labels_i) are summed as Σ w_i·ℓ_i and divided
    by a normaliser chosen with ``normalize`` — the choice differs between methods and changes
    the effective learning rate:

    - ``"valid"`` (default): the number of valid positions (UniMatch, CSL);
    - ``"selected"``: the number of selected positions (``selection.mask``);
    - ``"weight"``: the sum of the weights;
    - ``"batch"``: all positions, ignored ones included (FixMatch / USB's ``.mean()``).

    A zero normaliser (nothing valid, nothing selected) gives a loss of 0 without NaN.
    Gradients flow to ``logits`` only (the selection is treated as constant).

    Args:
        logits: (N, K) or (N, K, *spatial) raw scores of the (strong) view being trained.
        selection: pseudo-labels and weights with fields of shape (N, *spatial).
        normalize: ``"valid"``, ``"selected"``, ``"weight"`` or ``"batch"``.

    Returns:
        0-dim tensor in float32 (float64 for float64 logits).

    Example:
        >>> import torch, pseudosel
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> sel = pseudosel.select_reliable(torch.randn(8, 10).softmax(1), "threshold", tau=0.0)
        >>> loss = pseudosel.weighted_cross_entropy(logits, sel)
        >>> bool(torch.isclose(loss, torch.nn.functional.cross_entropy(logits, sel.labels)))
        True
    """
    _check_loss_inputs(logits, selection, normalize)
    expected = (logits.shape[0], *logits.shape[2:]) if logits.dim() >= 2 else None
    if expected is None or tuple(selection.labels.shape) != expected:
        raise ValueError(
            f"logits (N, K, *spatial) {tuple(logits.shape)} must match the selection's "
            f"(N, *spatial) {tuple(selection.labels.shape)}"
        )
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    per_position = F.cross_entropy(logits.to(dtype), selection.labels, reduction="none")
    return _weighted_mean(per_position, selection, normalize)


def weighted_binary_cross_entropy(
    logits: Tensor, selection: Selection, *, normalize: str = "valid"
) -> Tensor:
    """Binary cross-entropy of sigmoid ``logits`` against ``selection.labels`` (0/1), times
    ``selection.weight``: the counterpart of :func:`weighted_cross_entropy` for the binary
    and multi-label outputs selected with ``activation="sigmoid"`` (docs/binary.md).

    ℓ_i = −[y_i·log σ(z_i) + (1 − y_i)·log(1 − σ(z_i))] with y_i = ``selection.labels``
    (1 = positive), computed stably from the logits
    (:func:`torch.nn.functional.binary_cross_entropy_with_logits`), then summed as
    Σ w_i·ℓ_i and divided as in :func:`weighted_cross_entropy` (``"valid"``,
    ``"selected"``, ``"weight"`` or ``"batch"``; a zero normaliser gives 0).

    Args:
        logits: raw scores of the (strong) view being trained: (N, 1, *spatial) for a binary
            output (selection fields (N, *spatial)) or (N, L, *spatial) for L labels
            (selection fields (N, L, *spatial), one position per (sample, label)).
        selection: pseudo-labels in {0, 1} and weights, e.g. from
            ``select_reliable(probs, activation="sigmoid")``.
        normalize: ``"valid"`` (default), ``"selected"``, ``"weight"`` or ``"batch"``.

    Returns:
        0-dim tensor in float32 (float64 for float64 logits). Gradients flow to ``logits``
        only.

    Example:
        >>> import torch, pseudosel
        >>> logits = torch.randn(4, 1, 8, 8, requires_grad=True)   # binary segmentation
        >>> sel = pseudosel.select_reliable(logits.detach(), "threshold", tau=0.0,
        ...                                 from_logits=True, activation="sigmoid")
        >>> loss = pseudosel.weighted_binary_cross_entropy(logits, sel)
        >>> target = (logits.detach() > 0).float()
        >>> expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        >>> bool(torch.isclose(loss, expected))
        True
    """
    _check_loss_inputs(logits, selection, normalize)
    fields = tuple(selection.labels.shape)
    if logits.dim() >= 2 and tuple(logits.shape) == fields:
        scores = logits  # multi-label (N, L, *spatial)
    elif logits.dim() >= 2 and logits.shape[1] == 1 and fields == _positions(logits):
        scores = logits.squeeze(1)  # binary (N, 1, *spatial)
    else:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be (N, 1, *spatial) with selection fields "
            f"(N, *spatial) (binary), or (N, L, *spatial) with fields of the same shape "
            f"(multi-label); got selection fields {fields}"
        )
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    target = (selection.labels == 1).to(dtype)
    per_position = F.binary_cross_entropy_with_logits(scores.to(dtype), target, reduction="none")
    return _weighted_mean(per_position, selection, normalize)


def _positions(logits: Tensor) -> tuple[int, ...]:
    return (logits.shape[0], *logits.shape[2:])


def _check_loss_inputs(logits: object, selection: object, normalize: object) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        got = logits.dtype if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"logits must be a floating-point torch.Tensor, got {got}")
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a pseudosel.Selection, got {type(selection).__name__}")
    check_choice("normalize", normalize, NORMALIZATIONS)


def _weighted_mean(per_position: Tensor, selection: Selection, normalize: str) -> Tensor:
    """Σ w_i·ℓ_i over valid positions, divided by the ``normalize`` denominator (0 → 0)."""
    dtype = per_position.dtype
    weight = selection.weight.detach().to(dtype)
    # ignored positions contribute exactly 0, even if their logits are not finite
    total = torch.where(selection.valid, per_position * weight, 0.0).sum()
    if normalize == "valid":
        denominator = selection.valid.sum().to(dtype)
    elif normalize == "selected":
        denominator = selection.mask.sum().to(dtype)
    elif normalize == "weight":
        denominator = torch.where(selection.valid, weight, 0.0).sum()
    else:
        denominator = torch.tensor(
            float(selection.labels.numel()), dtype=dtype, device=total.device
        )
    # divide by a safe denominator and zero the result, so the backward pass has no 0/0 either
    safe = torch.where(denominator > 0, denominator, 1.0)
    return total / safe * (denominator > 0)
