"""Per-position reliability features: max confidence, entropy, margin, and CSL's (c, s).

Every function takes probabilities (N, K, *spatial) with the class axis at dim 1 and returns
(N, *spatial) tensors, computed in float32 for float16/bfloat16 input and in the input dtype
otherwise. They check shapes and dtypes, not values (the selectors do that).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
from torch import Tensor

from pseudosel.validation import check_choice, check_probs, check_real, compute_dtype

_Result = TypeVar("_Result")

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

# Eager CPU works on blocks of about this many probabilities, so that the one temporary
# (a copy with the arg-max zeroed) stays in cache instead of a fresh input-sized buffer.
_CPU_BLOCK_ELEMENTS = 1 << 20
# ... but never more blocks than this: the op count per call must not grow with the input.
_CPU_MAX_BLOCKS = 16


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
        (N, *spatial) entropy in [0, log K] (U2PL's reliability feature). Entries that
        are not probabilities (negative, infinite; only with validation off) give values
        that depend on the path taken (NaN, or finite on eager CPU blocks); NaN stays NaN.

    Example:
        >>> import torch
        >>> from pseudosel.features import entropy
        >>> entropy(torch.tensor([[0.5, 0.5]]))
        tensor([0.6931])
    """
    check_probs(probs)
    dtype = compute_dtype(probs.dtype)
    flat, _ = _flatten(probs)
    blocks = position_blocks(flat)  # cache-sized blocks on eager CPU
    if len(blocks) == 1:
        # one block (small inputs, GPU, compiled): one xlogy, fewer ops win / it is fused
        block = flat.to(dtype)
        result = -torch.special.xlogy(block, block).sum(1)
        return result.reshape(probs.shape[0], *probs.shape[2:])
    # p·log(max(p, tiny)): 0 at p = 0 as xlogy, NaN stays NaN (clamp keeps it), and it
    # differs from p·log(p) only below float's normal range, by less than 2e-36. Written
    # into one reused scratch buffer: CPU xlogy runs at about a third of the speed of log
    # (measured at 8x21x321x321: 7.3x the amax(1) floor against 2.8x for log)
    result = torch.empty(flat.shape[::2], dtype=dtype, device=probs.device)
    scratch = BlockScratch(flat, blocks, dtype)
    tiny = torch.finfo(dtype).tiny
    for rows, cols in blocks:
        block = flat[rows, :, cols]
        if block.dtype == dtype:
            terms = torch.clamp_min(block, tiny, out=scratch.like(block))
        else:  # half input: widened into the scratch first
            terms = scratch.like(block).copy_(block).clamp_min_(tiny)
        terms = terms.log_().mul_(block)
        result[rows, cols] = terms.sum(1).neg_()
    return result.reshape(probs.shape[0], *probs.shape[2:])


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


