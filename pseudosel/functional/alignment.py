"""Distribution alignment (ReMixMatch / USB's DistAlignEMAHook), used before a selector.

p ← normalise(p · (p_target + 1e-6) / (p_model + 1e-6)), with p_model the EMA of the mean
unlabeled prediction — set to the first batch's mean at the first update, as in USB — and
p_target uniform, a given distribution, or (``"model"``) the EMA of the mean labeled
prediction. Means are over valid positions, global under torch.distributed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from pseudosel import kernels
from pseudosel._deprecation import renamed_keywords, state_after_input
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_reduce_sum
from pseudosel.inputs import Inputs, per_class_inputs
from pseudosel.kernels import cpu
from pseudosel.kernels.blocks import flatten
from pseudosel.kernels.scalars import operands
from pseudosel.validation import compute_dtype, in_dtype

__all__ = ["AlignmentState", "align", "alignment_update", "masked_class_sums"]

EPS = 1e-6


class AlignmentState(NamedTuple):
    """p_model, p_target: (K,); initialized: 0-dim bool (p_model has seen a batch)."""

    p_model: Tensor
    p_target: Tensor
    initialized: Tensor


def masked_class_sums(probs: Tensor, valid: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Σ over valid positions of p, per class: (N, K, *spatial), (N, *spatial) → (K,).

    Ignored positions are replaced by 0 before the sum (not multiplied by 0), so NaN or Inf
    there — padding, ignore regions — never reach the statistic. ``valid=None``: every
    position (a classification batch is then one sum over dim 0)."""
    blocked = kernels.eager_cpu(probs) and cpu.blocked(probs)
    if valid is None and probs.dim() == 2 and not blocked:
        return probs.sum(0, dtype=dtype)
    if valid is None:
        valid = torch.ones((), dtype=torch.bool, device=probs.device).expand(
            probs.shape[:1] + probs.shape[2:]
        )
    flat, keep = flatten(probs), flatten(valid.unsqueeze(1))
    # eager CPU: summed block by block, without the input-sized masked copy
    if blocked:
        return cpu.masked_class_sums(flat, keep, dtype)
    total = torch.zeros(probs.shape[1], dtype=dtype, device=probs.device)
    return total + torch.where(keep, flat, 0.0).sum((0, 2), dtype=dtype)


def prepared(
    probs: Tensor, valid: Tensor | None, state: tuple[Tensor, ...], function: str, **front: Any
) -> Inputs:
    """The front door for an alignment core: K from the state, binary outputs only."""
    return per_class_inputs(probs, valid, state.p_model.shape[-1], function, **front)


def class_mean(
    probs: Tensor, valid: Tensor, group, all_valid: bool = False
) -> tuple[Tensor, Tensor | None]:
    """(K,) mean of ``probs`` over valid positions (all ranks) and the global count; with
    ``all_valid`` and one process, the count is None (the batch's positions, not 0)."""
    if kernels.counted_plainly(valid, all_valid):  # the sums divided by their number
        return plain_class_mean(probs), None
    work = compute_dtype(probs.dtype)
    stats = torch.cat((masked_class_sums(probs, valid, work), valid.sum().to(work).unsqueeze(0)))
    all_reduce_sum(stats, group)
    count = stats[-1]
    return stats[:-1] / count.clamp_min(1), count


