"""Class-prior-matched thresholds: per-class confidence cuts that keep pseudo-labels in the
proportions of a class prior (the labelled class distribution).

He et al., "Re-distributing Biased Pseudo Labels for Semi-supervised Semantic Segmentation:
A Baseline Investigation" (DARS), ICCV 2021, and the adaptive class-specific thresholds of
LabelMatch (Chen et al., "Label Matching Semi-Supervised Object Detection", CVPR 2022;
Efficient Teacher carries a copy, commented out in favour of its own cuts). A single global
threshold keeps far more pseudo-labels of the majority classes than their share; instead,
with

- n the number of valid positions (over the batch, and every rank under torch.distributed),
- s the kept share (DARS's labelling ratio α): a given number, or by default the share that
  a global confidence threshold τ keeps, #{ĉ ≥ τ} / n,
- π_c the prior (the class distribution of the labelled data),

class c keeps its k_c most confident positions among those predicted c:

    k_c = min(⌊s · n · π_c⌋, m_c),   m_c = #{valid positions with arg-max c},
    t_c = the k_c-th largest confidence among them,   mask = ĉ ≥ t_{ŷ}.

That is DARS's rule (``tool/gen_pseudo_label_utils.py``, ``get_threshold_and_sampling_ratio``:
``class_j_num = int(α · prior_j · N)``, threshold ``sorted_desc[class_j_num − 1]``, the
smallest score when the class has fewer). Where k_c = 0 — the prior gives the class less
than one position, or nothing is predicted c — the class keeps nothing: t_c is then the
next float above max(1, the class's highest confidence), a finite "keep none" value.

The cut is found on the device for all classes at once — one stable sort by confidence,
one stable sort by class, then one gather at each class's offset + k_c − 1 — with no host
synchronisation. Under torch.distributed the confidences and classes are gathered from
every rank first (every rank must pass the same input shape), so the cuts are exact:
2 ranks select what one process would on the concatenated batch.

Differences from the published code (docs: class_prior):

- DARS then randomly drops positions above t_c so that exactly k_c remain (its "random
  sampling", for ties at saturated float16 confidences); here every position tied with
  t_c is kept (deterministic, more than k_c only on ties).
- DARS, for k_c = 0, indexes ``sorted[-1]`` (keeps every position of the class) and fails
  on a class with no prediction; here such a class keeps nothing.
- LabelMatch's index ``int(P_c · percent)`` is 0-based — its cut is the (k_c + 1)-th
  largest — and it floors the cut at 0.05 (``min_threshold=0.05`` here); its count P_c is
  the expected number of objects (images × boxes per labelled image × π_c), not s · n · π_c.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_gather_cat, is_distributed
from pseudosel.features import confidence_and_labels
from pseudosel.inputs import per_class_inputs
from pseudosel.selection import Selection, hard_selection
from pseudosel.validation import check_real

__all__ = ["check_prior", "class_prior", "class_prior_thresholds"]

#: how far a given prior's sum may be from 1 (it is then divided by its sum)
PRIOR_SUM_TOLERANCE = 1e-3

PriorLike = Tensor | Sequence[float] | str | None


def _prior_dtype(device: torch.device) -> torch.dtype:
    """float64 for the per-class counts and prior, except where the device has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def check_prior(
    prior: PriorLike,
    num_classes: int,
    *,
    device: torch.device | str | None = None,
    validate: bool = True,
) -> Tensor:
    """A class prior as a (K,) float64 tensor summing to 1.

    Args:
        prior: None or ``"uniform"`` (1/K each), or K non-negative finite numbers summing
            to 1 (within 1e-3; they are then divided by their sum): a sequence or a 1-D
            tensor. A class with prior 0 keeps no pseudo-label.
        num_classes: K.
        device: where the result lives (default: the prior tensor's device, else CPU).
        validate: check the values (on the CPU, or from a CPU prior, a ValueError; for a
            prior on another device a device-side assertion, so no host synchronisation).

    Returns:
        (K,) tensor, float64 (float32 on MPS).

    Raises:
        TypeError: not None, ``"uniform"``, a sequence of numbers or a tensor.
        ValueError: wrong length or dimension; negative, non-finite, or not summing to 1.

    Example:
        >>> from pseudosel.functional import check_prior
        >>> check_prior([0.5, 0.3, 0.2], 3)
        tensor([0.5000, 0.3000, 0.2000], dtype=torch.float64)
        >>> check_prior([5, 3, 2], 3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: prior must sum to 1 (within 0.001), got sum 10; pass prior / prior.sum() ...
    """
    if isinstance(prior, str):
        if prior != "uniform":
            raise ValueError(f"prior must be None, 'uniform' or K numbers, got {prior!r}")
        prior = None
    if prior is None:
        where = torch.device("cpu") if device is None else torch.device(device)
        return torch.full((num_classes,), 1.0 / num_classes, dtype=_prior_dtype(where)).to(where)
    if isinstance(prior, Tensor):
        if prior.dtype == torch.bool or prior.is_complex():
            raise TypeError(f"prior must be a real tensor, got {prior.dtype}")
        values = prior.detach()
    elif isinstance(prior, Sequence) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in prior
    ):
        values = torch.tensor([float(v) for v in prior], dtype=torch.float64)
    else:
        raise TypeError(
            f"prior must be None, 'uniform', a sequence of numbers or a 1-D tensor, "
            f"got {type(prior).__name__}"
        )
    if values.dim() != 1 or values.shape[0] != num_classes:
        raise ValueError(
            f"prior must hold one value per class, shape ({num_classes},), "
            f"got shape {tuple(values.shape)}"
        )
    where = values.device if device is None else torch.device(device)
    values = values.to(device=where, dtype=_prior_dtype(where))
    if validate:
        total = values.sum()
        ok = (
            torch.isfinite(values).all()
            & (values >= 0).all()
            & ((total - 1).abs() <= PRIOR_SUM_TOLERANCE)
        )
        hint = (
            "prior must hold finite values >= 0 summing to 1; pass prior / prior.sum() for "
            "class counts"
        )
        if torch.compiler.is_compiling() or values.device.type != "cpu":
            torch._assert_async(ok, hint)  # reading the verdict would synchronise the device
        elif not bool(ok):
            if not bool(torch.isfinite(values).all()) or not bool((values >= 0).all()):
                raise ValueError(f"prior must hold finite values >= 0, got {values.tolist()}")
            raise ValueError(
                f"prior must sum to 1 (within {PRIOR_SUM_TOLERANCE:g}), got sum "
                f"{float(total):.6g}; pass prior / prior.sum() for class counts, or the "
                "labelled labels to ClassPriorSelector.update_labeled"
            )
    return values / values.sum()


