"""The unlabeled-data loss: cross-entropy against pseudo-labels, weighted by a Selection —
softmax cross-entropy for class outputs, binary cross-entropy for sigmoid outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pseudosel.functional.shrinkmatch import ShrunkClasses
from pseudosel.selection import Selection
from pseudosel.validation import check_choice, check_real

__all__ = [
    "generalized_cross_entropy",
    "shrunk_cross_entropy",
    "weighted_binary_cross_entropy",
    "weighted_cross_entropy",
]

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


def shrunk_cross_entropy(
    logits: Tensor, shrunk: ShrunkClasses, *, normalize: str = "batch"
) -> Tensor:
    """ShrinkMatch's loss on the uncertain positions: cross-entropy over the kept classes
    only, toward the top-1 class, times the weight.

    ℓ_i = log Σ_{k ∈ S_i} exp z_ik − z_{i,y_i}, with S_i = ``shrunk.classes`` and
    y_i = ``shrunk.labels`` (the published code's ``F.cross_entropy`` over the logits of
    {rank 0} ∪ {ranks ≥ c}, target rank 0), summed as Σ w_i·ℓ_i over valid positions and
    divided as chosen by ``normalize``:

    - ``"batch"`` (default): all positions, ignored ones included — the published
      ``loss_u_shrink / B`` over the whole unlabelled batch (as
      :func:`weighted_cross_entropy`'s ``"batch"``);
    - ``"valid"``: the number of valid positions;
    - ``"selected"``: the number of positions with a non-zero weight;
    - ``"weight"``: the sum of the weights.

    The published code takes these logits from an auxiliary head of the strong view
    (``logits_u_s_aux``, an MLP beside the classifier), not from the classifier itself.
    Ignored positions contribute 0 and no gradient, even where their logits are not
    finite; a zero normaliser gives 0. Gradients flow to ``logits`` only.

    Args:
        logits: (N, K) or (N, K, *spatial) raw scores of the (strong) view being trained.
        shrunk: :func:`~pseudosel.functional.shrink_classes` of the weak view (or
            :meth:`~pseudosel.ShrinkMatchSelector.shrink`), fields (N, *spatial) and
            ``classes`` (N, K, *spatial).
        normalize: ``"batch"``, ``"valid"``, ``"selected"`` or ``"weight"``.

    Returns:
        0-dim tensor in float32 (float64 for float64 logits).

    Example:
        >>> import torch, pseudosel
        >>> from pseudosel.functional import shrink_classes
        >>> probs = torch.tensor([[0.97, 0.02, 0.01, 0.0], [0.60, 0.37, 0.02, 0.01]])
        >>> shrunk = shrink_classes(probs, tau=0.95)
        >>> logits = torch.zeros(2, 4, requires_grad=True)
        >>> loss = pseudosel.shrunk_cross_entropy(logits, shrunk)  # 0.6 · log 3 / 2
        >>> round(loss.item(), 4)
        0.3296
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        got = logits.dtype if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"logits must be a floating-point torch.Tensor, got {got}")
    if not isinstance(shrunk, ShrunkClasses):
        raise TypeError(
            "shrunk must be a pseudosel.ShrunkClasses (functional.shrink_classes or "
            f"ShrinkMatchSelector.shrink), got {type(shrunk).__name__}"
        )
    check_choice("normalize", normalize, NORMALIZATIONS)
    if tuple(logits.shape) != tuple(shrunk.classes.shape):
        raise ValueError(
            f"logits (N, K, *spatial) {tuple(logits.shape)} must match the shrunk classes "
            f"(N, K, *spatial) {tuple(shrunk.classes.shape)}"
        )
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    inside = shrunk.valid.unsqueeze(1)
    # ignored positions read as zeros and keep every class: finite, and no gradient
    scores = torch.where(inside, logits.to(dtype), 0.0)
    kept = torch.where(inside, shrunk.classes, True)
    log_total = torch.where(kept, scores, float("-inf")).logsumexp(1)
    per_position = log_total - scores.gather(1, shrunk.labels.unsqueeze(1)).squeeze(1)
    weight = shrunk.weight.detach()
    as_selection = Selection(shrunk.labels, weight, weight > 0, weight, shrunk.valid)
    return _weighted_mean(per_position, as_selection, normalize)


