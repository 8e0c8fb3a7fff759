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
    RANK_ONE_RATIO,
    accumulation_dtype,
    group_blocks,
    principal_axes,
    second_cluster_weights,
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
    """Result of :func:`split_groups`: (G, n) per position; ``reliable_is_second`` (G,) and
    ``center`` (G, 2), the reliable cluster's mean (c, s) — with the paper's rule a position
    is trusted exactly when c > center_c or s < center_s."""

    weight: Tensor
    mask: Tensor
    score: Tensor
    in_second: Tensor
    reliable_is_second: Tensor
    center: Tensor


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
    all_valid: bool = False,
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
        all_valid: promise that ``valid`` is all True (skips the masking work).

    Returns:
        :class:`GroupSplit`: weight in [0, 1], mask = valid & (weight == 1), score =
        max(z_c, z_s) where either is positive, else −√(z_c² + z_s²) (the weight is a
        non-decreasing function of it), the cluster assignment and the reliable cluster.
    """
    acc = accumulation_dtype(c.device)
    dtype = c.dtype
    groups, size = c.shape
    # Eager CPU walks the positions in cache-sized blocks (four passes: moments, clusters,
    # variance, weights), so no (G, n) temporary is ever allocated; elsewhere one block.
    # Elementwise work is arithmetic on 0/1 floats (sign/clamp, mul, addcmul), ~10x faster
    # on CPU than where/masked_fill or bool conversions. Reductions are cascade sums in the
    # compute dtype; the per-group scalars derived from them are handled in acc (float64).
    blocks = group_blocks(groups, size, c.device)

    def points(block: slice) -> tuple[Tensor, Tensor, Tensor | None]:
        """c, s of a block with ignored positions moved to (0, 0) (dropping any NaN there),
        and validity as 0/1 (None when all valid)."""
        if all_valid:
            return c[:, block], s[:, block], None
        ok = valid[:, block]
        return torch.where(ok, c[:, block], 0.0), torch.where(ok, s[:, block], 0.0), ok.to(dtype)

    # pass 1: second moments M = XᵀX per group
    moments = torch.zeros(groups, 3, dtype=acc, device=c.device)
    for block in blocks:
        cb, sb, _ = points(block)
        moments += torch.stack(((cb * cb).sum(-1), (cb * sb).sum(-1), (sb * sb).sum(-1)), -1)
    m11, m12, m22 = moments.unbind(-1)
    moments = torch.stack((torch.stack((m11, m12), -1), torch.stack((m12, m22), -1)), -2)
    count = valid.sum(-1)
    if solver == "cvxpy":
        from pseudosel.convex import SOLVER_RANK_ONE_RATIO, convex_axes

        axes = convex_axes(moments)
        rank_one = SOLVER_RANK_ONE_RATIO
    else:
        axes = principal_axes(moments)
        rank_one = RANK_ONE_RATIO

    # pass 2: assignment, and per-cluster counts and feature sums. Each cluster is summed
    # on its own (not as total − other), so a one-point cluster's mean is its point exactly.
    in_second = torch.empty(groups, size, dtype=torch.bool, device=c.device)
    sums = torch.zeros(groups, 5, dtype=acc, device=c.device)
    for block in blocks:
        cb, sb, ok = points(block)
        second = second_cluster_weights(cb, sb, axes, count, rank_one)
        if ok is not None:
            second.mul_(ok)
        in_second[:, block] = second > 0
        first = (1.0 - second) if ok is None else (ok - second)
        sums += torch.stack(
            (
                second.sum(-1),
                (cb * first).sum(-1),
                (sb * first).sum(-1),
                (cb * second).sum(-1),
                (sb * second).sum(-1),
            ),
            -1,
        )
    n2, sum_c1, sum_s1, sum_c2, sum_s2 = sums.unbind(-1)
    sizes = torch.stack((count.to(acc) - n2, n2), -1)
    cluster_sums = torch.stack(
        (torch.stack((sum_c1, sum_s1), -1), torch.stack((sum_c2, sum_s2), -1)), 1
    )  # (G, 2 clusters, 2 features)
    means = cluster_sums / sizes.clamp_min(1)[..., None]
    scores = _rule_score(means, cluster_rule, eps)
    reliable_is_second = (sizes[:, 1] > 0) & ((sizes[:, 0] == 0) | (scores[:, 1] > scores[:, 0]))
    center = torch.where(reliable_is_second[:, None], means[:, 1], means[:, 0])  # (G, 2)
    n_reliable = torch.where(reliable_is_second, sizes[:, 1], sizes[:, 0])
    pick = reliable_is_second.to(dtype)[:, None]
    center_c, center_s = center[:, 0, None].to(dtype), center[:, 1, None].to(dtype)

    def membership(block: slice, ok: Tensor | None) -> Tensor:
        """Reliable-cluster membership of a block as 0/1: first = valid − second, blended."""
        second = in_second[:, block].to(dtype)
        first = (1.0 - second) if ok is None else (ok - second)
        return torch.addcmul(first, second - first, pick)

    # pass 3: centred variance of the reliable cluster (the one-pass formula cancels when
    # σ ≪ μ, as for c ≈ 1)
    squares = torch.zeros(groups, 2, dtype=acc, device=c.device)
    for block in blocks:
        cb, sb, ok = points(block)
        member = membership(block, ok)
        squares += torch.stack(
            (
                ((cb - center_c).square_() * member).sum(-1),
                ((sb - center_s).square_() * member).sum(-1),
            ),
            -1,
        )
    variance = torch.where(
        n_reliable[:, None] > 1, squares / (n_reliable - 1).clamp_min(1)[:, None], 0.0
    )
    inv_std = torch.rsqrt(variance.clamp_min(min_var) + eps).to(dtype)
    scale_c, scale_s = inv_std[:, 0, None], -inv_std[:, 1, None]

    # pass 4: z-scores, weights, scores
    weight = torch.empty(groups, size, dtype=dtype, device=c.device)
    score = torch.empty_like(weight)
    for block in blocks:
        cb, sb, ok = points(block)
        z_c = (cb - center_c).mul_(scale_c)  # > 0: more confident than the reliable mean
        z_s = (sb - center_s).mul_(scale_s)  # > 0: less residual spread than its mean
        best = torch.maximum(z_c, z_s)
        trusted = torch.sign(best).clamp_(min=0)  # 1 where z_c > 0 or z_s > 0, else 0
        distance = torch.addcmul(z_c.square_(), z_s, z_s)  # z_c² + z_s²
        w = torch.maximum(torch.exp(distance * (-1.0 / alpha)), trusted)
        # score: max(z_c, z_s) on the trusted side, −‖z‖ elsewhere
        z = torch.addcmul(best.clamp_(min=0), distance.sqrt_(), trusted.sub_(1.0))
        if ok is not None:
            w.mul_(ok)
            z.mul_(ok)
        weight[:, block] = w
        score[:, block] = z
    mask = weight == 1
    return GroupSplit(weight, mask, score, in_second, reliable_is_second, center.to(dtype))


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
    all_valid = valid is None
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
        all_valid=all_valid,
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
