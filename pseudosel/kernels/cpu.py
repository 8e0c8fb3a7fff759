"""Blocked eager CPU passes: the formulas of :mod:`pseudosel.features` and of some
functional cores, computed block by block (:mod:`pseudosel.kernels.blocks`).

What makes them faster than the formulas as written, on a CPU:

- ``max(dim=1)`` over a non-last class dim, and ``argmax``, run at a fraction of the speed
  of plain reductions: the arg-max is read off ``(p == max)`` written straight into a float
  buffer, weighted by K − k so that the largest mark is the lowest tied class;
- one temporary per block (a copy with the arg-max zeroed, or a log) in a reused buffer,
  instead of fresh input-sized tensors per op;
- ``log`` into that buffer instead of ``xlogy``, which runs at a third of its speed.

Each is tested equal to its formula (tests/kernels/test_cpu.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import pseudosel.features as formulas
import pseudosel.validation as validation
from pseudosel.kernels import blocks
from pseudosel.kernels.blocks import BlockScratch, flatten, position_blocks
from pseudosel.kernels.scalars import operands

__all__ = [
    "blocked",
    "confidence_and_labels",
    "csl_features",
    "dash_soft_loss_terms",
    "entropy",
    "masked_class_sums",
    "max_and_index",
    "takes_argmax",
]


def takes_argmax(probs: Tensor) -> bool:
    """Whether :func:`confidence_and_labels` beats ``max(1)`` on this (eager CPU) input:
    dense input (the class dim is not the last one) or more than one block; for a small
    classification batch, ``max(1)`` over its last dim is already fast."""
    return probs.dim() > 2 or probs.numel() > blocks.CPU_BLOCK_ELEMENTS  # > one block


def max_and_index(block: Tensor, scratch: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """max and arg-max over dim 1 of an (n, K, m) block, lowest index on ties.

    ``scratch``: an optional buffer of the compute dtype shaped like ``block`` for the marks
    (else a fresh one). The confidence is returned in the block's dtype.
    """
    k = block.shape[1]
    confidence = block.amax(1)
    if scratch is None:
        scratch = torch.empty(
            block.shape, dtype=validation.compute_dtype(block.dtype), device=block.device
        )
    reverse = torch.arange(k, 0, -1, dtype=scratch.dtype, device=block.device).view(1, k, 1)
    marks = torch.eq(block, confidence.unsqueeze(1), out=scratch).mul_(reverse)
    # NaN rows give NaN → an arbitrary integer: clamp keeps labels in range
    index = (k - marks.amax(1)).to(torch.long).clamp_(0, k - 1)
    return confidence, index


def confidence_and_labels(probs: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`pseudosel.features.confidence_and_labels`, block by block."""
    dtype = validation.compute_dtype(probs.dtype)
    flat = flatten(probs)
    shape = (probs.shape[0], *probs.shape[2:])
    blocks = position_blocks(flat)
    confidence = torch.empty(flat.shape[::2], dtype=dtype, device=flat.device)
    labels = torch.empty(flat.shape[::2], dtype=torch.long, device=flat.device)
    scratch = BlockScratch(flat, blocks, dtype)
    for rows, cols in blocks:
        block = flat[rows, :, cols]
        confidence[rows, cols], labels[rows, cols] = max_and_index(block, scratch.like(block))
    return confidence.reshape(shape), labels.reshape(shape)


def entropy(probs: Tensor) -> Tensor:
    """:func:`pseudosel.features.entropy` as p·log(max(p, tiny)) block by block: 0 at p = 0
    as xlogy, NaN stays NaN (clamp keeps it), and it differs from p·log(p) only below
    float's normal range, by less than 2e-36."""
    dtype = validation.compute_dtype(probs.dtype)
    flat = flatten(probs)
    blocks = position_blocks(flat)
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