def plain_class_mean(probs: Tensor) -> Tensor:
    """(K,) mean of an eager CPU batch (N, K, *spatial), N >= 1, with nothing ignored, in one
    process: :func:`class_mean`'s class sums divided by the number of positions, in the
    compute dtype of ``probs``."""
    work = compute_dtype(probs.dtype)
    if probs.dim() == 2 and probs.dtype == work and not cpu.blocked(probs):
        # one op: a CPU mean is that sum divided by N (tests/test_plain_input.py)
        return probs.mean(0)
    sums = masked_class_sums(probs, None, work)
    (count,) = operands(sums, probs.numel() // probs.shape[1])
    return sums / count


def ema_step(old: Tensor, batch: Tensor, m: Tensor | float, rest: Tensor | float,
             out: Tensor | None = None) -> Tensor:  # fmt: skip
    """m·old + rest·batch (rest = 1 − m), rounded as written; ``out``: where to write it (the
    plain lane's in-place buffer update, :mod:`pseudosel.selectors._lane`)."""
    return torch.add(old * m, rest * batch, out=out)


@no_grad
@state_after_input("alignment_update", AlignmentState)
@renamed_keywords("alignment_update", group="process_group")
def alignment_update(
    probs: Tensor,
    state: AlignmentState,
    *,
    valid: Tensor | None = None,
    momentum: float = 0.999,
    probs_labeled: Tensor | None = None,
    valid_labeled: Tensor | None = None,
    process_group: ProcessGroup | None = None,
    **front: Any,
) -> AlignmentState:
    """One EMA step of p_model (and of p_target when ``probs_labeled`` is given).

    Args:
        probs: (N, K, *spatial); state: the current distributions; valid: optional bool
            (N, *spatial); likewise the labelled pair.
        momentum: EMA momentum m (new = m·old + (1 − m)·batch). Default 0.999.
        process_group: process group of the all-reduce (default group, if initialised).

    Example:
        >>> import torch
        >>> from pseudosel.functional import AlignmentState, alignment_update
        >>> state = AlignmentState(torch.full((2,), 0.5), torch.full((2,), 0.5),
        ...                        torch.tensor(False))
        >>> new = alignment_update(torch.tensor([[0.8, 0.2]]), state)
        >>> new.p_model, bool(new.initialized)  # the first batch sets p_model
        (tensor([0.8000, 0.2000]), True)
    """
    probs, valid, all_valid = prepared(probs, valid, state, "alignment_update", **front)
    if probs_labeled is not None:
        probs_labeled, valid_labeled, _ = prepared(
            probs_labeled, valid_labeled, state, "alignment_update", name="probs_labeled", **front
        )
    # the plain lane of DistributionAlignment writes the same EMA into its buffers
    # (ema_step, plain_class_mean)
    dtype = state.p_model.dtype
    m, rest = operands((state.p_model, state.p_target), momentum, 1 - momentum)  # rest: 1 − m
    mean, count = class_mean(probs, valid, process_group, all_valid)
    mean = in_dtype(mean, dtype)
    p_model = torch.where(state.initialized, ema_step(state.p_model, mean, m, rest), mean)
    if count is None:  # the batch's positions count: it is seen
        initialized = torch.ones_like(state.initialized)
    else:
        p_model = torch.where(count > 0, p_model, state.p_model)
        initialized = state.initialized | (count > 0)
    p_target = state.p_target
    if probs_labeled is not None:
        mean_lb, count_lb = class_mean(probs_labeled, valid_labeled, process_group)
        updated = ema_step(p_target, mean_lb.to(dtype), m, rest)
        p_target = torch.where(count_lb > 0, updated, p_target)
    return AlignmentState(p_model, p_target, initialized)


@no_grad
def align(
    probs: Tensor,
    state: AlignmentState,
    *,
    valid: Tensor | None = None,
    **front: Any,
) -> Tensor:
    """Aligned probabilities, (N, K, *spatial), in the compute dtype of ``probs``.

    Before any update (``initialized`` False) p_model is taken as p_target: no change.
    ``valid`` (optional bool (N, *spatial)) limits the value check (``validate``) to the
    valid positions; every position is aligned. A binary sigmoid input (N, 1, *spatial)
    with ``activation="sigmoid"`` gives aligned
    two-class probabilities (N, 2, *spatial), to pass to a selector as they are.

    Example:
        >>> import torch
        >>> from pseudosel.functional import AlignmentState, align
        >>> state = AlignmentState(torch.tensor([0.8, 0.2]), torch.tensor([0.5, 0.5]),
        ...                        torch.tensor(True))
        >>> align(torch.tensor([[0.8, 0.2]]), state)
        tensor([[0.5000, 0.5000]])
    """
    probs = prepared(probs, valid, state, "align", **front).probs
    p_model = torch.where(state.initialized, state.p_model, state.p_target)
    return rescaled(probs, state.p_target, p_model)


def rescaled(probs: Tensor, p_target: Tensor, p_model: Tensor) -> Tensor:
    """normalise(p · (p_target + EPS) / (p_model + EPS)) over dim 1, in the compute dtype of
    ``probs``: the alignment step of :func:`align` and :func:`align_queue`."""
    work = compute_dtype(probs.dtype)
    return rescaled_by(probs, *numerator(in_dtype(p_target, work)), in_dtype(p_model, work))


def numerator(p_target: Tensor) -> tuple[Tensor, Tensor | float]:
    """(p_target + EPS, EPS as the operand :func:`rescaled_by` adds to p_model) for a (K,)
    target in the compute dtype — what the plain lane of a module with a fixed target keeps
    between calls (:meth:`pseudosel.Alignment.lane_numerator`)."""
    (eps,) = operands(p_target, EPS)
    return p_target + eps, eps


def rescaled_by(probs: Tensor, target_term: Tensor, eps: Tensor | float, p_model: Tensor) -> Tensor:
    """:func:`rescaled` from its :func:`numerator` ``(target_term, eps)`` and a (K,)
    ``p_model``, both in the compute dtype of ``probs``."""
    ratio = target_term / (p_model + eps)
    if probs.dim() > 2:  # (K,) over dim 1 of (N, K, *spatial); (N, K) broadcasts as it is
        ratio = ratio.view((1, -1) + (1,) * (probs.dim() - 2))
    work = target_term.dtype
    aligned = in_dtype(probs, work) * ratio
    # normalised in place: one input-sized result, not two (fresh pages cost more than
    # the arithmetic on a CPU)
    return aligned.div_(aligned.sum(1, keepdim=True).clamp_min_(torch.finfo(work).tiny))
