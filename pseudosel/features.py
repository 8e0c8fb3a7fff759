"""Per-position reliability features: max confidence, entropy, margin, and CSL's (c, s).

Every function takes probabilities (N, K, *spatial) with the class axis at dim 1 and returns
(N, *spatial) tensors, computed in float32 for float16/bfloat16 input and in the input dtype
otherwise. They check shapes and dtypes, not values (the selectors do that).

Each formula is written here as the paper gives it; faster ways to compute the same on an
eager CPU or under torch.compile live in :mod:`pseudosel.kernels`, chosen at the top of the
function (tests/kernels/ hold them equal to these formulas).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pseudosel import kernels
from pseudosel.kernels import cpu, planes, shared
from pseudosel.validation import check_choice, check_probs, check_real, compute_dtype

__all__ = [
    "confidence_and_labels",
    "csl_features",
    "entropy",
    "margin",
    "max_confidence",
    "residual_moments",
    "shared_features",
]

RESIDUAL_VARIANTS = ("theory", "reference")
# The residual variant of pseudosel.functional.csl and csl_features by default: the authors'
# published code (ICCV 2025 and CoVar), which keeps the zeroed arg-max slot in the variance.
DEFAULT_RESIDUAL = "reference"

# a step's arg-max computed once for its update and selection (pseudosel.kernels.shared)
shared_features = shared.shared_features
with_shared_features = shared.with_shared_features


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


def confidence_and_labels(probs: Tensor) -> tuple[Tensor, Tensor]:
    """``probs.max(1)``: the confidence (in the compute dtype) and the arg-max class.

    Args:
        probs: (N, K, *spatial).

    Returns:
        ``(confidence, labels)``, (N, *spatial) each; labels are the lowest index on ties.

    Example:
        >>> import torch
        >>> from pseudosel.features import confidence_and_labels
        >>> confidence_and_labels(torch.tensor([[0.2, 0.5, 0.3], [0.4, 0.2, 0.4]]))
        (tensor([0.5000, 0.4000]), tensor([1, 0]))
    """
    return shared.cached(probs, _confidence_and_labels)


def plain_confidence_and_labels(probs: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`confidence_and_labels` of a plain lane batch — an eager CPU float32/float64
    (N, K) tensor (:mod:`pseudosel.selectors._lane`) —: ``max(1)`` itself when the batch
    fits one block — the dispatch's own test, without its eager-mode and cache checks."""
    if not cpu.takes_argmax(probs):
        return probs.max(1)
    return confidence_and_labels(probs)