def check_kept_share(kept_share: float | Tensor | None) -> float | Tensor | None:
    """``kept_share``: None, a number in [0, 1], or a 0-dim floating tensor (not checked:
    its value lives on the device)."""
    if kept_share is None:
        return None
    if isinstance(kept_share, Tensor):
        described = f"a {kept_share.dtype} tensor of shape {tuple(kept_share.shape)}"
        if not kept_share.is_floating_point():
            raise TypeError(
                f"kept_share must be a number in [0, 1] or a 0-dim floating tensor, got {described}"
            )
        if kept_share.dim() != 0:
            raise ValueError(
                f"kept_share must be a number in [0, 1] or a 0-dim floating tensor, got {described}"
            )
        return kept_share
    return check_real("kept_share", kept_share, low=0.0, high=1.0)


def _groups(labels: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """Flat class of each position, ``num_classes`` at the ignored ones (a last group)."""
    return torch.where(valid, labels, num_classes).flatten()


def class_cuts(
    confidence: Tensor,
    groups: Tensor,
    prior: Tensor,
    kept_share: float | Tensor | None,
    *,
    tau: float = 0.95,
    min_threshold: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The per-class cuts of a flat batch (already gathered from every rank).

    Args:
        confidence: (n,) max-probabilities.
        groups: (n,) long: the arg-max class, K at the ignored positions.
        prior: (K,) summing to 1 (:func:`check_prior`).
        kept_share: s, or None for the share of valid positions with confidence >= ``tau``.
        tau: the global threshold whose kept share is used when ``kept_share`` is None.
        min_threshold: a floor on the cuts of classes that keep something (LabelMatch:
            0.05).

    Returns:
        ``(thresholds, kept)``: (K,) cuts in the dtype of ``confidence`` and (K,) long k_c
        (module docstring).
    """
    num_classes = prior.shape[0]
    n = confidence.shape[0]
    dtype = prior.dtype
    valid = groups < num_classes
    count = valid.sum().to(dtype)
    if kept_share is None:
        share = (valid & (confidence >= tau)).sum().to(dtype) / count.clamp(min=1)
    else:
        share = torch.as_tensor(kept_share, dtype=dtype, device=prior.device)
    # per class: m_c (group K collects the ignored positions)
    per_group = torch.zeros(num_classes + 1, dtype=torch.long, device=groups.device)
    per_group.index_add_(0, groups, torch.ones_like(groups))
    start = (per_group.cumsum(0) - per_group)[:num_classes]
    predicted = per_group[:num_classes]
    target = (share * count * prior).floor().to(torch.long)  # DARS: int(α · π_c · N)
    kept = torch.minimum(target, predicted)
    # positions grouped by class, each group in descending confidence; a sentinel at the
    # end makes every gather in range (also for an empty batch)
    by_confidence = torch.sort(confidence, descending=True, stable=True).indices
    by_class = torch.sort(groups[by_confidence], stable=True).indices
    ordered = torch.cat((confidence[by_confidence][by_class], confidence.new_zeros(1)))
    kth = ordered[(start + kept - 1).clamp(min=0, max=n)]
    highest = torch.where(predicted > 0, ordered[start.clamp(max=n)], 1.0)
    keep_none = torch.nextafter(highest.clamp(min=1.0), highest.new_tensor(float("inf")))
    thresholds = torch.where(kept > 0, kth.clamp(min=min_threshold), keep_none)
    return thresholds, kept


def batch_cuts(
    confidence: Tensor,
    labels: Tensor,
    valid: Tensor,
    prior: Tensor,
    kept_share: float | Tensor | None,
    tau: float,
    min_threshold: float,
    process_group: ProcessGroup | None,
) -> tuple[Tensor, Tensor]:
    """:func:`class_cuts` of a batch, gathered from every rank first."""
    flat_confidence = confidence.flatten()
    groups = _groups(labels, valid, prior.shape[0])
    if is_distributed():
        flat_confidence = all_gather_cat(flat_confidence, process_group)
        groups = all_gather_cat(groups, process_group)
    return class_cuts(
        flat_confidence, groups, prior, kept_share, tau=tau, min_threshold=min_threshold
    )


def _check_options(tau: float, min_threshold: float) -> tuple[float, float]:
    return (
        check_real("tau", tau, low=0.0, high=1.0),
        check_real("min_threshold", min_threshold, low=0.0),
    )


@no_grad
def class_prior_thresholds(
    probs: Tensor,
    prior: PriorLike = None,
    kept_share: float | Tensor | None = None,
    *,
    tau: float = 0.95,
    min_threshold: float = 0.0,
    valid: Tensor | None = None,
    process_group: ProcessGroup | None = None,
    validate: bool = True,
    activation: str = "softmax",
) -> Tensor:
    """Per-class confidence cuts that keep pseudo-labels in the proportions of ``prior``
    (DARS): class c keeps its ⌊s · n · π_c⌋ most confident positions (module docstring).

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities.
        prior: π, K values summing to 1 (:func:`check_prior`). None or ``"uniform"``:
            1/K each.
        kept_share: s in [0, 1] (DARS's labelling ratio α; 0.2 to 0.65 in its configs),
            or a 0-dim tensor. None (default): the share of valid positions whose
            confidence is at least ``tau`` — as many pseudo-labels as a global threshold
            keeps, redistributed over the classes by the prior.
        tau: the global threshold of ``kept_share=None``. Default 0.95 (FixMatch's).
        min_threshold: a floor on each cut (LabelMatch: 0.05). Default 0.
        valid: optional bool (N, *spatial); False marks ignored positions.
        process_group: process group of the gather (default group, if initialised).
            Every rank must pass the same input shape.
        validate: check the probability values and the prior (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"`` for a binary output
            (N, 1, *spatial), read as two classes.

    Returns:
        (K,) cuts, in the compute dtype of ``probs``: the k_c-th largest confidence among
        the positions predicted c, or, for a class that keeps nothing (k_c = 0), the next
        float above max(1, its highest confidence).

    Example:
        >>> import torch
        >>> from pseudosel.functional import class_prior_thresholds
        >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4],
        ...                       [0.55, 0.45], [0.4, 0.6], [0.3, 0.7], [0.45, 0.55]])
        >>> # s · n = 0.5 · 8 = 4 pseudo-labels: 3 of class 0, 1 of class 1
        >>> class_prior_thresholds(probs, [0.75, 0.25], kept_share=0.5)
        tensor([0.7000, 0.7000])
    """
    tau, min_threshold = _check_options(tau, min_threshold)
    kept_share = check_kept_share(kept_share)
    probs, valid, _ = per_class_inputs(
        probs,
        valid,
        None,
        "class_prior_thresholds",
        validate=validate,
        activation=activation,
    )
    confidence, labels = confidence_and_labels(probs)
    prior = check_prior(prior, probs.shape[1], device=probs.device, validate=validate)
    thresholds, _ = batch_cuts(
        confidence, labels, valid, prior, kept_share, tau, min_threshold, process_group
    )
    return thresholds


def select_with_thresholds(
    confidence: Tensor, labels: Tensor, valid: Tensor, thresholds: Tensor, prior: Tensor
) -> Selection:
    """Keep a valid position when its confidence reaches its class's cut and its class's
    prior is positive; ``score`` = confidence − cut."""
    cut = thresholds.to(confidence.dtype)[labels]
    mask = valid & (confidence >= cut) & (prior[labels] > 0)
    return hard_selection(labels, mask, confidence - cut, valid)


@no_grad
def class_prior(
    probs: Tensor,
    prior: PriorLike = None,
    kept_share: float | Tensor | None = None,
    *,
    tau: float = 0.95,
    min_threshold: float = 0.0,
    valid: Tensor | None = None,
    process_group: ProcessGroup | None = None,
    validate: bool = True,
    activation: str = "softmax",
) -> Selection:
    """Keep pseudo-labels in the proportions of a class prior (DARS), with cuts from this
    batch (:func:`class_prior_thresholds`): class c keeps its ⌊s · n · π_c⌋ most confident
    positions (and every position tied with the last).

    For cuts that move smoothly across steps, with the prior learned from labelled labels,
    use :class:`~pseudosel.ClassPriorSelector`.

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities.
        prior: π, K values summing to 1; None or ``"uniform"``: 1/K each.
        kept_share: s in [0, 1], or None (default): the share kept by the global
            threshold ``tau``.
        tau: the global threshold of ``kept_share=None``. Default 0.95.
        min_threshold: a floor on the cuts. Default 0.
        valid: optional bool (N, *spatial); False marks ignored positions.
        process_group: process group of the gather (default group, if initialised).
        validate: check the probability values and the prior (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"`` (binary output).

    Returns:
        :class:`~pseudosel.Selection`: ``mask`` the kept positions, ``weight`` the mask as
        0/1, ``score`` = confidence − its class's cut (0 at ignored positions).

    Example:
        >>> import torch
        >>> from pseudosel.functional import class_prior
        >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4],
        ...                       [0.55, 0.45], [0.4, 0.6], [0.3, 0.7], [0.45, 0.55]])
        >>> class_prior(probs, [0.75, 0.25], kept_share=0.5).mask
        tensor([ True,  True,  True, False, False, False,  True, False])
    """
    tau, min_threshold = _check_options(tau, min_threshold)
    kept_share = check_kept_share(kept_share)
    probs, valid, _ = per_class_inputs(
        probs, valid, None, "class_prior", validate=validate, activation=activation
    )
    confidence, labels = confidence_and_labels(probs)
    prior = check_prior(prior, probs.shape[1], device=probs.device, validate=validate)
    thresholds, _ = batch_cuts(
        confidence, labels, valid, prior, kept_share, tau, min_threshold, process_group
    )
    return select_with_thresholds(confidence, labels, valid, thresholds, prior)
