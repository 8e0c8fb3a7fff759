"""CSL's per-group split of 2-D points into two clusters, batched over groups, closed form.

The split is the spectral relaxation of 2-way k-means (CSL_SPEC.md §3): with X the (n, 2)
matrix of a group's valid points and M = XᵀX its 2x2 second-moment matrix with eigenpairs
(λ₁ ≥ λ₂, e₁, e₂), point i joins the cluster j that maximises |x_i·e_j| / √λ_j. Everything
reduces to M, so no SVD and no loop over groups are needed: M's eigen-decomposition is the
closed form for a symmetric 2x2 matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "RANK_ONE_RATIO",
    "Axes",
    "accumulation_dtype",
    "assign_second_cluster",
    "group_blocks",
    "principal_axes",
    "second_cluster_weights",
    "second_moments",
    "stored",
]

# With the optional rank-one guard, λ₂ at or below this fraction of λ₁ counts as "all points
# on one ray": no second cluster. Not in the paper nor the authors' code (they always split).
RANK_ONE_RATIO = 1e-12
# Eager CPU passes over (G, n) group data in blocks of about this many positions in total:
# smaller blocks keep the float64 temporaries small enough to be reused from the heap
# instead of mapped fresh (page faults) on every op; measured on 8x321x321 positions, eager
# CSL 26.8x the read-once floor with blocks of 4M positions, 19.9x with these.
_CPU_BLOCK_POSITIONS = 1 << 17
# ... in at most this many blocks: the op count per call must not grow with the input.
_CPU_MAX_BLOCKS = 4


class Axes(NamedTuple):
    """Eigen-decomposition of a batch of symmetric 2x2 matrices, (G,) per field.

    ``e1 = (cos, sin)`` belongs to the larger eigenvalue ``lam1``; ``e2 = (-sin, cos)``.
    """

    lam1: Tensor
    lam2: Tensor
    cos: Tensor
    sin: Tensor


class GroupSplit(NamedTuple):
    """Result of CSL's split of G groups (:func:`pseudosel.functional.csl.split_groups`):
    (G, n) per position; ``reliable_is_second`` (G,) and ``center`` (G, 2), the reliable
    cluster's mean (c, s) — with the paper's rule a position is trusted exactly when
    c > center_c or s < center_s."""

    weight: Tensor
    mask: Tensor
    score: Tensor
    in_second: Tensor
    reliable_is_second: Tensor
    center: Tensor


def group_points(
    c: Tensor, s: Tensor, valid: Tensor, group: str, ndim: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Reshape (N, *spatial) features and validity to (G, n): one row per group.

    ``group="auto"`` is ``"sample"`` for dense input (``ndim`` > 2), ``"batch"`` otherwise.
    """
    if group == "auto":
        group = "sample" if ndim > 2 else "batch"
    shape = c.shape
    # explicit sizes, so that an empty batch reshapes too
    rows, size = (shape[0], math.prod(shape[1:])) if group == "sample" else (1, c.numel())
    return c.reshape(rows, size), s.reshape(rows, size), valid.reshape(rows, size)


class AxesSolver(NamedTuple):
    """Computes the split directions from (G, 2, 2) moments; ``rank_one_ratio`` is the
    λ₂/λ₁ its eigenvalues need for the optional rank-one guard."""

    axes: Callable[[Tensor], Axes]
    rank_one_ratio: float


# The variants of CSL's split plug in here, by name, so that functional code never imports
# the optional convex layer: pseudosel.convex registers the solver "cvxpy" and
# pseudosel.max_margin the boundary "max_margin" when they are imported (VARIANT_MODULES
# says which module provides which name; pseudosel.select_reliable and CSLSelector import
# it on demand).
AXES_SOLVERS: dict[str, AxesSolver] = {}
# A boundary refines the paper's split: (c, s, valid, split, alpha=, max_points=, seed=).
BOUNDARIES: dict[str, Callable[..., GroupSplit] | None] = {"paper": None}
VARIANT_MODULES = {"cvxpy": "pseudosel.convex", "max_margin": "pseudosel.max_margin"}


def register_axes_solver(name: str, axes: Callable[[Tensor], Axes], rank_one_ratio: float):
    """Make ``csl(solver=name)`` compute its directions with ``axes``."""
    AXES_SOLVERS[name] = AxesSolver(axes, rank_one_ratio)


def register_boundary(name: str, refine: Callable[..., GroupSplit]) -> None:
    """Make ``csl(boundary=name)`` refine the paper's split with ``refine``."""
    BOUNDARIES[name] = refine