def csl_features(probs: Tensor, residual: str, g_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`pseudosel.features.csl_features`: per block the max, the arg-max, and s from
    one copy of the probabilities with the arg-max slot zeroed (the scratch buffer)."""
    dtype = validation.compute_dtype(probs.dtype)
    flat = flatten(probs)
    shape = (probs.shape[0], *probs.shape[2:])
    blocks = position_blocks(flat)
    if len(blocks) == 1 and probs.dim() == 2:
        # a small classification batch: max(1) over the last dim, then one zeroed copy
        confidence, labels = probs.max(1)
        index = labels.view(flat.shape[0], 1, 1)
        zeroed = flat.to(dtype, copy=True).scatter_(1, index, 0.0)
        s = _spread_of_zeroed(zeroed, index, residual, g_scale)
        return confidence.to(dtype), s.reshape(shape), labels
    confidence = torch.empty(flat.shape[::2], dtype=dtype, device=flat.device)
    labels = torch.empty(flat.shape[::2], dtype=torch.long, device=flat.device)
    s = torch.empty_like(confidence)
    scratch = BlockScratch(flat, blocks, dtype)
    for rows, cols in blocks:
        block = flat[rows, :, cols]
        c, index = max_and_index(block, scratch.like(block))
        index = index.unsqueeze(1)
        # the scratch, done with the marks, becomes the copy with the arg-max zeroed
        zeroed = scratch.like(block).copy_(block).scatter_(1, index, 0.0)
        confidence[rows, cols], labels[rows, cols] = c, index.squeeze(1)
        s[rows, cols] = _spread_of_zeroed(zeroed, index, residual, g_scale)
    return confidence.reshape(shape), s.reshape(shape), labels.reshape(shape)


def _spread_of_zeroed(zeroed: Tensor, index: Tensor, residual: str, g_scale: float) -> Tensor:
    """CSL's s from an (n, K, m) copy of the probabilities whose arg-max slot (given by the
    (n, 1, m) ``index``) is 0; overwrites the copy. The arg-max slot is then set to the
    residual mean m, so that it adds nothing to the sums of (p_k − m) over the classes."""
    num_classes = zeroed.shape[1]
    r = zeroed.sum(1)
    mean = (r / (num_classes - 1)).unsqueeze(1)
    zeroed.scatter_(1, index, mean)
    inverse = r.clamp_min(torch.finfo(r.dtype).tiny).reciprocal_().unsqueeze(1)
    deviations = zeroed.sub_(mean).mul_(inverse)
    drift = deviations.sum(1) if residual == "reference" else None
    squares = deviations.square_().sum(1)
    return formulas.spread_from_sums(squares, drift, r, mean.squeeze(1), num_classes, g_scale)


def masked_class_sums(flat: Tensor, keep: Tensor, dtype: torch.dtype) -> Tensor:
    """:func:`pseudosel.functional.alignment.masked_class_sums` on (n, K, L) probabilities
    and (n, 1, L) validity, the zeroed copy of each block in one reused buffer."""
    total = torch.zeros(flat.shape[1], dtype=dtype, device=flat.device)
    blocks = position_blocks(flat)
    scratch = BlockScratch(flat, blocks, flat.dtype)
    zero = torch.zeros((), dtype=flat.dtype, device=flat.device)
    for rows, cols in blocks:
        block = flat[rows, :, cols]
        kept = torch.where(keep[rows, :, cols], block, zero, out=scratch.like(block))
        total += kept.sum((0, 2), dtype=dtype)
    return total


def dash_soft_loss_terms(
    probs: Tensor, log_top: Tensor, T: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Z = Σ e and Σ e·u of Dash's soft loss (:func:`pseudosel.functional.dash_select`) for
    (N, K, *spatial) probabilities, u = log p − log ĉ and e = exp(u / T), over the class
    axis; block by block, with u and e in two reused buffers, when the input spans more
    than one block. ``log_top``: (N, 1, *spatial) log ĉ. Returns (N, *spatial) each.

    e below 1.5·e·tiny (tiny: the smallest normal float) is taken as 0, as a flush to
    zero would: exp of an argument below log(tiny), and every op on its subnormal result,
    takes a CPU's slow path — 100x the time of the rest on confident 448 x 100
    probabilities — so u is clamped at T·(log(tiny) + 1) before the exp and such e set to
    0 after (one pointwise ``threshold``, no bool mask). That keeps e·u = 0 where p = 0
    (u finite: never 0·(−inf) = NaN), a one-hot position's loss exactly 0, and Z >= 1
    unchanged; Σ e·u changes by less than K·1.5·e·tiny·|T·log tiny| (5e-36·K·T in float32)."""
    lowest = math.log(torch.finfo(dtype).tiny) + 1.0
    flushed = 1.5 * math.exp(lowest)  # above exp(lowest) by far more than its rounding
    # u's floor, within the dtype's range; for a T beyond that (1e36 in float32), u / T
    # is clamped at lowest as well
    floor = max(T * lowest, -torch.finfo(dtype).max)
    limits = (floor, lowest if T * lowest < floor else None, flushed)
    if probs.dim() == 2 and probs.numel() <= blocks.CPU_BLOCK_ELEMENTS:
        return _dash_terms_in_one(probs, log_top, T, dtype, limits)
    # (N, K, L): a view where the spatial dims merge, else a copy, summed in its own order
    flat, shape = flatten(probs), log_top.shape[:1] + log_top.shape[2:]
    log_top = log_top.reshape(flat.shape[0], 1, flat.shape[2])  # explicit sizes: N may be 0
    parts = position_blocks(flat)
    if len(parts) == 1:
        z, spread = _dash_terms_in_one(flat, log_top, T, dtype, limits)
        return z.reshape(shape), spread.reshape(shape)
    z = torch.empty(flat.shape[::2], dtype=dtype, device=flat.device)
    spread = torch.empty_like(z)
    u_scratch, e_scratch = BlockScratch(flat, parts, dtype), BlockScratch(flat, parts, dtype)
    for rows, cols in parts:
        block = flat[rows, :, cols]
        u, e = u_scratch.like(block), e_scratch.like(block)
        u = torch.log(block, out=u) if block.dtype == dtype else u.copy_(block).log_()
        e = _flushed_exp(u.sub_(log_top[rows, :, cols]), T, limits, out=e)
        z[rows, cols] = e.sum(1)
        spread[rows, cols] = e.mul_(u).sum(1)
    return z.reshape(shape), spread.reshape(shape)