def generalized_cross_entropy(
    logits: Tensor,
    target: Selection | Tensor,
    weight: Tensor | None = None,
    *,
    q: float = 0.7,
    normalize: str = "batch",
) -> Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018) against pseudo-labels,
    times a weight — CGMatch's loss on its ambiguous samples.

    ℓ_i = (1 − p_{i,y_i}^q) / q with p = softmax(logits) clamped to [1e-7, 1] (CGMatch's
    ``GCELoss``; q → 0 gives cross-entropy, q = 1 the MAE). Summed as Σ w_i·ℓ_i over valid
    positions and divided as chosen by ``normalize``: ``"batch"`` (default: all positions,
    the authors' ``.mean()``), ``"valid"``, ``"selected"`` (positions with w > 0) or
    ``"weight"``; a zero normaliser gives 0. Ignored positions contribute 0 and no gradient,
    even where their logits are not finite. Gradients flow to ``logits`` only.

    Args:
        logits: (N, K) or (N, K, *spatial) raw scores (CGMatch applies it to the weak and
            to the strong view's logits, both with gradients).
        target: a :class:`~pseudosel.Selection` (its labels, weight and valid) or a long
            tensor of labels (N, *spatial) (all positions valid).
        weight: optional (N, *spatial) bool mask or float weights, replacing the
            selection's weight — e.g. ``CGMatchSelector.ambiguous(sel)``. Required with a
            labels tensor.
        q: in (0, 1]. Default 0.7 (the authors' ``GCELoss`` default, used by CGMatch).
        normalize: ``"batch"``, ``"valid"``, ``"selected"`` or ``"weight"``.

    Returns:
        0-dim tensor in float32 (float64 for float64 logits).

    Example:
        >>> import torch, pseudosel
        >>> logits = torch.zeros(2, 4, requires_grad=True)       # p_y = 1/4
        >>> labels, mask = torch.tensor([0, 3]), torch.tensor([True, False])
        >>> loss = pseudosel.generalized_cross_entropy(logits, labels, mask, q=0.5)
        >>> round(loss.item(), 4)                              # (1 - 0.5) / 0.5 / 2
        0.5
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        got = logits.dtype if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"logits must be a floating-point torch.Tensor, got {got}")
    check_choice("normalize", normalize, NORMALIZATIONS)
    q = check_real("q", q, low=0.0, high=1.0, low_open=True)
    if isinstance(target, Selection):
        labels, valid = target.labels, target.valid
        weight = target.weight if weight is None else weight
    elif isinstance(target, Tensor) and target.dtype == torch.long:
        if weight is None:
            raise TypeError("weight (a bool mask or float weights) is required with labels")
        labels, valid = target, torch.ones_like(target, dtype=torch.bool)
    else:
        got = target.dtype if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(
            f"target must be a pseudosel.Selection or a torch.long tensor of labels, got {got}"
        )
    positions = _positions(logits) if logits.dim() >= 2 else None
    if positions is None or tuple(labels.shape) != positions:
        raise ValueError(
            f"logits (N, K, *spatial) {None if positions is None else tuple(logits.shape)} "
            f"must match the labels (N, *spatial) {tuple(labels.shape)}"
        )
    if not isinstance(weight, Tensor) or tuple(weight.shape) != positions:
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a tensor of shape {positions}, got {got}")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    weight = weight.detach().to(dtype)
    # ignored positions read as zeros: finite, and no gradient
    scores = torch.where(valid.unsqueeze(1), logits.to(dtype), 0.0)
    p_label = scores.softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1).clamp(1e-7, 1.0)
    per_position = (1.0 - p_label.pow(q)) / q
    as_selection = Selection(labels, weight, valid & (weight > 0), weight, valid)
    return _weighted_mean(per_position, as_selection, normalize)


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
