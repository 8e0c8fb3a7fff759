"""Fixed confidence threshold (FixMatch, UniMatch): keep positions with max p >= tau."""

from __future__ import annotations

from torch import Tensor

from pseudosel import kernels
from pseudosel._grad import no_grad
from pseudosel.features import confidence_and_labels
from pseudosel.inputs import prepare
from pseudosel.kernels.scalars import operands
from pseudosel.selection import Selection, hard_selection
from pseudosel.validation import check_activation, check_real, in_dtype

__all__ = ["class_threshold_selection", "threshold"]


@no_grad
def threshold(
    probs: Tensor,
    tau: float = 0.95,
    *,
    valid: Tensor | None = None,
    validate: bool = True,
    activation: str = "softmax",
    multilabel: bool | None = None,
    backend: str = "auto",
) -> Selection:
    """FixMatch's hard selection: mask = max_k p_k >= tau.

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities, K >= 2. The comparison is done in
            float32 for float16/bfloat16 input (bf16 spacing near 1 is ~0.004).
        tau: confidence threshold in [0, 1]. Default 0.95 (FixMatch, UniMatch).
        valid: optional bool (N, *spatial); False marks ignored positions.
        validate: check that valid positions hold probabilities (default True).
        activation: ``"softmax"`` (default: ``probs`` are class probabilities) or
            ``"sigmoid"``: (N, 1, *spatial) binary or (N, L, *spatial) multi-label
            probabilities p, read as the two classes (1 − p, p)
            (:func:`~pseudosel.functional.class_probs`). Multi-label: one position per
            (sample, label), selected when max(p, 1 − p) >= tau — a confident positive
            (p >= tau, label 1) or a confident negative (p <= 1 − tau, label 0).
        multilabel: for ``"sigmoid"``: dim 1 holds labels (True) or one binary channel
            (False); None (default) reads it from the shape (3-D input must say).
        backend: how it runs (the same results; docs/performance.md): ``"auto"`` (default:
            on CUDA the path a GPU run measured fastest,
            ``pseudosel.kernels.MEASURED_FASTEST``; until there is one, and on other
            devices, ``"eager"``), ``"eager"`` (torch ops),
            ``"compiled"`` (:func:`pseudosel.compiled.compiled`, compiled on the first
            call) or ``"triton"`` (CUDA tensors: one Triton pass computes the selection
            and the value check, :mod:`pseudosel.kernels.triton`; needs the ``triton``
            extra).

    Returns:
        :class:`~pseudosel.Selection`: labels = arg-max, weight = mask as float,
        score = max confidence (0 at ignored positions).

    Example:
        >>> import torch
        >>> from pseudosel.functional import threshold
        >>> sel = threshold(torch.tensor([[0.97, 0.03], [0.6, 0.4]]))
        >>> sel.mask, sel.weight
        (tensor([ True, False]), tensor([1., 0.]))
    """
    tau = check_real("tau", tau, low=0.0, high=1.0)
    path = kernels.resolve_backend("threshold", backend, probs)
    if path == "compiled":
        from pseudosel.compiled import shared_compiled

        return shared_compiled(threshold)(
            probs, tau, valid=valid, validate=validate, activation=activation,
            multilabel=multilabel,
        )  # fmt: skip
    # triton: the value check of softmax probabilities is fused into the selection's pass
    fused_check = path == "triton" and validate and check_activation(activation) == "softmax"
    given_probs, given_valid = probs, valid
    probs, valid, all_valid = prepare(
        probs,
        valid,
        activation=activation,
        multilabel=multilabel,
        validate=validate and not fused_check,
    )
    if path == "triton":
        from pseudosel.compiled import raise_on_verdict
        from pseudosel.kernels import triton as triton_kernels

        labels, weight, mask, score, verdict = triton_kernels.threshold_selection(
            probs, tau, None if all_valid else valid, check=fused_check
        )
        if verdict is not None:
            raise_on_verdict(verdict, given_probs, given_valid, activation)
        return Selection(labels, weight, mask, score, valid)
    return threshold_after_front_door(probs, tau, valid, all_valid)


def threshold_after_front_door(
    probs: Tensor,
    tau: float,
    valid: Tensor,
    all_valid: bool,
    features: tuple[Tensor, Tensor] | None = None,
) -> Selection:
    """:func:`threshold`'s eager formula on what the front door returned (also the plain
    lane of :class:`~pseudosel.ThresholdSelector`, :mod:`pseudosel.selectors._lane`).
    ``features``: the confidence and arg-max of ``probs`` when the caller has them."""
    confidence, labels = features or confidence_and_labels(probs)
    (tau,) = operands(confidence, tau)
    mask = confidence >= tau
    if not all_valid:
        mask &= valid
    return hard_selection(labels, mask, confidence, valid, all_valid=all_valid)


@no_grad
def class_threshold_selection(
    probs: Tensor, class_thresholds: Tensor, valid: Tensor, *, all_valid: bool = False
) -> Selection:
    """Hard selection with one threshold per class: mask = max p >= T(argmax p).

    The shared last step of the class-wise selectors (FlexMatch, FreeMatch).

    Args:
        probs: (N, K, *spatial) probabilities.
        class_thresholds: (K,) thresholds T(k).
        valid: bool (N, *spatial).
        all_valid: promise that ``valid`` is all True (skips the masking). Default False.

    Returns:
        :class:`~pseudosel.Selection`; score = max p − T(argmax p) (0 at ignored positions).

    Example:
        >>> import torch
        >>> from pseudosel.functional import class_threshold_selection
        >>> probs = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
        >>> class_threshold_selection(probs, torch.tensor([0.5, 0.9]),
        ...                           torch.ones(2, dtype=torch.bool)).mask
        tensor([ True, False])
    """
    confidence, labels = confidence_and_labels(probs)
    return class_thresholds_on(confidence, labels, class_thresholds, valid, all_valid)


def class_thresholds_on(
    confidence: Tensor, labels: Tensor, class_thresholds: Tensor, valid: Tensor, all_valid: bool
) -> Selection:
    """:func:`class_threshold_selection` on the confidence and arg-max of the probabilities
    (also the plain lane of :class:`~pseudosel.FreeMatchSelector`,
    :mod:`pseudosel.selectors._lane`)."""
    threshold = in_dtype(class_thresholds, confidence.dtype)[labels]
    mask = confidence >= threshold
    if not all_valid:
        mask &= valid
    return hard_selection(labels, mask, confidence - threshold, valid, all_valid=all_valid)
