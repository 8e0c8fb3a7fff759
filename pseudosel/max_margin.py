"""Experimental, beyond the paper: a max-margin boundary for CSL (``boundary="max_margin"``).

CSL's rule trusts a position when its confidence is above, or its residual variance below,
the reliable cluster's mean, and falls off as a Gaussian in z-scores elsewhere. Here the
boundary is instead a soft-margin SVM with quadratic features of the standardised (c, s),
fitted per group between the two spectral clusters (reliable = +1) on a seeded, stratified
subsample of at most ``max_points`` positions, all groups at once with cvxpylayers:

    minimise ½‖w‖² + C Σᵢ ξᵢ   s.t.   yᵢ (w·φ(xᵢ) + b) >= 1 − ξᵢ,  ξᵢ >= 0.

With f = w·φ(x) + b (the SVM margins sit at f = ±1), weight = 1 where f >= 0 and
exp(−f² / α) elsewhere. Groups whose subsample lacks one of the clusters keep the paper's
weights. Slow (a conic solve per batch) and not for ``torch.compile``.
"""

from __future__ import annotations

import functools

import cvxpy as cp
import torch
from torch import Tensor

from pseudosel.convex import _quiet_cvxpylayers, check_solver
from pseudosel.functional.separation import GroupSplit, register_boundary

__all__ = ["max_margin_split", "quadratic_features", "svm_problem"]

NUM_FEATURES = 5


def quadratic_features(z: Tensor) -> Tensor:
    """(…, 2) standardised points → (…, 5) features (z₁, z₂, z₁², z₁z₂, z₂²).

    Example:
        >>> import torch
        >>> from pseudosel.max_margin import quadratic_features
        >>> quadratic_features(torch.tensor([2.0, 3.0]))
        tensor([2., 3., 4., 6., 9.])
    """
    z1, z2 = z[..., 0], z[..., 1]
    return torch.stack((z1, z2, z1 * z1, z1 * z2, z2 * z2), -1)


@functools.lru_cache(maxsize=8)
def svm_problem(points: int) -> tuple[cp.Problem, list[cp.Parameter], list[cp.Variable]]:
    """The DPP soft-margin SVM on ``points`` rows: parameters (Y·Φ, y, C·used), variables
    (w, b). Rows with C·used = 0 are padding and cost nothing.

    Example:
        >>> from pseudosel.max_margin import svm_problem
        >>> problem, parameters, variables = svm_problem(8)
        >>> problem.is_dpp(), [p.shape for p in parameters]
        (True, [(8, 5), (8,), (8,)])
    """
    signed = cp.Parameter((points, NUM_FEATURES), name="y_phi")
    labels = cp.Parameter(points, name="y")
    cost = cp.Parameter(points, nonneg=True, name="c_used")
    w = cp.Variable(NUM_FEATURES, name="w")
    b = cp.Variable(name="b")
    slack = cp.Variable(points, nonneg=True, name="xi")
    objective = 0.5 * cp.sum_squares(w) + cp.sum(cp.multiply(cost, slack))
    problem = cp.Problem(cp.Minimize(objective), [signed @ w + cp.multiply(labels, b) >= 1 - slack])
    assert problem.is_dpp()
    return problem, [signed, labels, cost], [w, b]


@functools.lru_cache(maxsize=8)
def _svm_layer(points: int, solver: str):
    from cvxpylayers.torch import CvxpyLayer

    problem, parameters, variables = svm_problem(points)
    method = {"CLARABEL": "Clarabel", "SCS": "SCS", "ECOS": "ECOS"}[solver]
    return CvxpyLayer(
        problem, parameters=parameters, variables=variables, solver_args={"solve_method": method}
    )


