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

from typing import Any

import torch
from torch import Tensor

from pseudosel import kernels
from pseudosel._deprecation import renamed_keywords
from pseudosel._grad import no_grad
from pseudosel.features import DEFAULT_RESIDUAL, RESIDUAL_VARIANTS, csl_features
from pseudosel.functional.separation import (
    AXES_SOLVERS,
    BOUNDARIES,
    VARIANT_MODULES,
    GroupSplit,
    accumulation_dtype,
    assign_second_cluster,
    group_points,
    load_variants,
    reliable_cluster,
    second_moments,
    z_score_scales,
)
from pseudosel.inputs import prepare
from pseudosel.kernels import split
from pseudosel.selection import Selection
from pseudosel.validation import check_activation, check_choice, check_real

__all__ = [
    "CSL_PRESETS",
    "GroupSplit",
    "check_csl_options",
    "csl",
    "csl_covar",
    "csl_max_margin",
    "group_points",
    "split_groups",
]

# What one boundary is drawn over: an image ("sample"), the whole batch ("batch"), or
# "auto": "sample" for dense input, "batch" for classification.
SCOPES = ("auto", "sample", "batch")
CLUSTER_RULES = ("confidence", "linear", "neglog")
SOLVERS = ("closed_form", "cvxpy")
BOUNDARY_NAMES = ("paper", "max_margin")
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
    scope: str,
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
    check_choice("scope", scope, SCOPES)
    check_choice("cluster_rule", cluster_rule, CLUSTER_RULES)
    check_choice("residual", residual, RESIDUAL_VARIANTS)
    check_real("g_scale", g_scale, low=0.0, low_open=True)
    check_real("min_var", min_var, low=0.0)
    check_real("eps", eps, low=0.0, low_open=True)


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
    """CSL's split and weights for G groups of n positions each (CSL_SPEC.md §3–4).

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
        all_valid: promise that ``valid`` is all True (lets a fast path skip the masking).

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
    axes_solver = AXES_SOLVERS[solver]
    rank_one = axes_solver.rank_one_ratio if rank_one_guard else None
    options = dict(alpha=alpha, cluster_rule=cluster_rule, min_var=min_var, eps=eps)
    # eager CPU: blocked passes; compiling: passes the compiler fuses (the formula below
    # makes several input-sized temporaries per step, which only a GPU does not feel)
    if kernels.eager_cpu(c) or kernels.compiling():
        return split.split_groups(
            c, s, valid, axes_of=axes_solver.axes, rank_one=rank_one, all_valid=all_valid,
            **options,
        )  # fmt: skip
    acc = accumulation_dtype(c.device)
    dtype = c.dtype
    # the points, ignored positions moved to (0, 0) (which also drops any NaN there)
    c = torch.where(valid, c, 0.0)
    s = torch.where(valid, s, 0.0)
    count = valid.sum(-1)
    # 1. the directions: eigen-decomposition of M = XᵀX per group (exact products in acc)
    axes = axes_solver.axes(second_moments(c, s, acc))
    # 2. the spectral assignment: x joins cluster 2 when |x·e₂|/√λ₂ > |x·e₁|/√λ₁
    second = assign_second_cluster(c, s, axes, count, rank_one) & valid
    first = valid & ~second
    # 3. each cluster's size and feature sums (each summed on its own), the reliable one
    sizes = torch.stack((first.sum(-1), second.sum(-1)), -1).to(acc)
    cluster_sums = torch.stack(
        [
            torch.stack([torch.where(member, x, 0.0).sum(-1, dtype=acc) for x in (c, s)], -1)
            for member in (first, second)
        ],
        1,
    )  # (G, 2 clusters, 2 features)
    reliable_is_second, center, n_reliable = reliable_cluster(
        sizes, cluster_sums, cluster_rule, eps
    )
    member = torch.where(reliable_is_second[:, None], second, first)
    # 4. the reliable cluster's centred (two-pass) sample variance of c and of s
    squares = torch.stack(
        [
            torch.where(member, (x - mean.to(dtype)[:, None]).square(), 0.0).sum(-1, dtype=acc)
            for x, mean in ((c, center[:, 0]), (s, center[:, 1]))
        ],
        -1,
    )
    variance = torch.where(
        n_reliable[:, None] > 1, squares / (n_reliable - 1).clamp_min(1)[:, None], 0.0
    )
    # 5. z-scores against the reliable centre: z_c > 0 more confident, z_s > 0 less spread
    low_c, high_s, scale_c, scale_s = z_score_scales(center, variance, min_var, eps, dtype)
    z_c = (c - low_c[:, None]) * scale_c[:, None]
    z_s = (s - high_s[:, None]) * scale_s[:, None]
    trusted = (z_c > 0) | (z_s > 0)
    distance = z_c * z_c + z_s * z_s
    # 6. weight 1 on the trusted side, exp(−(z_c² + z_s²)/α) elsewhere — kept below 1
    # wherever z ≠ 0 (an offset of two units in the last place), so that weight == 1 is
    # exactly the trusted set (or z = 0), not wherever a rounded exp happens to reach 1
    offset = 2 * alpha * torch.finfo(dtype).eps
    falloff = torch.exp((distance + torch.sign(distance) * offset) * (-1.0 / alpha))
    weight = torch.where(valid, torch.where(trusted, 1.0, falloff), 0.0)
    score = torch.where(trusted, torch.maximum(z_c, z_s), -distance.sqrt())
    score = torch.where(valid, score, 0.0)
    return GroupSplit(weight, weight == 1, score, second, reliable_is_second, center.to(dtype))


@no_grad
@renamed_keywords("csl", group="scope")
def csl(
    probs: Tensor,
    *,
    alpha: float = 2.0,
    scope: str = "auto",
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
    multilabel: bool | None = None,
    backend: str = "auto",
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
        scope: what one boundary is drawn over: ``"sample"`` (each image), ``"batch"`` (the
            whole batch) or ``"auto"`` (default: ``"sample"`` for (N, K, *spatial),
            ``"batch"`` for (N, K)). (Formerly ``group=``, which still works and warns once.)
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
            (sample, label[, pixel]) entries, and ``scope="auto"`` then means one boundary
            per label (that label's column across the batch and any spatial positions);
            ``"sample"`` (all labels of a sample together) and ``"batch"`` keep their
            meaning.
        multilabel: for ``"sigmoid"``, as in :func:`~pseudosel.functional.threshold`.
        backend: ``"auto"`` (default), ``"eager"``, ``"compiled"`` or ``"triton"``, as in
            :func:`~pseudosel.functional.threshold`; ``"triton"`` computes the features
            (c, s), the labels and the value check in one Triton pass
            (:func:`pseudosel.kernels.triton.csl_features`) and the split's passes over
            the positions as Triton kernels (:func:`pseudosel.kernels.triton.split_groups`).

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
    options = dict(
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
    )
    check_csl_options(scope=scope, **options)
    path = kernels.resolve_backend("csl", backend, probs)
    if path == "compiled":
        from pseudosel.compiled import shared_compiled

        return shared_compiled(csl)(
            probs, scope=scope, valid=valid, validate=validate, seed=seed,
            activation=activation, multilabel=multilabel, **options,
        )  # fmt: skip
    # triton: the value check of softmax probabilities is fused into the feature pass
    fused_check = path == "triton" and validate and check_activation(activation) == "softmax"
    given_probs, given_valid = probs, valid
    # a multi-label sigmoid output with scope="auto": one boundary per label
    per_label = (
        check_activation(activation) == "sigmoid"
        and scope == "auto"
        and isinstance(probs, Tensor)
        and probs.dim() >= 2
        and probs.shape[1] > 1
    )
    probs, valid, all_valid = prepare(
        probs,
        valid,
        activation=activation,
        multilabel=multilabel,
        validate=validate and not fused_check,
    )
    triton = path == "triton"
    if per_label:
        # (N, 2, L, *spatial) → (L, 2, N, *spatial): each label's positions form one image
        by_label = _csl_split(
            probs.transpose(0, 2), valid.transpose(0, 1), all_valid, "sample", seed=seed,
            triton=triton, **options,
        )  # fmt: skip
        return Selection(*(field.transpose(0, 1).contiguous() for field in by_label))
    if not fused_check:
        return _csl_split(probs, valid, all_valid, scope, seed=seed, triton=triton, **options)
    selection, verdict = _csl_split(
        probs, valid, all_valid, scope, seed=seed, triton=True, check=True, **options
    )
    from pseudosel.compiled import raise_on_verdict

    raise_on_verdict(verdict, given_probs, given_valid, activation)
    return selection


def _csl_split(
    probs: Tensor,
    valid: Tensor,
    all_valid: bool,
    scope: str,
    *,
    alpha: float,
    cluster_rule: str,
    residual: str,
    g_scale: float,
    min_var: float,
    eps: float,
    rank_one_guard: bool,
    solver: str,
    boundary: str,
    max_points: int,
    seed: int,
    triton: bool = False,
    check: bool = False,
) -> Selection | tuple[Selection, Tensor]:
    """CSL on prepared class probabilities: features, per-group split, weights.

    ``triton``: the features and the split's passes as Triton kernels
    (:mod:`pseudosel.kernels.triton`); with ``check`` the feature pass also computes the
    value check, and (Selection, verdict) is returned."""
    verdict = None
    if triton:
        from pseudosel.kernels import triton as triton_kernels

        c, s, labels, verdict = triton_kernels.csl_features(
            probs, residual, g_scale, valid=None if all_valid else valid, check=check
        )
    else:
        c, s, labels = csl_features(probs, residual=residual, g_scale=g_scale)
    shape = labels.shape
    c, s, grouped_valid = group_points(c, s, valid, scope, probs.dim())
    if triton and c.numel() > 0:  # the split's passes over the positions as Triton kernels
        axes_solver = AXES_SOLVERS[solver]
        split = triton_kernels.split_groups(
            c, s, grouped_valid, axes_of=axes_solver.axes,
            rank_one=axes_solver.rank_one_ratio if rank_one_guard else None, alpha=alpha,
            cluster_rule=cluster_rule, min_var=min_var, eps=eps, all_valid=all_valid,
        )  # fmt: skip
    else:
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
    selection = Selection(
        labels=labels,
        weight=split.weight.reshape(shape),
        mask=split.mask.reshape(shape),
        score=split.score.reshape(shape),
        valid=valid,
    )
    return (selection, verdict) if check else selection


def csl_covar(probs: Tensor, **options: Any) -> Selection:
    """:func:`csl` as the CoVar code configures it (``CSL_PRESETS["csl_covar"]``: the linear
    cluster rule, λ = 0.25, g_scale = 0.5); ``options`` override the preset.

    Example:
        >>> import torch
        >>> from pseudosel.functional import csl, csl_covar
        >>> probs = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(0)).softmax(1)
        >>> covar = csl(probs, cluster_rule="linear", g_scale=0.5)
        >>> torch.equal(csl_covar(probs).weight, covar.weight)
        True
    """
    return csl(probs, **{**CSL_PRESETS["csl_covar"], **options})


def csl_max_margin(probs: Tensor, **options: Any) -> Selection:
    """:func:`csl` with the experimental max-margin boundary (needs cvxpy; it imports
    :mod:`pseudosel.max_margin`, which registers the boundary).

    Example:
        >>> import torch
        >>> from pseudosel.functional import csl_max_margin
        >>> probs = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(0)).softmax(1)
        >>> csl_max_margin(probs, max_points=16).weight.shape
        torch.Size([1, 6, 6])
    """
    load_variants({"boundary": "max_margin"})
    return csl(probs, **{"boundary": "max_margin", **options})