def position_blocks(flat: Tensor, budget: int | None = None) -> list[tuple[slice, slice]]:
    """(row, column) slices cutting an (n, K, L) tensor into cache-friendly blocks.

    Eager CPU only: elsewhere (CUDA, torch.compile) or when the tensor is small, a single
    block. Blocks are of memory, not of samples, and there are at most ``_CPU_MAX_BLOCKS``
    of them, so the number of torch ops per call is bounded whatever the input size (many
    small parallel ops each wait at a thread barrier, which a busy machine makes costly).
    """
    budget = _CPU_BLOCK_ELEMENTS if budget is None else budget
    n, k, length = flat.shape
    whole = [(slice(None), slice(None))]
    if torch.compiler.is_compiling() or flat.device.type != "cpu" or flat.numel() <= budget:
        return whole
    wanted = min(-(-flat.numel() // budget), _CPU_MAX_BLOCKS)
    if length > 1:
        step = -(-length // min(wanted, length))
        return [(slice(None), slice(i, i + step)) for i in range(0, length, step)]
    step = -(-n // min(wanted, n))
    return [(slice(i, i + step), slice(None)) for i in range(0, n, step)]


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
    flat, index = _flatten(probs, labels)
    assert index is not None
    r = torch.empty(flat.shape[::2], dtype=compute_dtype(probs.dtype), device=probs.device)
    q = torch.empty_like(r)
    for rows, cols in position_blocks(flat):
        r[rows, cols], q[rows, cols] = _residual_block(flat[rows, :, cols], index[rows, :, cols])
    return r.reshape(labels.shape), q.reshape(labels.shape)


def _flatten(probs: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """(N, K, *spatial), (N, *spatial) → (N, K, L) and (N, 1, L) views (or copies)."""
    n, k = probs.shape[:2]
    length = math.prod(probs.shape[2:])  # explicit, so that empty tensors reshape too
    index = None if labels is None else labels.reshape(n, 1, length)
    return probs.reshape(n, k, length), index


class BlockScratch:
    """One block-sized buffer, allocated once per call and reused by every block.

    Eager CPU temporaries of a few MB come back from the OS as fresh pages on every
    allocation (glibc hands large freed buffers back), and the page faults cost more than
    the arithmetic; one reused buffer per call also keeps the peak memory down.
    """

    def __init__(self, flat: Tensor, blocks: list[tuple[slice, slice]], dtype: torch.dtype):
        largest = max(flat[rows, :, cols].numel() for rows, cols in blocks)
        self.buffer = torch.empty(largest, dtype=dtype, device=flat.device)

    def like(self, source: Tensor) -> Tensor:
        """The buffer viewed with the shape of ``source`` (uninitialised)."""
        return self.buffer[: source.numel()].view(source.shape)


def _max_and_index(block: Tensor, scratch: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """max and arg-max over dim 1 of an (n, K, m) block, lowest index on ties.

    Same values as ``block.max(1)``, which on CPU runs at a fraction of the speed of plain
    reductions: here the arg-max is read off (p == max) as 0/1 in the compute dtype,
    weighted by K − k, whose maximum marks the lowest tied class. ``scratch``: an optional
    buffer of the compute dtype shaped like ``block`` for the marks (else a fresh one).
    (The comparison written straight into a float buffer is one pass; sign(p − max) + 1
    took three.) The confidence is returned in the block's dtype.
    """
    k = block.shape[1]
    confidence = block.amax(1)
    if scratch is None:
        scratch = torch.empty(block.shape, dtype=compute_dtype(block.dtype), device=block.device)
    reverse = torch.arange(k, 0, -1, dtype=scratch.dtype, device=block.device).view(1, k, 1)
    marks = torch.eq(block, confidence.unsqueeze(1), out=scratch).mul_(reverse)
    # NaN rows give NaN → an arbitrary integer: clamp keeps labels in range
    index = (k - marks.amax(1)).to(torch.long).clamp_(0, k - 1)
    return confidence, index


# Under torch.compile, up to this many classes are walked plane by plane (the loop is
# unrolled into one fused kernel); more classes use the reductions over dim 1.
_UNROLL_MAX_CLASSES = 64


def _walk_class_planes(flat: Tensor) -> bool:
    """Whether to compute the features by :func:`_class_plane_walk` (compiled, small K)."""
    return torch.compiler.is_compiling() and flat.shape[1] <= _UNROLL_MAX_CLASSES


def _class_plane_walk(flat: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """max and arg-max (long) over dim 1 of (n, K, L): see :func:`_class_plane_walk_float`."""
    m, index = _class_plane_walk_float(flat, dtype)
    return m, index.to(torch.long)


def _class_plane_walk_float(flat: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """max and arg-max over dim 1 of (n, K, L), reading each class plane once.

    A running maximum m and its index: class j takes over where p_j > m (strictly, so the
    lowest index wins ties, as ``max(1)``). Under torch.compile the loop over K unrolls
    into one pointwise kernel over the positions that reads every probability once —
    ``max(dim=1)`` and ``argmax`` over a non-last dim are several times slower than a
    plain read on CPU."""
    m = flat[:, 0].to(dtype)
    # the running index in the probabilities' float type: a blend as wide as the data
    # (an int64 blend costs several vector ops per class); exact for K <= 64
    index = torch.zeros_like(m)
    for j in range(1, flat.shape[1]):
        plane = flat[:, j].to(dtype)
        index = torch.where(plane > m, float(j), index)
        m = torch.maximum(m, plane)
    return m, index


def _eager_cpu_dense(flat: Tensor) -> bool:
    """Whether (n, K, L) is dense (L > 1) input on eager CPU, where ``max(1)`` over the
    non-last class dim runs 4-5x slower than :func:`_max_and_index` (measured at
    16x21x32x32: 25.6x against 6.8x the ``amax(1)`` floor): the blocked path then serves
    even a single block. Classification (L = 1) keeps ``max(1)`` over its last dim."""
    return flat.shape[2] > 1 and flat.device.type == "cpu" and not torch.compiler.is_compiling()


# Within shared_features(): results of confidence_and_labels by input (eager only).
_SHARED: ContextVar[dict[tuple[int, int], tuple[Tensor, tuple[Tensor, Tensor]]] | None] = (
    ContextVar("pseudosel_shared_features", default=None)
)


@contextlib.contextmanager
def shared_features() -> Iterator[None]:
    """Within this block, :func:`confidence_and_labels` of the same, unmodified tensor is
    computed once. A selector step that updates its statistics and then selects reads the
    arg-max twice otherwise, and on a CPU the arg-max is the dearest part of both. Eager
    only: not traceable by torch.compile (whose compiler merges the duplicate work itself),
    and confidence_and_labels ignores it while compiling and for inference tensors (made
    under ``torch.inference_mode``, they have no version counter to tell a modified tensor).
    Within the block every call returns the same result tensors: do not modify them in
    place (writes through ``.data`` or a NumPy view are not seen either).

    Example:
        >>> import torch
        >>> from pseudosel.features import confidence_and_labels, shared_features
        >>> probs = torch.tensor([[0.2, 0.5, 0.3]])
        >>> with shared_features():
        ...     first = confidence_and_labels(probs)
        ...     confidence_and_labels(probs)[1] is first[1]
        True
    """
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def with_shared_features(step: Callable[..., _Result], *args: Any) -> _Result:
    """``step(*args)`` inside :func:`shared_features` in eager mode, and directly while
    compiling (the context is not traceable, and the compiler merges the work itself)."""
    if torch.compiler.is_compiling():
        return step(*args)
    with shared_features():
        return step(*args)


def confidence_and_labels(probs: Tensor) -> tuple[Tensor, Tensor]:
    """``probs.max(1)``, with the values in the compute dtype; faster on CPU for big inputs.

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
    cache = None if torch.compiler.is_compiling() else _SHARED.get()
    if cache is None or probs.is_inference():  # inference tensors have no version counter
        return _confidence_and_labels(probs)
    key = (id(probs), probs._version)  # the cached entry holds probs: its id stays unique
    if key not in cache:
        cache[key] = (probs, _confidence_and_labels(probs))
    return cache[key][1]


def _confidence_and_labels(probs: Tensor) -> tuple[Tensor, Tensor]:
    dtype = compute_dtype(probs.dtype)
    if probs.dim() == 2 and not torch.compiler.is_compiling():
        # classification: max over the last (contiguous) dim is fast; the block and walk
        # bookkeeping below would cost more than the reduction at these sizes
        confidence, labels = probs.max(1)
        return (confidence if confidence.dtype == dtype else confidence.to(dtype)), labels
    flat, _ = _flatten(probs)
    shape = (probs.shape[0], *probs.shape[2:])
    if _walk_class_planes(flat):
        confidence, labels = _class_plane_walk(flat, dtype)
        return confidence.reshape(shape), labels.reshape(shape)
    blocks = position_blocks(flat)
    if len(blocks) == 1 and not _eager_cpu_dense(flat):
        confidence, labels = probs.max(1)
        return confidence.to(dtype), labels
    confidence = torch.empty(flat.shape[::2], dtype=dtype, device=flat.device)
    labels = torch.empty(flat.shape[::2], dtype=torch.long, device=flat.device)
    scratch = BlockScratch(flat, blocks, dtype)
    for rows, cols in blocks:
        block = flat[rows, :, cols]
        confidence[rows, cols], labels[rows, cols] = _max_and_index(block, scratch.like(block))
    return confidence.reshape(shape), labels.reshape(shape)


def _residual_block(probs: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """(n, K, m) probabilities, (n, 1, m) arg-max → residual sum and sum of squares (n, m)."""
    dtype = compute_dtype(probs.dtype)
    if torch.compiler.is_compiling():
        # A pointwise mask feeding two reductions: the compiler fuses it, no temporary.
        classes = torch.arange(probs.shape[1], device=probs.device).view(1, -1, 1)
        residual = torch.where(classes == index, 0.0, probs.to(dtype))
        return residual.sum(1), (residual * residual).sum(1)
    # Eager: one temporary, a copy with the arg-max zeroed (cache-sized on CPU).
    residual = probs.to(dtype, copy=True).scatter_(1, index, 0.0)
    total = residual.sum(1)
    return total, residual.square_().sum(1)


def _spread_of_zeroed(zeroed: Tensor, index: Tensor, residual: str, g_scale: float) -> Tensor:
    """CSL's s from an (n, K, m) copy of the probabilities whose arg-max slot (given by the
    (n, 1, m) ``index``) is 0; overwrites the copy (eager path)."""
    num_classes = zeroed.shape[1]
    r = zeroed.sum(1)
    mean = (r / (num_classes - 1)).unsqueeze(1)
    zeroed.scatter_(1, index, mean)  # the arg-max slot then adds nothing to the sums
    inverse = r.clamp_min(torch.finfo(r.dtype).tiny).reciprocal_().unsqueeze(1)
    deviations = zeroed.sub_(mean).mul_(inverse)
    drift = deviations.sum(1) if residual == "reference" else None
    squares = deviations.square_().sum(1)
    return _finish_spread(squares, drift, r, mean.squeeze(1), num_classes, g_scale)


def _spread_compiled(probs: Tensor, index: Tensor, residual: str, g_scale: float) -> Tensor:
    """:func:`_spread_of_zeroed` without temporaries: masks the compiler fuses."""
    num_classes = probs.shape[1]
    # compared in the index's own dtype: a float index (from the plane walk) keeps the
    # kernel in float vectors, where an int64 one costs two vector compares per class
    classes = torch.arange(num_classes, device=probs.device, dtype=index.dtype).view(1, -1, 1)
    top = classes == index
    r = torch.where(top, 0.0, probs).sum(1)
    mean = (r / (num_classes - 1)).unsqueeze(1)
    inverse = r.clamp_min(torch.finfo(r.dtype).tiny).reciprocal().unsqueeze(1)
    deviations = torch.where(top, 0.0, (probs - mean) * inverse)
    drift = deviations.sum(1) if residual == "reference" else None
    squares = (deviations * deviations).sum(1)
    return _finish_spread(squares, drift, r, mean.squeeze(1), num_classes, g_scale)


def _spread_unrolled(flat: Tensor, index: Tensor, residual: str, g_scale: float) -> Tensor:
    """:func:`_spread_compiled` with the sums over the classes written out plane by plane,
    for the compiled plane walk (K <= ``_UNROLL_MAX_CLASSES``): with (n, L) planes the whole
    feature pass is one pointwise kernel, whose per-position mean and 1 / r are computed
    once, where reductions over dim 1 recompute them inside the loop over the classes (two
    divisions per class and position). ``index`` is the walk's float arg-max, (n, L)."""
    num_classes = flat.shape[1]
    dtype = compute_dtype(flat.dtype)
    planes = [flat[:, j].to(dtype) for j in range(num_classes)]
    tops = [index == j for j in range(num_classes)]
    r = torch.zeros_like(planes[0])
    for plane, top in zip(planes, tops, strict=True):
        r = r + torch.where(top, 0.0, plane)
    mean = r / (num_classes - 1)
    inverse = r.clamp_min(torch.finfo(r.dtype).tiny).reciprocal()
    squares = torch.zeros_like(r)
    drift = torch.zeros_like(r) if residual == "reference" else None
    for plane, top in zip(planes, tops, strict=True):
        deviation = torch.where(top, 0.0, (plane - mean) * inverse)
        squares = squares + deviation * deviation
        if drift is not None:
            drift = drift + deviation
    return _finish_spread(squares, drift, r, mean, num_classes, g_scale)


def _finish_spread(
    squares: Tensor,
    drift: Tensor | None,
    r: Tensor,
    mean: Tensor,
    num_classes: int,
    g_scale: float,
) -> Tensor:
    """s from the residual mass r, m = r / (K − 1) as rounded (``mean``), and the sums over
    the residual classes of d_k = (p_k − m) / r: ``squares`` = Σ d_k², ``drift`` = Σ d_k
    (``None``: the theory variant).

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
        s = squares.mul_(r).mul_((num_classes - 1) / 2)
        s = torch.minimum(s, r * ((num_classes - 2) / 2))
    if drift is not None:
        # the small terms first, then the large m/2: one rounding on the result
        s = s.add_(drift.mul_(r), alpha=1 / (2 * (num_classes - 1))).add_(mean, alpha=0.5)
    if g_scale != 1.0:
        s = s.mul_(g_scale)
    return s


def _csl_spread(flat: Tensor, index: Tensor, residual: str, g_scale: float) -> Tensor:
    """s of (n, K, m) probabilities with (n, 1, m) arg-max, in the compute dtype."""
    dtype = compute_dtype(flat.dtype)
    if torch.compiler.is_compiling():
        return _spread_compiled(flat.to(dtype), index, residual, g_scale)
    zeroed = flat.to(dtype, copy=True).scatter_(1, index, 0.0)
    return _spread_of_zeroed(zeroed, index, residual, g_scale)


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
    deviations scaled by 1 / r: float32 s then agrees with float64 to a few units in the
    last place on near-uniform and near-one-hot inputs alike, where the one-pass form
    above cancels or underflows.

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
    flat, _ = _flatten(probs)
    shape = (probs.shape[0], *probs.shape[2:])
    blocks = position_blocks(flat)
    if _walk_class_planes(flat):
        # one fused kernel: the walk, then the spread's sums over the same planes (the
        # compiler reuses the loaded values), so the input is read once
        dtype = compute_dtype(probs.dtype)
        confidence, index = _class_plane_walk_float(flat, dtype)
        s = _spread_unrolled(flat, index, residual, g_scale)
        labels = index.to(torch.long)
        return confidence.reshape(shape), s.reshape(shape), labels.reshape(shape)
    if len(blocks) == 1 and not _eager_cpu_dense(flat):
        confidence, labels = probs.max(1)
        confidence = confidence.to(compute_dtype(probs.dtype))
        _, index = _flatten(probs, labels)
        assert index is not None
        s = _csl_spread(flat, index, residual, g_scale)
        return confidence, s.reshape(shape), labels
    # Eager CPU, block by block: max, arg-max, residual sums and s in one cache-sized visit
    dtype = compute_dtype(probs.dtype)
    confidence = torch.empty(flat.shape[::2], dtype=dtype, device=flat.device)
    labels = torch.empty(flat.shape[::2], dtype=torch.long, device=flat.device)
    s = torch.empty_like(confidence)
    scratch = BlockScratch(flat, blocks, dtype)
    for rows, cols in blocks:
        block = flat[rows, :, cols]
        c, index = _max_and_index(block, scratch.like(block))
        index = index.unsqueeze(1)
        # the scratch, done with the marks, becomes the copy with the arg-max zeroed
        zeroed = scratch.like(block).copy_(block).scatter_(1, index, 0.0)
        confidence[rows, cols], labels[rows, cols] = c, index.squeeze(1)
        s[rows, cols] = _spread_of_zeroed(zeroed, index, residual, g_scale)
    return confidence.reshape(shape), s.reshape(shape), labels.reshape(shape)
