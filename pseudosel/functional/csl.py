"""CSL (Confidence Separable Learning, ICCV 2025): threshold-free, per-group soft selection.

Each position is a point (c, s) — confidence and scaled residual variance
(:func:`pseudosel.features.csl_features`). Separately for every group (an image for dense
input, the batch for classification), the valid points are split in two clusters by the
spectral relaxation of 2-way k-means (:mod:`pseudosel.functional.separation`). The cluster
with the better statistics is "reliable"; its mean and variance turn every position into two
z-scores, and the weight is 1 when either z-score is positive, else a Gaussian fall-off
(CSL_SPEC.md §3–4). Batched over groups with masked sums: no loop over samples or pixels and
no host synchronisation, so ``torch.compile(fullgraph=True)`` works.

Defaults are the authors' published ICCV 2025 code (residual variance with the zeroed arg-max
slot, the confidence rule, α = 2, g = 1, always two clusters); :data:`CSL_PRESETS` names it
``"csl"`` and the CoVar code ``"csl_covar"``. docs/csl.md tabulates paper vs codes vs these
defaults.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pseudosel.activation import checked_class_probs, two_class
from pseudosel.features import DEFAULT_RESIDUAL, RESIDUAL_VARIANTS, csl_features
from pseudosel.functional.separation import (
    AXES_SOLVERS,
    BOUNDARIES,
    VARIANT_MODULES,
    Axes,
    GroupSplit,
    accumulation_dtype,
    group_blocks,
    group_points,
    second_cluster_weights,
    stored,
)
from pseudosel.selection import Selection
from pseudosel.validation import (
    check_activation,
    check_choice,
    check_probs,
    check_real,
    check_sigmoid_values,
    is_multilabel,
    resolve_valid,
)

__all__ = [
    "CSL_PRESETS",
    "GroupSplit",
    "check_csl_options",
    "csl",
    "group_points",
    "split_groups",
]

GROUPS = ("auto", "sample", "batch")
CLUSTER_RULES = ("confidence", "linear", "neglog")
SOLVERS = ("closed_form", "cvxpy")
BOUNDARY_NAMES = ("paper", "max_margin")
# The λ of CoVar's cluster rules (CSL_SPEC.md §4).
LINEAR_RULE_LAMBDA = 0.25
NEGLOG_RULE_LAMBDA = 0.5
# Named configurations of csl, by the code they reproduce (docs/csl.md has the table):
# "csl" is the ICCV 2025 code and csl's defaults; "csl_covar" the CoVar code (its CSL run
# script: the linear rule, g scaled by 0.5; its weight function is called with α = 2).
CSL_PRESETS: dict[str, dict[str, Any]] = {
    "csl": dict(
        residual="reference",
        cluster_rule="confidence",
        alpha=2.0,
        g_scale=1.0,
        rank_one_guard=False,
    ),
    "csl_covar": dict(
        residual="reference",
        cluster_rule="linear",
        alpha=2.0,
        g_scale=0.5,
        rank_one_guard=False,
    ),
}


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
    rank_one_guard: bool = False,
) -> None:
    """Raise ``ValueError``/``TypeError`` for a CSL hyper-parameter out of its domain."""
    check_real("alpha", alpha, low=0.0, low_open=True)
    if not isinstance(rank_one_guard, bool):
        raise TypeError(f"rank_one_guard must be a bool, got {type(rank_one_guard).__name__}")
    check_choice("solver", solver, SOLVERS)
    check_choice("boundary", boundary, BOUNDARY_NAMES)
    for name in (solver, boundary):
        if name in VARIANT_MODULES and name not in {*AXES_SOLVERS, *BOUNDARIES}:
            module = VARIANT_MODULES[name]
            raise ValueError(
                f"{name!r} is provided by {module} (it needs cvxpy and cvxpylayers): "
                f"import {module} first (pseudosel.select_reliable and CSLSelector do it)"
            )
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


def _round_toward(value: Tensor, dtype: torch.dtype, upward: bool) -> Tensor:
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
    rank_one_guard: bool = False,
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
        rank_one_guard: keep a group in one cluster when λ₂ <= 1e-12·λ₁ (1e-10 with the
            solver), i.e. when its points lie on one ray. Default False: always split, as
            the paper and the authors' code; see
            :func:`~pseudosel.functional.separation.assign_second_cluster`. Groups of
            n <= 1 are one cluster either way.
        all_valid: promise that ``valid`` is all True (skips the masking work).

    Returns:
        :class:`GroupSplit`: weight in [0, 1], mask = valid & (weight == 1), score =
        max(z_c, z_s) where either is positive, else −√(z_c² + z_s²) (the weight is a
        non-decreasing function of it), the cluster assignment and the reliable cluster.

    Precision: the second moments (from exact products), the cluster sums and the reliable
    cluster's two-pass variance are accumulated in float64 (``accumulation_dtype``; float32
    on MPS); the z-scores compare against the means rounded toward the untrusted side, and
    untrusted weights stay below 1. So for float32 points the trusted set is the one the
    float64 computation gives on the same points, except where a point and a mean are
    within rounding of each other.
    """
    acc = accumulation_dtype(c.device)
    dtype = c.dtype
    groups, size = c.shape
    # Eager CPU walks the positions in cache-sized blocks (four passes: moments, clusters,
    # variance, weights), so no (G, n) temporary is ever allocated; elsewhere one block.
    # Elementwise work is arithmetic on 0/1 floats (sign/clamp, mul, addcmul), ~10x faster
    # on CPU than where/masked_fill or bool conversions. Every reduction accumulates in acc
    # (float64): for float32 points the products are then exact, and the 2x2 eigen-problem,
    # whose det(M) cancels, sees the moments of the float64 computation.
    blocks = group_blocks(groups, size, c.device)

    def points(block: slice) -> tuple[Tensor, Tensor, Tensor | None]:
        """c, s of a block with ignored positions moved to (0, 0) (dropping any NaN there),
        and validity as 0/1 (None when all valid)."""
        if all_valid:
            return c[:, block], s[:, block], None
        ok = valid[:, block]
        return torch.where(ok, c[:, block], 0.0), torch.where(ok, s[:, block], 0.0), ok.to(dtype)

    # pass 1: second moments M = XᵀX per group, from widened points (exact products)
    moments = torch.zeros(groups, 3, dtype=acc, device=c.device)
    for block in blocks:
        cb, sb, _ = points(block)
        cw, sw = cb.to(acc), sb.to(acc)
        moments += torch.stack(((cw * cw).sum(-1), (cw * sw).sum(-1), (sw * sw).sum(-1)), -1)
    m11, m12, m22 = moments.unbind(-1)
    moments = torch.stack((torch.stack((m11, m12), -1), torch.stack((m12, m22), -1)), -2)
    if all_valid:
        count = torch.full((groups,), size, dtype=torch.long, device=c.device)
    else:
        count = valid.sum(-1)
    axes_solver = AXES_SOLVERS[solver]
    axes = Axes(*stored(torch.stack(tuple(axes_solver.axes(moments)), -1)).unbind(-1))
    rank_one = axes_solver.rank_one_ratio if rank_one_guard else None

    def assignment(cb: Tensor, sb: Tensor, ok: Tensor | None) -> Tensor:
        """Second-cluster membership of a block's points as 0/1 floats (0 where invalid)."""
        second = second_cluster_weights(cb, sb, axes, count, rank_one)
        return second if ok is None else second.mul_(ok)

    # pass 2: assignment, and per-cluster counts and feature sums. Each cluster is summed on
    # its own (not as total − other), so a one-point cluster's mean is its point exactly.
    # Eager code stores the assignment for passes 3 and 4 (as 0/1 floats: compiled CPU code
    # stores bool tensors several times slower); compiled code recomputes it from (c, s),
    # a few flops per point, cheaper than writing and reading it back.
    # (Recomputed, the assignment of a point exactly on the boundary could in principle
    # differ between the compiler's vector body and scalar tail; the sums and the variance
    # would then see it in different clusters. Measure-zero, and within the tolerance the
    # compiled path is held to against eager.)
    recompute = torch.compiler.is_compiling()
    second_weight = None if recompute else torch.empty(groups, size, dtype=dtype, device=c.device)
    sums = torch.zeros(groups, 5, dtype=acc, device=c.device)
    for block in blocks:
        cb, sb, ok = points(block)
        second = assignment(cb, sb, ok)
        if second_weight is not None:
            second_weight[:, block] = second
        first = (1.0 - second) if ok is None else (ok - second)
        sums += torch.stack(
            (
                second.sum(-1, dtype=acc),
                (cb * first).sum(-1, dtype=acc),
                (sb * first).sum(-1, dtype=acc),
                (cb * second).sum(-1, dtype=acc),
                (sb * second).sum(-1, dtype=acc),
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
    pick, center_c, center_s = stored(
        torch.stack(
            (reliable_is_second.to(dtype), center[:, 0].to(dtype), center[:, 1].to(dtype)), -1
        )
    ).split(1, -1)

    def membership(block: slice, cb: Tensor, sb: Tensor, ok: Tensor | None) -> Tensor:
        """Reliable-cluster membership of a block as 0/1: first = valid − second, blended."""
        second = assignment(cb, sb, ok) if second_weight is None else second_weight[:, block]
        first = (1.0 - second) if ok is None else (ok - second)
        return torch.addcmul(first, second - first, pick)

    # pass 3: centred variance of the reliable cluster (the one-pass formula cancels when
    # σ ≪ μ, as for c ≈ 1)
    squares = torch.zeros(groups, 2, dtype=acc, device=c.device)
    for block in blocks:
        cb, sb, ok = points(block)
        member = membership(block, cb, sb, ok)
        squares += torch.stack(
            (
                ((cb - center_c).square_() * member).sum(-1, dtype=acc),
                ((sb - center_s).square_() * member).sum(-1, dtype=acc),
            ),
            -1,
        )
    variance = torch.where(
        n_reliable[:, None] > 1, squares / (n_reliable - 1).clamp_min(1)[:, None], 0.0
    )
    inv_std = torch.rsqrt(variance.clamp_min(min_var) + eps).to(dtype)
    # the means rounded toward the untrusted side: z_c > 0 ⟺ c > μ_c, z_s > 0 ⟺ s < μ_s
    # exactly, as in the wide computation
    low_c, high_s, scale_c, scale_s = stored(
        torch.stack(
            (
                _round_toward(center[:, 0], dtype, upward=False),
                _round_toward(center[:, 1], dtype, upward=True),
                inv_std[:, 0],
                -inv_std[:, 1],
            ),
            -1,
        )
    ).split(1, -1)

    offset = 2 * alpha * torch.finfo(dtype).eps

    # pass 4: z-scores, weights, scores
    weight = torch.empty(groups, size, dtype=dtype, device=c.device)
    score = torch.empty_like(weight)
    for block in blocks:
        cb, sb, ok = points(block)
        z_c = (cb - low_c).mul_(scale_c)  # > 0: more confident than the reliable mean
        z_s = (sb - high_s).mul_(scale_s)  # > 0: less residual spread than its mean
        best = torch.maximum(z_c, z_s)
        trusted = torch.sign(best).clamp_(min=0)  # 1 where z_c > 0 or z_s > 0, else 0
        distance = torch.addcmul(z_c.square_(), z_s, z_s)  # z_c² + z_s²
        # exp(−(z_c² + z_s²)/α), kept below 1 wherever z ≠ 0 (an offset of two units in the
        # last place), so that weight == 1 is exactly the trusted set — z_c > 0, z_s > 0 or
        # z = 0 — and not wherever a rounded exp happens to reach 1
        exponent = torch.add(distance, torch.sign(distance), alpha=offset)
        w = torch.maximum(torch.exp_(exponent.mul_(-1.0 / alpha)), trusted)
        # score: max(z_c, z_s) on the trusted side, −‖z‖ elsewhere
        z = torch.addcmul(best.clamp_(min=0), distance.sqrt_(), trusted.sub_(1.0))
        if ok is not None:
            w.mul_(ok)
            z.mul_(ok)
        weight[:, block] = w
        score[:, block] = z
    mask = weight == 1
    if second_weight is None:
        second_weight = assignment(*points(slice(None)))
    in_second = second_weight > 0
    return GroupSplit(weight, mask, score, in_second, reliable_is_second, center.to(dtype))


@torch.no_grad()
def csl(
    probs: Tensor,
    *,
    alpha: float = 2.0,
    group: str = "auto",
    cluster_rule: str = "confidence",
    residual: str = DEFAULT_RESIDUAL,
    g_scale: float = 1.0,
    min_var: float = 0.0,
    eps: float = 1e-8,
    rank_one_guard: bool = False,
    valid: Tensor | None = None,
    validate: bool = True,
    solver: str = "closed_form",
    boundary: str = "paper",
    max_points: int = 256,
    seed: int = 0,
    activation: str = "softmax",
) -> Selection:
    """CSL pseudo-label selection: a per-image (or per-batch) boundary, no threshold.

    The defaults reproduce the authors' published ICCV 2025 code (``CSL_PRESETS["csl"]``);
    ``select_reliable(probs, "csl_covar")`` or ``CSLSelector.preset("csl_covar")`` give the
    CoVar code's configuration, and ``residual="theory"`` the paper's formula.

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities, K >= 2 (K = 2 makes the theory s
            zero and the reference s = r/2: in effect a 1-D split on confidence).
            float16/bfloat16 are computed in float32.
        alpha: Gaussian width of the soft weights outside the trusted set. Default 2.0
            (ICCV and CoVar code; the authors' UniMatch-V2 variant used 8.0).
        group: ``"sample"`` (one boundary per image), ``"batch"`` (one for the whole batch)
            or ``"auto"`` (default: ``"sample"`` for (N, K, *spatial), ``"batch"`` for (N, K)).
        cluster_rule: ``"confidence"`` (default; ICCV code), ``"linear"`` (CoVar code) or
            ``"neglog"``; see :func:`split_groups`.
        residual: ``"reference"`` (default: the authors' code, whose variance keeps the
            zeroed arg-max slot) or ``"theory"`` (the paper's formula); see
            :func:`pseudosel.features.csl_features`.
        g_scale: multiplier on the residual-variance feature. Default 1.0 (ICCV code; the
            CoVar code ran with 0.5).
        min_var: floor on the reliable cluster's variances. Default 0.0 (the paper).
        eps: added to the variances in the z-scores. Default 1e-8.
        rank_one_guard: keep an image in one cluster when its points lie on one ray
            (λ₂ <= 1e-12·λ₁). Default False: always two clusters, as the paper and the
            authors' code (whose split of such an image follows rounding). Not in either.
        valid: optional bool (N, *spatial); False marks ignored positions (weight 0).
        validate: check that valid positions hold probabilities (default True).
        solver: ``"closed_form"`` (default: the batched kernel) or ``"cvxpy"`` (directions
            from the convex program via cvxpylayers; same result up to solver tolerance; a
            reference path, slow and not for ``torch.compile``).
        boundary: ``"paper"`` (default: the z-score rule) or ``"max_margin"``
            (experimental, beyond the paper: :func:`pseudosel.max_margin.max_margin_split`).
        max_points: positions per group the max-margin boundary is fitted on. Default 256.
        seed: seed of that subsample. Default 0.
        activation: ``"softmax"`` (default) or ``"sigmoid"``: binary (N, 1, *spatial) or
            multi-label (N, L, *spatial) probabilities p, read as (1 − p, p)
            (:func:`~pseudosel.functional.class_probs`). Multi-label positions are the
            (sample, label[, pixel]) entries, and ``group="auto"`` then means one group
            per label (that label's column across the batch and any spatial positions);
            ``"sample"`` (all labels of a sample together) and ``"batch"`` keep their
            meaning.

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
        rank_one_guard=rank_one_guard,
    )
    all_valid = valid is None
    if check_activation(activation) == "sigmoid" and group == "auto":
        check_probs(probs, min_classes=1)
        if is_multilabel(probs, activation):
            return _csl_per_label(
                probs,
                valid,
                validate,
                alpha=alpha,
                cluster_rule=cluster_rule,
                residual=residual,
                g_scale=g_scale,
                min_var=min_var,
                eps=eps,
                rank_one_guard=rank_one_guard,
                solver=solver,
                boundary=boundary,
                max_points=max_points,
                seed=seed,
            )
    probs, valid = checked_class_probs(probs, valid, activation=activation, validate=validate)
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
        rank_one_guard=rank_one_guard,
        all_valid=all_valid,
    )
    refine = BOUNDARIES[boundary]
    if refine is not None:
        split = refine(c, s, grouped_valid, split, alpha=alpha, max_points=max_points, seed=seed)
    return Selection(
        labels=labels,
        weight=split.weight.reshape(shape),
        mask=split.mask.reshape(shape),
        score=split.score.reshape(shape),
        valid=valid,
    )


def _csl_per_label(
    probs: Tensor, valid: Tensor | None, validate: bool, **options: Any
) -> Selection:
    """CSL on a multi-label sigmoid output (N, L, *spatial) with one group per label: the
    labels go first, (L, 2, N, *spatial), are split as the "sample" groups of that layout,
    and every field comes back as (N, L, *spatial)."""
    all_valid = valid is None
    valid = resolve_valid(probs, valid, activation="sigmoid")
    if validate:
        check_sigmoid_values(probs, valid)
    by_label = csl(
        two_class(probs.transpose(0, 1), multilabel=True),
        group="sample",
        valid=None if all_valid else valid.transpose(0, 1),
        validate=False,
        **options,
    )
    return Selection(*(field.transpose(0, 1).contiguous() for field in by_label))
