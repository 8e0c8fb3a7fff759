"""CSL (Confidence Separable Learning, ICCV 2025): threshold-free, per-group soft selection.

Each position is a point (c, s) — confidence and scaled residual variance
(:func:`pseudosel.features.csl_features`). Separately for every group (an image for dense
input, the batch for classification), the valid points are split in two clusters by the
spectral relaxation of 2-way k-means (:mod:`pseudosel.functional.separation`). The cluster
with the better statistics is "reliable"; its mean and variance turn every position into two
z-scores, and the weight is 1 when either z-score is positive, else a Gaussian fall-off
(CSL_SPEC.md §3–4). Batched over groups with masked sums: no loop over samples or pixels and
no host synchronisation, so ``torch.compile(fullgraph=True)`` works.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pseudosel.features import RESIDUAL_VARIANTS, csl_features
from pseudosel.functional.separation import (
    accumulation_dtype,
    assign_second_cluster,
    principal_axes,
    second_moments,
)
from pseudosel.selection import Selection
from pseudosel.validation import (
    check_choice,
    check_probability_values,
    check_probs,
    check_real,
    resolve_valid,
)

__all__ = ["GroupSplit", "check_csl_options", "csl", "group_points", "split_groups"]

GROUPS = ("auto", "sample", "batch")
CLUSTER_RULES = ("confidence", "linear", "neglog")
SOLVERS = ("closed_form", "cvxpy")
BOUNDARIES = ("paper", "max_margin")
# The λ of CoVar's cluster rules (CSL_SPEC.md §4).
LINEAR_RULE_LAMBDA = 0.25
NEGLOG_RULE_LAMBDA = 0.5


class GroupSplit(NamedTuple):
    """Result of :func:`split_groups`, (G, n) per field except ``reliable_is_second`` (G,)."""

    weight: Tensor
    mask: Tensor
    score: Tensor
    in_second: Tensor
    reliable_is_second: Tensor


def check_csl_options(
    *,
    alpha: float,
    group: str,
    cluster_rule: str,
    residual: str,
    g_scale: float,
    min_var: float,
    eps: float,
    solver: str = "closed_form",
    boundary: str = "paper",
    max_points: int = 256,
) -> None:
    """Raise ``ValueError``/``TypeError`` for a CSL hyper-parameter out of its domain."""
    check_real("alpha", alpha, low=0.0, low_open=True)
    check_choice("solver", solver, SOLVERS)
    check_choice("boundary", boundary, BOUNDARIES)
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 4:
        raise ValueError(f"max_points must be an int >= 4, got {max_points!r}")
    check_choice("group", group, GROUPS)
    check_choice("cluster_rule", cluster_rule, CLUSTER_RULES)
    check_choice("residual", residual, RESIDUAL_VARIANTS)
    check_real("g_scale", g_scale, low=0.0, low_open=True)
    check_real("min_var", min_var, low=0.0)
    check_real("eps", eps, low=0.0, low_open=True)


def _rule_score(means: Tensor, cluster_rule: str, eps: float) -> Tensor:
    """(G, 2 clusters, 2 features) cluster means → (G, 2) score; the higher is more reliable."""
    conf, spread = means[..., 0], means[..., 1]
    if cluster_rule == "confidence":
        return conf
    if cluster_rule == "linear":
        return conf - LINEAR_RULE_LAMBDA * spread
    return conf - NEGLOG_RULE_LAMBDA * torch.log(spread + eps)


def split_groups(
    c: Tensor,
    s: Tensor,
    valid: Tensor,
    *,
    alpha: float = 2.0,
    cluster_rule: str = "confidence",
    min_var: float = 0.0,
    eps: float = 1e-8,
    solver: str = "closed_form",
) -> GroupSplit:
    """CSL's split and weights for G groups of n positions each.

    Args:
        c: (G, n) confidence.
        s: (G, n) scaled residual variance.
        valid: (G, n) bool; invalid positions take no part and get weight 0, score 0.
        alpha: width of the Gaussian fall-off, w = exp(-(z_c² + z_s²) / alpha). Default 2.0.
        cluster_rule: how the reliable cluster is chosen: ``"confidence"`` (larger mean c;
            the ICCV code), ``"linear"`` (larger mean c − 0.25·mean s) or ``"neglog"``
            (larger mean c − 0.5·log(mean s + eps)); both CoVar. Ties and empty clusters
            never win over cluster 1.
        min_var: floor on the reliable cluster's variances (default 0: the paper).
        eps: added to variances in the z-scores and inside the neglog rule. Default 1e-8.
        solver: ``"closed_form"`` (default) or ``"cvxpy"``: the directions and eigenvalues
            come from the convex program (:func:`pseudosel.convex.convex_axes`), then the
            identical assignment and weighting follow (a reference path, not for training).

    Returns:
        :class:`GroupSplit`: weight in [0, 1], mask = valid & (weight == 1), score =
        max(z_c, z_s) where either is positive, else −√(z_c² + z_s²) (the weight is a
        non-decreasing function of it), the cluster assignment and the reliable cluster.
    """
    acc = accumulation_dtype(c.device)
    # Ignored positions become the point (0, 0): they add nothing to any sum (and any NaN
    # they held is gone). Elementwise work and the (cascade-summed) reductions stay in the
    # compute dtype; the per-group scalars derived from the sums are handled in acc.
    c = c.masked_fill(~valid, 0.0)
    s = s.masked_fill(~valid, 0.0)
    count = valid.sum(-1)
    moments = second_moments(c, s, acc)
    if solver == "cvxpy":
        from pseudosel.convex import SOLVER_RANK_ONE_RATIO, convex_axes

        axes = convex_axes(moments)
        in_second = assign_second_cluster(c, s, axes, count, SOLVER_RANK_ONE_RATIO) & valid
    else:
        axes = principal_axes(moments)
        in_second = assign_second_cluster(c, s, axes, count) & valid

    # Cluster sizes and feature sums (G, 2): cluster 1 = all valid minus cluster 2.
    second = in_second.to(c.dtype)
    total = torch.stack((count.to(c.dtype), c.sum(-1), s.sum(-1)), -1).to(acc)
    part = torch.stack((second.sum(-1), (c * second).sum(-1), (s * second).sum(-1)), -1).to(acc)
    sizes = torch.stack((total[:, 0] - part[:, 0], part[:, 0]), -1)
    means = (
        torch.stack((total[:, 1:] - part[:, 1:], part[:, 1:]), 1) / sizes.clamp_min(1)[..., None]
    )
    scores = _rule_score(means, cluster_rule, eps)
    reliable_is_second = (sizes[:, 1] > 0) & ((sizes[:, 0] == 0) | (scores[:, 1] > scores[:, 0]))

    center = torch.where(reliable_is_second[:, None], means[:, 1], means[:, 0])  # (G, 2)
    size = torch.where(reliable_is_second, sizes[:, 1], sizes[:, 0])
    member = torch.where(reliable_is_second[:, None], in_second, valid & ~in_second)
    # Two-pass (centred) variance: the one-pass formula cancels when σ ≪ μ, as for c ≈ 1.
    dev_c = c - center[:, 0, None].to(c.dtype)
    dev_s = s - center[:, 1, None].to(c.dtype)
    weights = member.to(c.dtype)
    squares = torch.stack(
        ((dev_c * dev_c * weights).sum(-1), (dev_s * dev_s * weights).sum(-1)), -1
    )
    squares = squares.to(acc)
    variance = torch.where(size[:, None] > 1, squares / (size - 1).clamp_min(1)[:, None], 0.0)
    inv_std = torch.rsqrt(variance.clamp_min(min_var) + eps).to(c.dtype)

    z_c = dev_c * inv_std[:, 0, None]  # > 0: more confident than the reliable cluster's mean
    z_s = dev_s * -inv_std[:, 1, None]  # > 0: less residual spread than its mean
    trusted = (z_c > 0) | (z_s > 0)
    distance = z_c * z_c + z_s * z_s
    weight = torch.exp(distance / -alpha).masked_fill_(trusted, 1.0).masked_fill_(~valid, 0.0)
    score = torch.where(trusted, torch.maximum(z_c, z_s), -distance.sqrt())
    score = score.masked_fill_(~valid, 0.0)
    mask = valid & (weight == 1)
    return GroupSplit(weight, mask, score, in_second, reliable_is_second)


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


def csl(
    probs: Tensor,
    *,
    alpha: float = 2.0,
    group: str = "auto",
    cluster_rule: str = "confidence",
    residual: str = "theory",
    g_scale: float = 1.0,
    min_var: float = 0.0,
    eps: float = 1e-8,
    valid: Tensor | None = None,
    validate: bool = True,
    solver: str = "closed_form",
    boundary: str = "paper",
    max_points: int = 256,
    seed: int = 0,
) -> Selection:
    """CSL pseudo-label selection: a per-image (or per-batch) boundary, no threshold.

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities, K >= 2 (K = 2 makes s = 0, a 1-D
            split on confidence). float16/bfloat16 are computed in float32.
        alpha: Gaussian width of the soft weights outside the trusted set. Default 2.0
            (ICCV code; the authors' UniMatch-V2 variant used 8.0).
        group: ``"sample"`` (one boundary per image), ``"batch"`` (one for the whole batch)
            or ``"auto"`` (default: ``"sample"`` for (N, K, *spatial), ``"batch"`` for (N, K)).
        cluster_rule: ``"confidence"`` (default), ``"linear"`` or ``"neglog"``; see
            :func:`split_groups`.
        residual: ``"theory"`` (default) or ``"reference"``; see
            :func:`pseudosel.features.csl_features`.
        g_scale: multiplier on the residual-variance feature. Default 1.0.
        min_var: floor on the reliable cluster's variances. Default 0.0 (the paper).
        eps: added to the variances in the z-scores. Default 1e-8.
        valid: optional bool (N, *spatial); False marks ignored positions (weight 0).
        validate: check that valid positions hold probabilities (default True).
        solver: ``"closed_form"`` (default: the batched kernel) or ``"cvxpy"`` (directions
            from the convex program via cvxpylayers; same result up to solver tolerance; a
            reference path, slow and not for ``torch.compile``).
        boundary: ``"paper"`` (default: the z-score rule) or ``"max_margin"``
            (experimental, beyond the paper: :func:`pseudosel.max_margin.max_margin_split`).
        max_points: positions per group the max-margin boundary is fitted on. Default 256.
        seed: seed of that subsample. Default 0.

    Returns:
        :class:`~pseudosel.Selection` with soft weights; ``mask`` is the trusted set
        (weight == 1); ``score`` the signed z-score described in :func:`split_groups` (the
        functional margin for ``boundary="max_margin"``).

    Example:
        >>> import torch
        >>> from pseudosel.functional import csl
        >>> probs = torch.randn(2, 5, 8, 8).softmax(1)
        >>> sel = csl(probs)
        >>> sel.weight.shape, bool(((sel.weight >= 0) & (sel.weight <= 1)).all())
        (torch.Size([2, 8, 8]), True)
    """
    check_probs(probs)
    check_csl_options(
        alpha=alpha,
        group=group,
        cluster_rule=cluster_rule,
        residual=residual,
        g_scale=g_scale,
        min_var=min_var,
        eps=eps,
        solver=solver,
        boundary=boundary,
        max_points=max_points,
    )
    valid = resolve_valid(probs, valid)
    if validate:
        check_probability_values(probs, valid)
    c, s, labels = csl_features(probs, residual=residual, g_scale=g_scale)
    shape = labels.shape
    c, s, grouped_valid = group_points(c, s, valid, group, probs.dim())
    split = split_groups(
        c,
        s,
        grouped_valid,
        alpha=alpha,
        cluster_rule=cluster_rule,
        min_var=min_var,
        eps=eps,
        solver=solver,
    )
    if boundary == "max_margin":
        from pseudosel.max_margin import max_margin_split

        split = max_margin_split(
            c, s, grouped_valid, split, alpha=alpha, max_points=max_points, seed=seed
        )
    return Selection(
        labels=labels,
        weight=split.weight.reshape(shape),
        mask=split.mask.reshape(shape),
        score=split.score.reshape(shape),
        valid=valid,
    )