def _dash_terms_in_one(
    probs: Tensor, log_top: Tensor, T: float, dtype: torch.dtype, limits: tuple
) -> tuple[Tensor, Tensor]:
    """:func:`dash_soft_loss_terms` of an input that fits one block: fresh temporaries, no
    scratch buffers or copies. ``limits``: (u's floor, s's floor or None, flushed)."""
    (temperature,) = operands(log_top, T)
    u = (probs.log() if probs.dtype == dtype else probs.to(dtype).log_()).sub_(log_top)
    e = _flushed_exp(u, temperature, limits)
    return e.sum(1), e.mul_(u).sum(1)


def _flushed_exp(u: Tensor, T: Tensor | float, limits: tuple, out: Tensor | None = None) -> Tensor:
    """e = exp(u / T), below 1.5·e·tiny set to 0, with u clamped in place at its floor
    (:func:`dash_soft_loss_terms`); ``limits``: (u's floor, s's floor or None, flushed).
    Clamped first, u keeps u / T at or above log(tiny) + 1; where u's floor lies beyond
    the dtype's range (``limits[1]`` given), u / T is clamped instead and u after it (u
    only has to stay finite there: its e is 0)."""
    floor, s_floor, flushed = limits
    if s_floor is None:
        s = torch.div(u.clamp_min_(floor), T, out=out)
    else:
        s = torch.div(u, T, out=out).clamp_min_(s_floor)
        u.clamp_min_(floor)
    return torch.nn.functional.threshold_(s.exp_(), flushed, 0.0)


def blocked(probs: Tensor) -> bool:
    """Whether ``probs`` spans more than one block (below that, the formula's one op over
    the whole input is already the fast form)."""
    # one block at most the budget: a small batch is told without a reshape
    return probs.numel() > blocks.CPU_BLOCK_ELEMENTS and len(position_blocks(flatten(probs))) > 1
