"""CSL's per-group passes (:func:`pseudosel.functional.csl.split_groups`), fast.

The formula's passes over the positions — second moments, cluster assignment and sums,
the reliable cluster's centred variance, z-scores and weights — written for speed:

- eager CPU: each pass walks the positions in cache-sized blocks
  (:func:`~pseudosel.kernels.blocks.group_blocks`), so no (G, n) temporary is allocated;
  elementwise work is arithmetic on 0/1 floats (sign/clamp, mul, addcmul), several times
  faster on a CPU than ``where``/``masked_fill`` or boolean conversions; the assignment is
  stored (as 0/1 floats) for the later passes;
- compiled: one block; the assignment is recomputed from (c, s) in each pass (a few flops
  per point, cheaper than writing and reading it back), and the per-group scalars go
  through :func:`stored`, so that the compiler does not recompute them inside the passes.

Every reduction accumulates in float64 (``accumulation_dtype``), as the formula does. The
per-group steps between the passes (eigen-decomposition, choice of the reliable cluster,
z-score constants) are the formula's own functions (:mod:`pseudosel.functional.separation`).
Tested equal to the formula (tests/kernels/test_split.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pseudosel import kernels
from pseudosel.functional.separation import (
    Axes,
    GroupSplit,
    accumulation_dtype,
    reliable_cluster,
    second_cluster_weights,
    z_score_scales,
)
from pseudosel.kernels.blocks import group_blocks

__all__ = ["split_groups", "stored"]


def stored(values: Tensor) -> Tensor:
    """``values`` unchanged; under torch.compile, computed once into a buffer.

    Per-group scalars (the split directions, the reliable cluster's centre and scales) are
    small pointwise expressions of per-group sums, and inductor inlines such expressions
    into every loop that reads them — into the passes over the positions, where they are
    then recomputed every few positions (atan2, sincos, hypot and sqrt in the assignment).
    A reduction's output is always stored, so the values go through one that changes
    nothing: the max over 16 copies (exact; keeps −0.0 and NaN).
    """
    if not kernels.compiling():
        return values
    return values.unsqueeze(0).expand(16, *values.shape).amax(0)


def split_groups(
    c: Tensor,
    s: Tensor,
    valid: Tensor,
    *,
    axes_of: Callable[[Tensor], Axes],
    rank_one: float | None,
    alpha: float,
    cluster_rule: str,
    min_var: float,
    eps: float,
    all_valid: bool,
) -> GroupSplit:
    """:func:`pseudosel.functional.csl.split_groups` (same arguments, checked there);
    ``axes_of``: the directions from the (G, 2, 2) moments; ``rank_one``: the rank-one
    guard's λ₂/λ₁ ratio, or None."""
    acc = accumulation_dtype(c.device)
    dtype = c.dtype
    groups, size = c.shape
    # Every reduction accumulates in acc (float64): for float32 points the products are
    # then exact, and the 2x2 eigen-problem, whose det(M) cancels, sees the moments of the
    # float64 computation.
    blocks = group_blocks(groups, size) if kernels.eager_cpu(c) else [slice(None)]

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
    axes = Axes(*stored(torch.stack(tuple(axes_of(moments)), -1)).unbind(-1))

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
    recompute = kernels.compiling()
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
    reliable_is_second, center, n_reliable = reliable_cluster(
        sizes, cluster_sums, cluster_rule, eps
    )
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
    low_c, high_s, scale_c, scale_s = stored(
        torch.stack(z_score_scales(center, variance, min_var, eps, dtype), -1)
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