def _confidence_and_labels(probs: Tensor) -> tuple[Tensor, Tensor]:
    # eager CPU: max(1) over a non-last dim is several times slower than a blocked pass
    if kernels.eager_cpu(probs) and cpu.takes_argmax(probs):
        return cpu.confidence_and_labels(probs)
    # compiling: a walk over the class planes, fused into the selector's one pass
    if kernels.compiling() and planes.unrolls(probs):
        return planes.confidence_and_labels(probs)
    confidence, labels = probs.max(1)
    dtype = compute_dtype(probs.dtype)
    return (confidence if confidence.dtype == dtype else confidence.to(dtype)), labels


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy (natural log) of each position, with 0 · log 0 = 0.

    Args:
        probs: (N, K, *spatial) probabilities.

    Returns:
        (N, *spatial) entropy −Σ_k p_k log p_k in [0, log K] (U2PL's reliability feature).
        Entries that are not probabilities (negative, infinite; only with validation off)
        give values that depend on the path taken (NaN, or finite on eager CPU blocks);
        NaN stays NaN.

    Example:
        >>> import torch
        >>> from pseudosel.features import entropy
        >>> entropy(torch.tensor([[0.5, 0.5]]))
        tensor([0.6931])
    """
    check_probs(probs)
    # eager CPU: log into a reused block (xlogy on the whole input is far slower here)
    if kernels.eager_cpu(probs) and cpu.blocked(probs):
        return cpu.entropy(probs)
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

    Example:
        >>> import torch
        >>> from pseudosel.features import residual_moments
        >>> residual_moments(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([0]))
        (tensor([0.5000]), tensor([0.1300]))
    """
    residual = torch.where(_is_top(probs, labels), 0.0, probs.to(compute_dtype(probs.dtype)))
    return residual.sum(1), (residual * residual).sum(1)


def _is_top(probs: Tensor, labels: Tensor) -> Tensor:
    """(N, K, *spatial) bool: class k is the position's arg-max."""
    classes = torch.arange(probs.shape[1], device=probs.device, dtype=labels.dtype)
    return classes.view(1, -1, *([1] * (probs.dim() - 2))) == labels.unsqueeze(1)


def csl_features(
    probs: Tensor, residual: str = DEFAULT_RESIDUAL, g_scale: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """CSL's two features per position: confidence c and scaled residual variance s.

    With k* = argmax p (lowest index on ties), r = sum_{k != k*} p_k (summed over the
    residual classes, never 1 - c), m = r / (K - 1) and g = (K - 1)^2 / (2 r):

    - ``residual="theory"`` (the paper's formula): v is the population variance of the
      K - 1 residual probabilities and s = g * v, i.e.

        s = ((K - 1) * sum_{k != k*} p_k^2 / r - r) / 2,   0 <= s <= (K - 2) * r / 2;

    - ``residual="reference"`` (default; the authors' ICCV and CoVar code): the zeroed
      arg-max slot stays inside the variance sum, v = (sum_{k != k*} (p_k - m)^2 + m^2)
      / (K - 1), which adds r / (2 (K - 1)) to the theory value.

    s = 0 where r = 0 (exact one-hot); K = 2 gives s = 0 everywhere under "theory" (and
    s = r / 2 under "reference"). The default follows :func:`pseudosel.functional.csl`, so
    that these are the features CSL splits on. (CSL_SPEC.md §2.)

    s is computed two-pass, as g * sum_k (p_k - m)^2 over the residual classes with the
    deviations d_k = (p_k - m) / r scaled to O(1) (:func:`spread_from_sums`): float32 s then
    agrees with float64 to a few units in the last place on near-uniform and near-one-hot
    inputs alike, where the one-pass form above cancels or underflows.

    Args:
        probs: (N, K, *spatial) probabilities, K >= 2.
        residual: ``"reference"`` (default) or ``"theory"``, as above.
        g_scale: multiplier on s (default 1.0; the CoVar experiments used 0.5).

    Returns:
        ``(c, s, labels)``: c and s (N, *spatial) in the compute dtype, labels (N, *spatial) long.

    Example:
        >>> import torch
        >>> from pseudosel.features import csl_features
        >>> probs = torch.tensor([[0.6, 0.3, 0.1]])
        >>> csl_features(probs, residual="theory")  # r = 0.4, v = 0.01, g = 5
        (tensor([0.6000]), tensor([0.0500]), tensor([0]))
        >>> csl_features(probs)[1]  # "reference": + r / (2 (K - 1)) = 0.1
        tensor([0.1500])
    """
    check_probs(probs)
    check_choice("residual", residual, RESIDUAL_VARIANTS)
    g_scale = check_real("g_scale", g_scale, low=0.0, low_open=True)
    # eager CPU: c and s in one blocked pass; compiling: one fused walk over the planes
    if kernels.eager_cpu(probs):
        return cpu.csl_features(probs, residual, g_scale)
    if kernels.compiling() and planes.unrolls(probs):
        return planes.csl_features(probs, residual, g_scale)
    num_classes = probs.shape[1]
    c, labels = probs.max(1)
    p = probs.to(compute_dtype(probs.dtype))
    top = _is_top(probs, labels)
    r = torch.where(top, 0.0, p).sum(1)  # the residual mass
    m = r / (num_classes - 1)  # the residual mean
    inverse = r.clamp_min(torch.finfo(r.dtype).tiny).reciprocal()
    d = torch.where(top, 0.0, (p - m.unsqueeze(1)) * inverse.unsqueeze(1))  # (p_k - m) / r
    drift = d.sum(1) if residual == "reference" else None
    s = spread_from_sums((d * d).sum(1), drift, r, m, num_classes, g_scale)
    return c.to(p.dtype), s, labels


def spread_from_sums(
    squares: Tensor,
    drift: Tensor | None,
    r: Tensor,
    mean: Tensor,
    num_classes: int,
    g_scale: float,
) -> Tensor:
    """CSL's s from the residual mass r, m = r / (K − 1) as rounded (``mean``), and the sums
    over the residual classes of d_k = (p_k − m) / r: ``squares`` = Σ d_k², ``drift`` = Σ d_k
    (``None``: the theory variant). Every path computes s through this function.

    theory: s = (K − 1)/2 · r · Σ d_k², clamped at its bound (K − 2)·r/2. Two-pass, and
    scaled to O(1) before squaring, so s neither cancels (near-uniform input, where the
    one-pass form ((K − 1) Σ p_k² / r − r) / 2 loses about half of float32's digits) nor
    underflows (near-one-hot input, where p_k² drops below float32's range).

    reference: the zeroed arg-max slot's (0 − m)² adds r / (2 (K − 1)), written as
    m/2 + r·Σ d_k / (2 (K − 1)): exact for any rounding of m, and m/2 is exact, so this term,
    which dominates s for near-uniform input, costs one rounding instead of the error of the
    float32 sum r.
    """
    if num_classes == 2:
        # One residual class has no spread; the formula would only add rounding noise.
        s = torch.zeros_like(r)
    else:
        s = squares * r * ((num_classes - 1) / 2)
        s = torch.minimum(s, r * ((num_classes - 2) / 2))
    if drift is not None:
        # the small terms first, then the large m/2: one rounding on the result
        s = torch.add(s, drift * r, alpha=1 / (2 * (num_classes - 1)))
        s = torch.add(s, mean, alpha=0.5)
    if g_scale != 1.0:
        s = s * g_scale
    return s