def _stratified_subsample(
    positive: Tensor, negative: Tensor, max_points: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Up to max_points // 2 random positions of each class per group.

    Returns indices (G, m) and a bool ``used`` (G, m) (False on padding)."""
    half = max_points // 2
    take = min(half, positive.shape[1])
    gen = torch.Generator().manual_seed(seed)
    picks, used = [], []
    for members in (positive, negative):
        keys = torch.rand(members.shape, generator=gen).to(members.device)
        keys = torch.where(members, keys, -1.0)
        top = keys.topk(take, dim=1)
        picks.append(top.indices)
        used.append(top.values >= 0)
    return torch.cat(picks, 1), torch.cat(used, 1)


def max_margin_split(
    c: Tensor,
    s: Tensor,
    valid: Tensor,
    split: GroupSplit,
    *,
    alpha: float = 2.0,
    max_points: int = 256,
    seed: int = 0,
    svm_c: float = 1.0,
    solver: str = "CLARABEL",
) -> GroupSplit:
    """Replace CSL's weights by those of a max-margin boundary between its two clusters.

    Args:
        c: (G, n) confidence.
        s: (G, n) scaled residual variance.
        valid: (G, n) bool.
        split: the paper's :class:`~pseudosel.functional.csl.GroupSplit` of the same groups
            (its clusters label the SVM's training points; its weights are the fallback).
        alpha: Gaussian width outside the boundary, weight exp(−f² / α). Default 2.0.
        max_points: subsample size per group (half per cluster). Default 256.
        seed: subsample seed. Default 0.
        svm_c: soft-margin cost C. Default 1.0.
        solver: conic solver for cvxpylayers. Default CLARABEL.

    Returns:
        :class:`GroupSplit` with the new weight, mask (weight == 1) and score f; clusters
        unchanged.

    Example:
        >>> import torch
        >>> from pseudosel.functional.csl import split_groups
        >>> from pseudosel.max_margin import max_margin_split
        >>> c = torch.cat((0.95 + 0.01 * torch.rand(1, 50), 0.5 + 0.05 * torch.rand(1, 50)), 1)
        >>> s = torch.cat((0.01 * torch.rand(1, 50), 0.3 + 0.05 * torch.rand(1, 50)), 1)
        >>> valid = torch.ones_like(c, dtype=torch.bool)
        >>> result = max_margin_split(c, s, valid, split_groups(c, s, valid))
        >>> bool(result.mask[0, :50].all()), bool(result.mask[0, 50:].any())
        (True, False)
    """
    solver = check_solver(solver)
    groups = c.shape[0]
    work = torch.float64
    reliable = torch.where(
        split.reliable_is_second[:, None], split.in_second, valid & ~split.in_second
    )
    other = valid & ~reliable
    x = torch.stack((c, s), -1).to(work).masked_fill(~valid[..., None], 0.0)
    count = valid.sum(1, keepdim=True).clamp_min(1).to(work)
    mean = x.sum(1) / count
    centred = (x - mean[:, None]).masked_fill(~valid[..., None], 0.0)
    std = (centred.pow(2).sum(1) / count).sqrt().clamp_min(1e-12)
    features = quadratic_features((x - mean[:, None]) / std[:, None])  # (G, n, 5)

    index, used = _stratified_subsample(reliable, other, max_points, seed)
    labels = torch.gather(reliable, 1, index).to(work) * 2 - 1  # +1 reliable, -1 other
    labels = labels * used
    rows = torch.gather(features, 1, index[..., None].expand(-1, -1, NUM_FEATURES))
    both = (used & (labels > 0)).any(1) & (used & (labels < 0)).any(1)
    if groups == 0 or not bool(both.any()):
        return split
    layer = _svm_layer(index.shape[1], solver)
    with _quiet_cvxpylayers():
        w, b = layer(rows * labels[..., None], labels, svm_c * used.to(work))
    margin = (features @ w.unsqueeze(-1)).squeeze(-1) + b[:, None]  # (G, n)
    dtype = c.dtype
    margin = margin.to(dtype)
    weight = torch.where(margin >= 0, 1.0, torch.exp(-(margin * margin) / alpha))
    weight = torch.where(valid, weight, 0.0)
    score = torch.where(valid, margin, 0.0)
    use = both[:, None]
    weight = torch.where(use, weight, split.weight)
    score = torch.where(use, score, split.score)
    mask = valid & (weight == 1)
    return split._replace(weight=weight, mask=mask, score=score)


register_boundary("max_margin", max_margin_split)
