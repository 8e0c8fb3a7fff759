"""S4MC: each pixel's class probabilities raised by its most confident neighbours, then a
percentile threshold of the teacher's margin.

Kimhi et al., "Semi-Supervised Semantic Segmentation via Marginal Contextual Information",
TMLR 2024 (arXiv:2308.13900); code: github.com/s4mcontext/s4mc (``compute_unsupervised_loss``
and ``get_neigbor_tensors`` in s4mc_utils/utils/loss_helper.py, the schedule in
train_semi.py).

**Refinement** (:func:`s4mc_refine`). For class c at pixel i, let q_c be the largest p_c among
the pixel's 4 (or 8) neighbours. The refined probability is the probability of the union of
the events "pixel i is c" and "its best neighbour is c", the neighbour weighted by
β = e^(−1/2):

    p̃_c = p_c + β·q_c − β·P(both are c),    P(both are c) ≈ p_c·q_c  (the paper),

and with ``num_neighbours`` = n > 1 the n best neighbours (per class, best first) are
united one after another. The published code estimates the joint term as
max(p_c·q_c, p_c·E_c) with per-class constants E_c measured on PASCAL VOC or Cityscapes
labels; ``agreement=E`` reproduces that (default: the paper's p_c·q_c). p̃ is not
renormalised (it is not a distribution), as in the published code.

Borders and ignored positions: positions outside the image lend nothing (q = 0 there: the
published code pads with zeros), and so do ignored positions — the published code lets
every pixel lend, including those its target marks 255. Ignored positions are left as they
are.

**Selection** (:func:`s4mc`). The threshold is a percentile of the *unrefined* teacher
indicator over the valid positions — the (100 − ``drop_percent``)-th percentile of the
margin (top-1 minus top-2 probability) by default — and it is applied to the *refined*
indicator: kept = valid and refined margin > threshold. So ``drop_percent`` (the authors'
name) is the share of positions kept, about — refinement moves margins across the cut.
The percentile is numpy's (linear interpolation), computed on the device without a host
synchronisation and global across ranks (:mod:`pseudosel.functional.quantile`); the
published code takes it per rank with ``numpy.percentile`` on the CPU. The pseudo-labels
are the arg-max of the unrefined probabilities, as the published code's targets.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch import Tensor

from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.functional.quantile import masked_quantile
from pseudosel.inputs import prepare
from pseudosel.selection import Selection, hard_selection
from pseudosel.validation import check_choice, check_real, compute_dtype

__all__ = ["S4MC_BETA", "S4MC_INDICATORS", "s4mc", "s4mc_refine"]

#: β = e^(−1/2), the weight of a neighbour's probability (the published value)
S4MC_BETA = math.exp(-0.5)
#: the reliability indicators the published code offers (``indicator=``)
S4MC_INDICATORS = ("margin", "confidence", "entropy")
_OFFSETS = {
    4: ((-1, 0), (1, 0), (0, -1), (0, 1)),
    8: tuple((di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)),
}


def check_s4mc_options(
    connectivity: object, num_neighbours: object, beta: object
) -> tuple[int, int, float]:
    """``connectivity`` 4 or 8, ``num_neighbours`` in [1, connectivity], ``beta`` in [0, 1]."""
    if isinstance(connectivity, bool) or connectivity not in _OFFSETS:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if isinstance(num_neighbours, bool) or not isinstance(num_neighbours, int):
        raise TypeError(f"num_neighbours must be an int, got {type(num_neighbours).__name__}")
    if not 1 <= num_neighbours <= connectivity:
        raise ValueError(
            f"num_neighbours must be in [1, {connectivity}] (connectivity={connectivity}), "
            f"got {num_neighbours}"
        )
    return int(connectivity), num_neighbours, check_real("beta", beta, low=0.0, high=1.0)


def _agreement_tensor(agreement: object, num_classes: int, like: Tensor) -> Tensor | None:
    """``agreement`` as a (K,) tensor in the dtype and on the device of ``like``, or None."""
    if agreement is None:
        return None
    if isinstance(agreement, Tensor):
        if agreement.dim() != 1 or agreement.shape[0] != num_classes:
            raise ValueError(
                f"agreement must have shape ({num_classes},) (one value per class), got "
                f"{tuple(agreement.shape)}"
            )
        if not agreement.is_floating_point():
            raise TypeError(f"agreement must be a float tensor, got {agreement.dtype}")
        values = agreement.to(like.device, like.dtype)
    elif isinstance(agreement, Sequence) and not isinstance(agreement, str):
        if len(agreement) != num_classes:
            raise ValueError(
                f"agreement must hold one value per class ({num_classes}), got {len(agreement)}"
            )
        numbers = [check_real("agreement", v, low=0.0, high=1.0) for v in agreement]
        values = torch.tensor(numbers, dtype=like.dtype, device=like.device)
    else:
        raise TypeError(
            f"agreement must be None, a sequence of K numbers or a (K,) tensor, got "
            f"{type(agreement).__name__}"
        )
    return values


def _check_dense(probs: Tensor, function: str) -> None:
    if probs.dim() < 3:
        raise ValueError(
            f"{function} needs dense input probs (N, K, H, W) — S4MC refines each pixel with "
            f"its neighbours in the image — got {tuple(probs.shape)} classification input "
            "(N, K); use a per-position selector such as threshold for it"
        )


def _image_view(tensor: Tensor) -> Tensor:
    """One spatial dim L is a 1 × L image; with more, the last two are (H, W)."""
    return tensor.unsqueeze(-2) if tensor.dim() == 3 else tensor


def _lent_and_refined(
    probs: Tensor,
    valid: Tensor,
    *,
    connectivity: int,
    num_neighbours: int,
    beta: float,
    agreement: object,
) -> tuple[Tensor, Tensor]:
    """The probabilities that lend — in the compute dtype, 0 at ignored positions (they
    lend nothing, and whatever they hold, NaN included, goes no further) — and their union
    with the best neighbours, both (N, K, *lead, H, W); the border pads with 0."""
    lending = torch.where(valid.unsqueeze(1), probs.to(compute_dtype(probs.dtype)), 0.0)
    agreement = _agreement_tensor(agreement, probs.shape[1], lending)
    image = _image_view(lending)
    height, width = image.shape[-2:]
    padded = nnf.pad(image, (1, 1, 1, 1))
    views = [
        padded[..., 1 + di : 1 + di + height, 1 + dj : 1 + dj + width]
        for di, dj in _OFFSETS[connectivity]
    ]
    if num_neighbours == 1:  # the best neighbour per class, without stacking the views
        best: Sequence[Tensor] = [functools.reduce(torch.maximum, views)]
    else:  # best first, per class (the published code's topk over the neighbours)
        best = torch.stack(views).topk(num_neighbours, dim=0).values.unbind(0)
    refined = image
    if agreement is not None:  # (K,) → (K, 1, ..., 1), against (N, K, *lead, H, W)
        agreement = agreement.reshape(-1, *([1] * (image.dim() - 2)))
    for neighbour in best:
        joint = neighbour if agreement is None else torch.maximum(neighbour, agreement)
        refined = refined + beta * neighbour - beta * (refined * joint)
    return lending, refined.reshape(lending.shape)


@no_grad
def s4mc_refine(
    probs: Tensor,
    *,
    connectivity: int = 4,
    num_neighbours: int = 1,
    beta: float = S4MC_BETA,
    agreement: Sequence[float] | Tensor | None = None,
    valid: Tensor | None = None,
    validate: bool = True,
) -> Tensor:
    """S4MC's refinement: each class probability united with the same class at the most
    confident neighbours, p̃_c = p_c + β·q_c − β·p_c·q_c (module docstring).

    Usable before any selector. Vectorised: one shifted view of the zero-padded map per
    neighbour, a running maximum (or a top-n over the stacked views for n > 1).

    Args:
        probs: (N, K, H, W) probabilities (one spatial dim L is read as a 1 × L image; with
            more spatial dims the last two are the image and the others index slices).
        connectivity: 4 (the edge neighbours) or 8 (with the corners). Default 4, the
            published code's default and configuration (``neigborhood_size``).
        num_neighbours: n in [1, connectivity], the best neighbours per class united one
            after another, best first. Default 1 (the published ``n_neigbors``).
        beta: the neighbours' weight β in [0, 1]. Default e^(−1/2) (published).
        agreement: optional per-class E_c in [0, 1], K values: the joint term becomes
            p_c·max(q_c, E_c) = max(p_c·q_c, p_c·E_c), the published code's estimate (it
            ships E for PASCAL VOC and Cityscapes). Default None: p_c·q_c (the paper).
        valid: optional bool (N, H, W); False marks ignored positions, which lend nothing
            to their neighbours (as the border, which lends 0) and are returned as given.
        validate: check that valid positions hold probabilities (default True).

    Returns:
        (N, K, H, W) refined probabilities, in float32 for float16/bfloat16 input (else the
        input's dtype); not renormalised, each in [p_c, 1].

    Raises:
        ValueError: classification input (N, K); bad options (naming them).

    Example:
        >>> import torch
        >>> from pseudosel.functional import s4mc_refine
        >>> probs = torch.tensor([0.6, 0.9, 0.9]).reshape(1, 1, 1, 3)
        >>> probs = torch.cat((probs, 1 - probs), 1)  # two classes on a 1 x 3 image
        >>> s4mc_refine(probs)[0, 0]  # 0.6 + β·0.9·(1 − 0.6) at the left pixel
        tensor([[0.8184, 0.9546, 0.9546]])
    """
    connectivity, num_neighbours, beta = check_s4mc_options(connectivity, num_neighbours, beta)
    probs, valid, _ = prepare(probs, valid, validate=validate)
    _check_dense(probs, "s4mc_refine")
    _, refined = _lent_and_refined(
        probs,
        valid,
        connectivity=connectivity,
        num_neighbours=num_neighbours,
        beta=beta,
        agreement=agreement,
    )
    return torch.where(valid.unsqueeze(1), refined, probs.to(refined.dtype))


def _indicator(probs: Tensor, indicator: str) -> Tensor:
    """Margin (top-1 − top-2), confidence (top-1) or entropy −Σ p log(p + 1e-10) — the
    published code's formulas, also for the refined probabilities that sum above 1."""
    if indicator == "margin":
        top = probs.topk(2, dim=1).values
        return top[:, 0] - top[:, 1]
    if indicator == "confidence":
        return probs.amax(1)
    return -(probs * torch.log(probs + 1e-10)).sum(1)


@no_grad
def s4mc(
    probs: Tensor,
    drop_percent: float | Tensor = 60.0,
    *,
    indicator: str = "margin",
    connectivity: int = 4,
    num_neighbours: int = 1,
    beta: float = S4MC_BETA,
    agreement: Sequence[float] | Tensor | None = None,
    valid: Tensor | None = None,
    process_group: ProcessGroup | None = None,
    validate: bool = True,
    activation: str = "softmax",
    multilabel: bool | None = None,
) -> Selection:
    """S4MC's selection: refine with the neighbours (:func:`s4mc_refine`), keep the valid
    positions whose refined margin beats the (100 − ``drop_percent``)-th percentile of the
    unrefined margins (module docstring).

    Args:
        probs: (N, K, H, W) teacher probabilities (spatial layouts as in
            :func:`s4mc_refine`; classification input (N, K) is refused).
        drop_percent: in [0, 100], a float or a 0-dim tensor: the authors' name for the
            percentage of valid positions kept — the cut is the (100 − drop_percent)-th
            percentile of the unrefined margin (for ``"entropy"`` the drop_percent-th
            percentile of the entropy). Default 60, the published configuration's value at
            the start of training; :class:`~pseudosel.S4MCSelector` raises it to 100 over
            training as the published schedule does.
        indicator: ``"margin"`` (default, published configuration), ``"confidence"``
            (top-1 probability) or ``"entropy"`` (kept: refined entropy below the cut).
        connectivity: 4 or 8 neighbours, as in :func:`s4mc_refine`. Default 4.
        num_neighbours: the best neighbours united per class, as in :func:`s4mc_refine`.
            Default 1.
        beta: the neighbours' weight, as in :func:`s4mc_refine`. Default e^(−1/2).
        agreement: optional per-class E_c (the published joint estimate), as in
            :func:`s4mc_refine`. Default None.
        valid: optional bool (N, H, W); ignored positions are never kept, lend nothing to
            their neighbours and do not enter the percentile (as the published code's
            ``target != 255``).
        process_group: process group of the global percentile (default group, if
            initialised): 2 ranks select what one process would on the concatenated batch.
        validate: check that valid positions hold probabilities (default True).
        activation: ``"softmax"`` (default) or ``"sigmoid"`` for a binary (N, 1, H, W)
            output, read as the two classes (1 − p, p).
        multilabel: for ``"sigmoid"``, as in :func:`~pseudosel.functional.threshold`.

    Returns:
        :class:`~pseudosel.Selection` (hard): ``labels`` the arg-max of the unrefined
        probabilities, ``score`` the refined indicator (−entropy for ``"entropy"``; 0 at
        ignored positions).

    Example:
        >>> import torch
        >>> from pseudosel.functional import s4mc
        >>> p = torch.tensor([0.99, 0.6, 0.99, 0.5, 0.45]).reshape(1, 1, 1, 5)
        >>> probs = torch.cat((p, 1 - p), 1)  # a 1 x 5 image; margins 0.98 0.2 0.98 0 0.1
        >>> s4mc(probs, drop_percent=50).mask  # cut: the median margin, 0.2
        tensor([[[ True,  True,  True, False, False]]])
        >>> s4mc(probs, drop_percent=50, beta=0.0).mask  # without the neighbours
        tensor([[[ True, False,  True, False, False]]])
    """
    if not isinstance(drop_percent, Tensor):
        drop_percent = check_real("drop_percent", drop_percent, low=0.0, high=100.0)
    indicator = check_choice("indicator", indicator, S4MC_INDICATORS)
    connectivity, num_neighbours, beta = check_s4mc_options(connectivity, num_neighbours, beta)
    probs, valid, _ = prepare(
        probs, valid, activation=activation, multilabel=multilabel, validate=validate
    )
    _check_dense(probs, "s4mc")
    teacher, refined = _lent_and_refined(
        probs,
        valid,
        connectivity=connectivity,
        num_neighbours=num_neighbours,
        beta=beta,
        agreement=agreement,
    )
    before, after = _indicator(teacher, indicator), _indicator(refined, indicator)
    if indicator == "entropy":  # the uncertain share: high entropy
        cut = masked_quantile(before, valid, drop_percent / 100, process_group)
        mask, score = valid & (after < cut.to(after.dtype)), -after
    else:
        cut = masked_quantile(before, valid, (100 - drop_percent) / 100, process_group)
        mask, score = valid & (after > cut.to(after.dtype)), after
    return hard_selection(teacher.argmax(1), mask, score, valid)