def group_blocks(groups: int, size: int, device: torch.device) -> list[slice]:
    """Column slices over (G, n) group data: a few blocks in eager CPU, else one slice.

    Blocks of memory, not of samples: their count depends on G·n only, and is at most
    ``_CPU_MAX_BLOCKS``, so the number of torch ops per call stays bounded."""
    if (
        torch.compiler.is_compiling()
        or device.type != "cpu"
        or groups * size <= _CPU_BLOCK_POSITIONS
    ):
        return [slice(None)]
    wanted = min(-(-groups * size // _CPU_BLOCK_POSITIONS), _CPU_MAX_BLOCKS, size)
    step = -(-size // wanted)
    return [slice(i, i + step) for i in range(0, size, step)]


def stored(values: Tensor) -> Tensor:
    """``values`` unchanged; under torch.compile, computed once into a buffer.

    Per-group scalars (the split directions, the reliable cluster's centre and scales) are
    small pointwise expressions of per-group sums, and inductor inlines such expressions
    into every loop that reads them — into the passes over the positions, where they are
    then recomputed every 16 positions (atan2, sincos, hypot and sqrt in the assignment:
    1.26 ms instead of 0.43 ms for that pass at 8x321x321 positions on a 2-core CPU). A
    reduction's output is always stored, so the values go through one that changes nothing:
    the max over 16 copies (exact; keeps −0.0 and NaN).
    """
    if not torch.compiler.is_compiling():
        return values
    return values.unsqueeze(0).expand(16, *values.shape).amax(0)


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 for the per-group scalars (eigen-decomposition, means, variances), except
    where the device has none (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def second_moments(c: Tensor, s: Tensor, acc_dtype: torch.dtype) -> Tensor:
    """M = XᵀX per group, where row i of X is the point (c_i, s_i).

    Args:
        c: (G, n) first coordinates (confidence), ignored points already zeroed.
        s: (G, n) second coordinates (residual variance), ignored points already zeroed.
        acc_dtype: dtype of the products, the sums and the result (float64 unless
            unavailable). The points are widened before they are multiplied, so for float32
            input every product is exact and only the summation rounds; the
            eigen-decomposition that follows needs this, as det(M) cancels.

    Returns:
        (G, 2, 2) symmetric matrices in ``acc_dtype``.
    """
    c, s = c.to(acc_dtype), s.to(acc_dtype)
    m11 = (c * c).sum(-1)
    m12 = (c * s).sum(-1)
    m22 = (s * s).sum(-1)
    return torch.stack((torch.stack((m11, m12), -1), torch.stack((m12, m22), -1)), -2)


def principal_axes(moments: Tensor) -> Axes:
    """Closed-form eigen-decomposition of symmetric 2x2 matrices.

    θ = ½·atan2(2 M₁₂, M₁₁ − M₂₂) is the angle of the top eigenvector; λ₂ is taken as
    det(M) / λ₁ (not trace/2 − radius) so it keeps its relative accuracy when λ₂ ≪ λ₁.

    Args:
        moments: (G, 2, 2) symmetric positive semi-definite matrices.

    Returns:
        :class:`Axes` with (G,) fields in the dtype of ``moments``.
    """
    m11, m12, m22 = moments[:, 0, 0], moments[:, 0, 1], moments[:, 1, 1]
    half_trace = (m11 + m22) / 2
    radius = torch.hypot((m11 - m22) / 2, m12)
    lam1 = half_trace + radius
    det = m11 * m22 - m12 * m12
    lam2 = (det / lam1.clamp_min(torch.finfo(lam1.dtype).tiny)).clamp_min(0)
    theta = torch.atan2(2 * m12, m11 - m22) / 2
    return Axes(lam1, lam2, torch.cos(theta), torch.sin(theta))


def assign_second_cluster(
    c: Tensor, s: Tensor, axes: Axes, count: Tensor, rank_one_ratio: float | None = None
) -> Tensor:
    """Which points join the second cluster (True) rather than the first.

    Point i goes to cluster 2 when |x_i·e₂|·√λ₁ > |x_i·e₁|·√λ₂ (the division-free form of
    comparing |x_i·e_j| / √λ_j); ties go to cluster 1. Groups with n <= 1 keep everything
    in cluster 1. Otherwise the group is always split, as in the paper and the authors' code;
    on points that lie exactly on one ray the split then follows rounding (as the authors'
    SVD does), except that identical points always share a cluster and points on the c axis
    (s = 0, as for K = 2 with the theory residual) tie and stay in cluster 1.

    Args:
        c: (G, n) first coordinates (confidence) of the points.
        s: (G, n) second coordinates (residual variance); callers mask ignored points out.
        axes: the groups' :class:`Axes`.
        count: (G,) number of valid points per group.
        rank_one_ratio: ``None`` (default: always split) or the rank-one guard, a ratio
            λ₂ / λ₁ at or below which a group counts as rank one and stays one cluster
            (:data:`RANK_ONE_RATIO` = 1e-12 for the closed form; eigenvalues from a solver
            need a looser value). Not in the paper nor the authors' code.

    Returns:
        (G, n) bool — the kernel's own assignment (:func:`second_cluster_weights`) as bool.
    """
    return second_cluster_weights(c, s, axes, count, rank_one_ratio) > 0


def second_cluster_weights(
    c: Tensor, s: Tensor, axes: Axes, count: Tensor, rank_one_ratio: float | None = None
) -> Tensor:
    """:func:`assign_second_cluster` as 0/1 floats in the dtype of ``c`` (the kernel's form).

    The directions are pre-scaled by √λ (|x·e₂|·√λ₁ vs |x·e₁|·√λ₂) and the comparison is
    sign(difference) clamped at 0, which is cheap arithmetic instead of bool tensors.
    """
    dtype = c.dtype
    root1, root2 = axes.lam1.sqrt(), axes.lam2.sqrt()
    cos, sin = axes.cos, axes.sin
    along_first = torch.addcmul(
        c * (cos * root2).to(dtype)[:, None], s, (sin * root2).to(dtype)[:, None]
    ).abs_()
    along_second = torch.addcmul(
        s * (cos * root1).to(dtype)[:, None], c, (-sin * root1).to(dtype)[:, None]
    ).abs_()
    second = torch.sign(along_second.sub_(along_first)).clamp_(min=0)  # ties → cluster 1
    degenerate = count <= 1
    if rank_one_ratio is not None:
        degenerate = degenerate | (axes.lam2 <= rank_one_ratio * axes.lam1)
    return second.mul_((~degenerate).to(dtype)[:, None])


register_axes_solver("closed_form", principal_axes, RANK_ONE_RATIO)
