"""Per-position reliability features: max confidence, entropy, margin, and CSL's (c, s).

Every function takes probabilities (N, K, *spatial) with the class axis at dim 1 and returns
(N, *spatial) tensors, computed in float32 for float16/bfloat16 input and in the input dtype
otherwise. They check shapes and dtypes, not values (the selectors do that).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pseudosel.validation import check_choice, check_probs, check_real, compute_dtype

__all__ = ["csl_features", "entropy", "margin", "max_confidence", "residual_moments"]

RESIDUAL_VARIANTS = ("theory", "reference")

# Eager CPU works on blocks of about this many probabilities, so that the one temporary
# (a copy with the arg-max zeroed) stays in cache instead of a fresh input-sized buffer.
_CPU_BLOCK_ELEMENTS = 1 << 20


def max_confidence(probs: Tensor) -> Tensor:
    """Largest class probability of each position.

    Args:
        probs: (N, K, *spatial) probabilities.

    Returns:
        (N, *spatial) max over dim 1 (FixMatch's confidence).

    Example:
        >>> import torch
        >>> from pseudosel.features import max_confidence
        >>> max_confidence(torch.tensor([[0.7, 0.2, 0.1]]))
        tensor([0.7000])
    """
    check_probs(probs)
    return probs.amax(1).to(compute_dtype(probs.dtype))


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy (natural log) of each position, with 0 * log 0 = 0.

    Args:
        probs: (N, K, *spatial) probabilities.

    Returns:
        (N, *spatial) entropy in [0, log K] (U2PL's reliability feature).

    Example:
        >>> import torch
        >>> from pseudosel.features import entropy
        >>> entropy(torch.tensor([[0.5, 0.5]]))
        tensor([0.6931])
    """
    check_probs(probs)
    p = probs.to(compute_dtype(probs.dtype))
    return -torch.special.xlogy(p, p).sum(1)


def margin(probs: Tensor) -> Tensor:
    """Gap between the largest and the second largest class probability.

    Args:
        probs: (N, K, *spatial) probabilities, K >= 2.

    Returns:
        (N, *spatial) top-1 minus top-2 probability, in [0, 1].

    Example:
        >>> import torch
        >>> from pseudosel.features import margin
        >>> margin(torch.tensor([[0.7, 0.2, 0.1]]))
        tensor([0.5000])
    """
    check_probs(probs)
    top = probs.topk(2, dim=1).values.to(compute_dtype(probs.dtype))
    return top[:, 0] - top[:, 1]


def residual_moments(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Sum and sum of squares of the probabilities outside the arg-max class.

    Both are sums over the K-1 residual classes, so the residual mass stays exact when the
    confidence rounds to 1 (``1 - c`` would cancel to 0 there).

    Args:
        probs: (N, K, *spatial) probabilities.
        labels: (N, *spatial) long, the arg-max class of each position.

    Returns:
        ``(r, q)``: (N, *spatial) each, r = sum_{k != k*} p_k and q = sum_{k != k*} p_k^2,
        in the compute dtype.
    """
    n, k = probs.shape[:2]
    length = math.prod(probs.shape[2:])  # explicit, so that empty tensors reshape too
    flat = probs.reshape(n, k, length)
    index = labels.reshape(n, 1, length)
    dtype = compute_dtype(probs.dtype)
    r = torch.empty((n, length), dtype=dtype, device=probs.device)
    q = torch.empty_like(r)
    one_pass = (
        torch.compiler.is_compiling()
        or probs.device.type != "cpu"
        or flat.numel() <= _CPU_BLOCK_ELEMENTS
    )
    if one_pass:
        _residual_block(flat, index, r, q)
    else:
        # Blocks of memory, not a loop over samples: the count depends on the tensor size.
        dim, per_step = (2, n * k) if length > 1 else (0, k)
        step = max(1, _CPU_BLOCK_ELEMENTS // per_step)
        out_dim = 1 if dim == 2 else 0
        blocks = zip(
            flat.split(step, dim),
            index.split(step, dim),
            r.split(step, out_dim),
            q.split(step, out_dim),
            strict=True,
        )
        for block, block_index, r_block, q_block in blocks:
            _residual_block(block, block_index, r_block, q_block)
    return r.reshape(labels.shape), q.reshape(labels.shape)


def _residual_block(probs: Tensor, index: Tensor, total: Tensor, squares: Tensor) -> None:
    """(n, K, m) probabilities, (n, 1, m) arg-max → residual sum and sum of squares into
    ``total`` and ``squares`` (n, m), through one temporary copy with the arg-max zeroed."""
    residual = probs.to(total.dtype, copy=True).scatter_(1, index, 0.0)
    torch.sum(residual, 1, out=total)
    torch.sum(residual.square_(), 1, out=squares)


def csl_features(
    probs: Tensor, residual: str = "theory", g_scale: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """CSL's two features per position: confidence c and scaled residual variance s.

    With k* = argmax p (lowest index on ties), r = sum_{k != k*} p_k (summed over the
    residual classes, never 1 - c) and v the population variance of the K - 1 residual
    probabilities, s = g * v with g = (K - 1)^2 / (2 r), i.e.

        s = ((K - 1) * sum_{k != k*} p_k^2 / r - r) / 2,   0 <= s <= (K - 2) * r / 2,

    and s = 0 where r = 0 (exact one-hot). K = 2 gives s = 0 everywhere. (CSL_SPEC.md §2.)

    Args:
        probs: (N, K, *spatial) probabilities, K >= 2.
        residual: ``"theory"`` (default, the formula above) or ``"reference"``, the authors'
            segmentation code, which keeps the zeroed arg-max slot in the variance and so
            adds r / (2 (K - 1)) to s.
        g_scale: multiplier on s (default 1.0; the CoVar experiments used 0.5).

    Returns:
        ``(c, s, labels)``: c and s (N, *spatial) in the compute dtype, labels (N, *spatial) long.

    Example:
        >>> import torch
        >>> from pseudosel.features import csl_features
        >>> c, s, labels = csl_features(torch.tensor([[0.6, 0.3, 0.1]]))
        >>> c, s, labels
        (tensor([0.6000]), tensor([0.0500]), tensor([0]))
    """
    check_probs(probs)
    check_choice("residual", residual, RESIDUAL_VARIANTS)
    g_scale = check_real("g_scale", g_scale, low=0.0, low_open=True)
    num_classes = probs.shape[1]
    confidence, labels = probs.max(1)
    confidence = confidence.to(compute_dtype(probs.dtype))
    r, squares = residual_moments(probs, labels)
    if num_classes == 2:
        # One residual class has no spread; the formula would only add rounding noise.
        s = torch.zeros_like(r)
    else:
        tiny = torch.finfo(r.dtype).tiny
        s = ((num_classes - 1) * squares / r.clamp_min(tiny) - r) / 2
        s = torch.minimum(s.clamp_min(0), r * ((num_classes - 2) / 2))
    if residual == "reference":
        s = s + r / (2 * (num_classes - 1))
    if g_scale != 1.0:
        s = s * g_scale
    return confidence, s, labels
