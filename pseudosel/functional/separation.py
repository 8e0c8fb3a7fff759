"""CSL's per-group split of 2-D points into two clusters, batched over groups, closed form.

The split is the spectral relaxation of 2-way k-means (CSL_SPEC.md §3): with X the (n, 2)
matrix of a group's valid points and M = XᵀX its 2x2 second-moment matrix with eigenpairs
(λ₁ ≥ λ₂, e₁, e₂), point i joins the cluster j that maximises |x_i·e_j| / √λ_j. Everything
reduces to M, so no SVD and no loop over groups are needed: M's eigen-decomposition is the
closed form for a symmetric 2x2 matrix.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "RANK_ONE_RATIO",
    "Axes",
    "GroupSplit",
    "accumulation_dtype",
    "assign_second_cluster",
    "principal_axes",
    "second_cluster_weights",
    "second_moments",
]

# With the optional rank-one guard, λ₂ at or below this fraction of λ₁ counts as "all points
# on one ray": no second cluster. Not in the paper nor the authors' code (they always split).
RANK_ONE_RATIO = 1e-12


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
    c: Tensor, s: Tensor, valid: Tensor, scope: str, ndim: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Reshape (N, *spatial) features and validity to (G, n): one row per boundary.

    ``scope="auto"`` is ``"sample"`` for dense input (``ndim`` > 2), ``"batch"`` otherwise.
    """
    if scope == "auto":
        scope = "sample" if ndim > 2 else "batch"
    shape = c.shape
    # explicit sizes, so that an empty batch reshapes too
    rows, size = (shape[0], math.prod(shape[1:])) if scope == "sample" else (1, c.numel())
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


def load_variants(options: dict) -> None:
    """Import the optional module behind a CSL ``solver=``/``boundary=`` option (e.g.
    ``solver="cvxpy"`` → :mod:`pseudosel.convex`), which registers it here: functional code
    never imports the convex layer itself."""
    for key in ("solver", "boundary"):
        module = VARIANT_MODULES.get(options.get(key))
        if module is not None:
            importlib.import_module(module)


def register_axes_solver(name: str, axes: Callable[[Tensor], Axes], rank_one_ratio: float):
    """Make ``csl(solver=name)`` compute its directions with ``axes``."""
    AXES_SOLVERS[name] = AxesSolver(axes, rank_one_ratio)


def register_boundary(name: str, refine: Callable[..., GroupSplit]) -> None:
    """Make ``csl(boundary=name)`` refine the paper's split with ``refine``."""
    BOUNDARIES[name] = refine


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


# The λ of CoVar's cluster rules (CSL_SPEC.md §4).
LINEAR_RULE_LAMBDA = 0.25
NEGLOG_RULE_LAMBDA = 0.5


def rule_score(means: Tensor, cluster_rule: str, eps: float) -> Tensor:
    """(G, 2 clusters, 2 features) cluster means → (G, 2) score; the higher is more reliable:
    ``"confidence"`` mean c (the ICCV code), ``"linear"`` mean c − 0.25·mean s, ``"neglog"``
    mean c − 0.5·log(mean s + eps) (both CoVar)."""
    conf, spread = means[..., 0], means[..., 1]
    if cluster_rule == "confidence":
        return conf
    if cluster_rule == "linear":
        return conf - LINEAR_RULE_LAMBDA * spread
    return conf - NEGLOG_RULE_LAMBDA * torch.log(spread + eps)


def reliable_cluster(
    sizes: Tensor, cluster_sums: Tensor, cluster_rule: str, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Which cluster is reliable, its mean (c, s) and its size.

    Args:
        sizes: (G, 2) points per cluster.
        cluster_sums: (G, 2 clusters, 2 features) sums of (c, s) per cluster (each summed
            on its own, so a one-point cluster's mean is its point exactly).
        cluster_rule: see :func:`rule_score`. Ties and empty clusters never win over
            cluster 1.
        eps: see :func:`rule_score`.

    Returns:
        ``(reliable_is_second (G,) bool, center (G, 2), n_reliable (G,))``.
    """
    means = cluster_sums / sizes.clamp_min(1)[..., None]
    scores = rule_score(means, cluster_rule, eps)
    reliable_is_second = (sizes[:, 1] > 0) & ((sizes[:, 0] == 0) | (scores[:, 1] > scores[:, 0]))
    center = torch.where(reliable_is_second[:, None], means[:, 1], means[:, 0])
    n_reliable = torch.where(reliable_is_second, sizes[:, 1], sizes[:, 0])
    return reliable_is_second, center, n_reliable


def round_toward(value: Tensor, dtype: torch.dtype, upward: bool) -> Tensor:
    """``value`` rounded to ``dtype`` toward +inf (``upward``) or −inf, not to nearest.

    For x in ``dtype``: x > v ⟺ x > round_down(v) and x < v ⟺ x < round_up(v), so the
    z-scores' signs (the trusted set) computed in ``dtype`` are those of the wide means.
    """
    if value.dtype == dtype:
        return value
    rounded = value.to(dtype)
    wide = rounded.to(value.dtype)
    missed = wide < value if upward else wide > value
    toward = torch.full_like(rounded, math.inf if upward else -math.inf)
    return torch.where(missed, torch.nextafter(rounded, toward), rounded)


def z_score_scales(
    center: Tensor, variance: Tensor, min_var: float, eps: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The per-group constants of the z-scores z_c = (c − μ_c)/σ_c, z_s = (μ_s − s)/σ_s in
    the points' ``dtype``: μ_c rounded down and μ_s rounded up (so that z_c > 0 ⟺ c > μ_c
    and z_s > 0 ⟺ s < μ_s exactly, as in the wide computation), 1/σ_c and −1/σ_s, each
    (G,), with σ² = max(variance, min_var) + eps."""
    inv_std = torch.rsqrt(variance.clamp_min(min_var) + eps).to(dtype)
    return (
        round_toward(center[:, 0], dtype, upward=False),
        round_toward(center[:, 1], dtype, upward=True),
        inv_std[:, 0],
        -inv_std[:, 1],
    )
