"""Passes written for torch.compile: the class planes walked one by one.

Under torch.compile a loop over the K class planes (N, *spatial) unrolls into one pointwise
kernel over the positions that reads every probability once, where reductions over dim 1
(``max``, ``argmax``, masked sums) compile to several passes and CPU inductor stores
boolean temporaries slowly. Unrolling is worth it up to :data:`UNROLL_MAX_CLASSES` classes;
beyond, the formulas' reductions are compiled as they are. Each pass is tested equal to
its formula (tests/kernels/test_planes.py), compiled and eager.
"""

from __future__ import annotations

import torch
from torch import Tensor

import pseudosel.features as formulas
import pseudosel.validation as validation
from pseudosel.kernels.blocks import flatten

__all__ = [
    "UNROLL_MAX_CLASSES",
    "class_plane_walk",
    "confidence_and_labels",
    "csl_features",
    "probability_vectors_ok",
    "unrolls",
]

# Up to this many classes the planes are walked one by one; the running arg-max is kept
# as a float, exact for these class counts.
UNROLL_MAX_CLASSES = 64


def unrolls(probs: Tensor) -> bool:
    """Whether the class planes of ``probs`` are few enough to walk one by one."""
    return 1 < probs.shape[1] <= UNROLL_MAX_CLASSES


def class_plane_walk(flat: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """max and arg-max over dim 1 of (n, K, L), reading each class plane once.

    A running maximum m and its index: class j takes over where p_j > m (strictly, so the
    lowest index wins ties, as ``max(1)``). The index is kept in the probabilities' float
    type (an int64 blend costs several vector ops per class) and returned so.
    """
    m = flat[:, 0].to(dtype)
    index = torch.zeros_like(m)
    for j in range(1, flat.shape[1]):
        plane = flat[:, j].to(dtype)
        index = torch.where(plane > m, float(j), index)
        m = torch.maximum(m, plane)
    return m, index


def confidence_and_labels(probs: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`pseudosel.features.confidence_and_labels` by :func:`class_plane_walk`."""
    shape = (probs.shape[0], *probs.shape[2:])
    confidence, index = class_plane_walk(flatten(probs), validation.compute_dtype(probs.dtype))
    return confidence.reshape(shape), index.to(torch.long).reshape(shape)


def csl_features(probs: Tensor, residual: str, g_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`pseudosel.features.csl_features` as one fused pass: the plane walk, then the
    spread's sums over the same planes written out (the compiler reuses the loaded values),
    with the per-position mean and 1 / r computed once rather than per class."""
    dtype = validation.compute_dtype(probs.dtype)
    flat = flatten(probs)
    shape = (probs.shape[0], *probs.shape[2:])
    confidence, index = class_plane_walk(flat, dtype)
    num_classes = flat.shape[1]
    planes = [flat[:, j].to(dtype) for j in range(num_classes)]
    tops = [index == j for j in range(num_classes)]
    r = torch.zeros_like(planes[0])
    for plane, top in zip(planes, tops, strict=True):
        r = r + torch.where(top, 0.0, plane)
    mean = r / (num_classes - 1)
    inverse = r.clamp_min(torch.finfo(r.dtype).tiny).reciprocal()
    squares = torch.zeros_like(r)
    drift = torch.zeros_like(r) if residual == "reference" else None
    for plane, top in zip(planes, tops, strict=True):
        deviation = torch.where(top, 0.0, (plane - mean) * inverse)
        squares = squares + deviation * deviation
        if drift is not None:
            drift = drift + deviation
    s = formulas.spread_from_sums(squares, drift, r, mean, num_classes, g_scale)
    labels = index.to(torch.long)
    return confidence.reshape(shape), s.reshape(shape), labels.reshape(shape)


def probability_vectors_ok(probs: Tensor, valid: Tensor) -> Tensor:
    """:func:`pseudosel.validation.probability_vectors_ok` with the class planes summed one
    by one: pointwise over the positions, so the compiler fuses the check into the
    selector's own pass over the probabilities."""
    tol = validation.sum_tolerance(probs.dtype)
    work = validation.compute_dtype(probs.dtype)
    planes = [probs[:, j].to(work) for j in range(probs.shape[1])]
    row_sum, row_min = planes[0], planes[0]
    for plane in planes[1:]:
        row_sum, row_min = row_sum + plane, torch.minimum(row_min, plane)
    ok_position = (row_min >= 0) & ((row_sum - 1).abs() <= tol)  # NaN compares False
    return (ok_position | ~valid).all()
