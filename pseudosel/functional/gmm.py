"""Consistent-Teacher's per-class score threshold from a two-component Gaussian mixture.

Wang et al., "Consistent-Teacher: Towards Reducing Inconsistent Pseudo-targets in
Semi-supervised Object Detection", CVPR 2023. For each class the teacher keeps the scores of
its last ``num_scores`` pseudo-boxes (default 100), fits a 1-D mixture of two Gaussians to
them and takes the threshold from the component of high scores. The published code fits
scikit-learn's ``GaussianMixture`` on the CPU, once per class and step; here the fit runs on
the input's device, batched over classes, with no host synchronisation.

The fit is scikit-learn's EM for ``GaussianMixture(2, weights_init=[½, ½],
means_init=[[min], [max]], precisions_init=[[[1]], [[1]]])`` with its defaults
(``tol=1e-3`` on the mean log-likelihood, ``reg_covar=1e-6``, ``max_iter=100``), step for
step, computed in float64 (float32 on MPS). scikit-learn computes in the data's dtype —
float32 for the code's float32 queues — so where the two roundings stop EM at different
steps a threshold can move to a neighbouring score (tests: equal on at least 99% of random
queues, a neighbour on the rest):

- E-step: log N(x | μ_c, σ_c²) + log w_c per point and component; the mean over the row's
  points of the log-sum-exp is the lower bound;
- M-step: n_c = Σ r + 10·eps, μ_c = Σ r·x / n_c, σ_c² = Σ r·(x − μ_c)² / n_c + reg_covar,
  w_c = n_c / Σ n_c;
- a row stops when its lower bound moved by less than ``tol`` (keeping the M-step's
  parameters); the others go on, up to ``max_iter`` steps. In eager mode on the CPU the
  loop ends as soon as every row has stopped (a free read there:
  :func:`~pseudosel.kernels.eager_cpu`); elsewhere it always runs ``max_iter`` steps, the
  stopped rows frozen, so nothing is read on the host.

Then each point goes to the component of higher weighted likelihood (component 0 on a tie,
as ``argmax``), and the threshold is, by ``policy``:

- ``"high"`` (the code's default, "GMM-B"): the score of the high-component point with the
  highest mixture density (the first such point in row order on a tie);
- ``"middle"``: the smallest high-component score;

and ``fallback`` (the code's ``given_gt_thr``, default 0) for a row with fewer than
``min_count`` (4) scores or no point in the high component.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pseudosel._grad import no_grad
from pseudosel.functional.separation import accumulation_dtype
from pseudosel.kernels import eager_cpu
from pseudosel.validation import (
    check_bool_mask,
    check_choice,
    check_float_matrix,
    check_long,
    check_real,
)

__all__ = ["GMM_POLICIES", "gmm_thresholds", "score_queue_update", "total_score_cut"]

GMM_POLICIES = ("high", "middle")
_LOG_2PI = math.log(2 * math.pi)


def _check_rows(name: str, scores: object, valid: object) -> None:
    check_float_matrix(name, scores, "(K, Q) tensor of score rows")
    if valid is not None:
        check_bool_mask("valid", valid, name, scores.shape)


def _check_count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _weighted_log_prob(x: Tensor, weights: Tensor, means: Tensor, prec_chol: Tensor) -> Tensor:
    """(K, Q, 2) log w_c + log N(x | μ_c, 1 / prec_chol_c²), in scikit-learn's order of
    operations (x (K, Q, 1); parameters (K, 1, 2))."""
    y = x * prec_chol - means * prec_chol
    return -0.5 * (_LOG_2PI + y * y) + torch.log(prec_chol) + torch.log(weights)


def _m_step(x: Tensor, resp: Tensor, reg_covar: float) -> tuple[Tensor, Tensor, Tensor]:
    """Weights, means and precision Cholesky factors (each (K, 1, 2)) from responsibilities
    (K, Q, 2) that are 0 at the points a row does not hold."""
    nk = resp.sum(1, keepdim=True) + 10 * torch.finfo(resp.dtype).eps
    means = (resp * x).sum(1, keepdim=True) / nk
    diff = x - means
    covariance = (resp * diff * diff).sum(1, keepdim=True) / nk + reg_covar
    weights = nk / nk.sum(2, keepdim=True)
    return weights, means, 1.0 / torch.sqrt(covariance)


# compiled once and stamped out max_iter times: unrolled, 100 steps took minutes to compile
@torch.compiler.nested_compile_region
def _em_step(
    x: Tensor,
    valid: Tensor,
    rows: Tensor,
    parameters: tuple[Tensor, Tensor, Tensor],
    bound: Tensor,
    running: Tensor,
    tol: float,
    reg_covar: float,
) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor, Tensor]:
    """One EM step of every row still running (the others keep their parameters): E-step
    with the current parameters, M-step, and the stop test on the lower bound."""
    weighted = _weighted_log_prob(x, *parameters)
    norm = weighted.logsumexp(2, keepdim=True)
    resp = torch.where(valid.unsqueeze(2), (weighted - norm).exp(), 0)
    new_bound = torch.where(valid, norm.squeeze(2), 0).sum(1) / rows
    step = running.view(-1, 1, 1)
    updated = _m_step(x, resp, reg_covar)
    parameters = tuple(
        torch.where(step, new, old) for new, old in zip(updated, parameters, strict=True)
    )
    converged = (new_bound - bound).abs() < tol
    bound = torch.where(running, new_bound, bound)
    return parameters, bound, running & ~converged


@no_grad
def gmm_thresholds(
    scores: Tensor,
    valid: Tensor | None = None,
    *,
    policy: str = "high",
    fallback: float = 0.0,
    min_count: int = 4,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
) -> Tensor:
    """Per-class thresholds from a two-component Gaussian mixture fitted to each score row.

    Args:
        scores: (K, Q) floating, one row of scores per class (e.g. the score queues of
            :func:`score_queue_update`).
        valid: optional bool (K, Q): the entries each row holds (default: all). Consistent-
            Teacher fits the positive entries of its zero-initialised queues:
            ``valid=scores > 0``.
        policy: ``"high"`` (default) or ``"middle"`` (module docstring).
        fallback: the threshold of a row with fewer than ``min_count`` valid scores or none
            in the high component. Default 0.0 (the code's ``given_gt_thr``).
        min_count: the fewest scores a row is fitted with. Default 4.
        max_iter: EM steps at most. Default 100 (scikit-learn).
        tol: a row stops when its mean log-likelihood moved by less. Default 1e-3.
        reg_covar: added to each variance. Default 1e-6.

    Returns:
        (K,) thresholds in the dtype of ``scores``, on its device. Consistent-Teacher keeps
        a box whose score is strictly above its class's threshold.

    Example:
        >>> import torch
        >>> from pseudosel.functional import gmm_thresholds
        >>> low = torch.tensor([0.05, 0.08, 0.1, 0.12, 0.15, 0.2])
        >>> high = torch.tensor([0.7, 0.75, 0.8, 0.82, 0.85, 0.9])
        >>> rows = torch.stack([torch.cat([low, high]), torch.full((12,), 0.3)])
        >>> gmm_thresholds(rows, policy="middle")  # all equal: no high component
        tensor([0.7000, 0.0000])
        >>> gmm_thresholds(rows, rows > 0.6, fallback=0.5)  # 6 and 0 scores
        tensor([0.8000, 0.5000])
    """
    _check_rows("scores", scores, valid)
    policy = check_choice("policy", policy, GMM_POLICIES)
    fallback = check_real("fallback", fallback)
    min_count = _check_count("min_count", min_count, 1)
    max_iter = _check_count("max_iter", max_iter, 0)
    tol = check_real("tol", tol, low=0.0)
    reg_covar = check_real("reg_covar", reg_covar, low=0.0, low_open=True)

    if scores.shape[1] == 0:  # rows without a slot: nothing to fit
        return torch.full((scores.shape[0],), fallback, dtype=scores.dtype, device=scores.device)
    wide = accumulation_dtype(scores.device)
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    valid = valid & scores.isfinite()
    x = torch.where(valid, scores, 0).to(wide).unsqueeze(2)  # (K, Q, 1)
    count = valid.sum(1)
    low = torch.where(valid, scores, math.inf).amin(1).to(wide)
    high = torch.where(valid, scores, -math.inf).amax(1).to(wide)
    low, high = torch.where(count > 0, low, 0), torch.where(count > 0, high, 0)
    weights = torch.full((scores.shape[0], 1, 2), 0.5, dtype=wide, device=scores.device)
    means = torch.stack((low, high), 1).unsqueeze(1)
    prec_chol = torch.ones_like(weights)
    bound = torch.full((scores.shape[0],), -math.inf, dtype=wide, device=scores.device)
    running = count >= min_count
    # the host reads a CPU tensor for free: there, stop when every row has stopped
    may_stop_early = eager_cpu(scores)
    rows = count.clamp_min(1).to(wide)
    parameters = (weights, means, prec_chol)
    for _ in range(max_iter):
        if may_stop_early and not bool(running.any()):
            break
        parameters, bound, running = _em_step(
            x, valid, rows, parameters, bound, running, tol, reg_covar
        )
    weights, means, prec_chol = parameters

    weighted = _weighted_log_prob(x, weights, means, prec_chol)
    in_high = valid & (weighted[..., 1] > weighted[..., 0])
    x = x.squeeze(2)
    if policy == "high":
        density = torch.where(in_high, weighted.logsumexp(2), -math.inf)
        densest = density.argmax(1, keepdim=True)  # first of the ties, as numpy's argmax
        threshold = x.gather(1, densest).squeeze(1)
    else:
        threshold = torch.where(in_high, x, math.inf).amin(1)
    usable = (count >= min_count) & in_high.any(1)
    threshold = torch.where(usable, threshold, fallback)
    return threshold.to(scores.dtype)


@no_grad
def total_score_cut(scores: Tensor, valid: Tensor | None = None, *, ratio: float = 1.0) -> Tensor:
    """Consistent-Teacher's per-image pre-filter: the cut below which an image's boxes are
    dropped before the GMM, from the image's total score.

    Per image, with its M valid scores sorted in descending order s₀ ≥ s₁ ≥ …, the cut is
    s_k − 1e-5 with k = min(int(Σ s · ratio + 0.5), M − 1): about as many boxes are kept as
    the scores add up to. An image with no box gets the cut 1 (nothing is kept). A box is
    kept when its score is strictly above the cut, as in the published code.

    Args:
        scores: (N, M) floating, the box scores of N images (padding anywhere).
        valid: optional bool (N, M), False at padding (default: all valid).
        ratio: the code's ``dynamic_ratio``. Default 1.0.

    Returns:
        (N,) cuts in float32 (the dtype of float32/float64 ``scores``), on their device.

    Example:
        >>> import torch
        >>> from pseudosel.functional import total_score_cut
        >>> scores = torch.tensor([[0.9, 0.8, 0.3, 0.1], [0.4, 0.2, 0.1, 0.0]])
        >>> cut = total_score_cut(scores)  # k = int(2.1 + 0.5) = 2, int(0.7 + 0.5) = 1
        >>> scores > cut[:, None]
        tensor([[ True,  True,  True, False],
                [ True,  True, False, False]])
    """
    check_float_matrix("scores", scores, "(N, M) tensor of box scores")
    if valid is not None:
        _check_rows("scores", scores, valid)
    ratio = check_real("ratio", ratio, low=0.0)
    dtype = scores.dtype if scores.dtype in (torch.float32, torch.float64) else torch.float32
    if scores.shape[1] == 0:  # no box slot: nothing is kept
        return torch.ones(scores.shape[0], dtype=dtype, device=scores.device)
    scores = scores.to(dtype)
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    held = torch.where(valid, scores, 0)
    count = valid.sum(1)
    ordered = torch.where(valid, scores, -math.inf).sort(1, descending=True).values
    kept = torch.floor(held.sum(1) * ratio + 0.5).to(torch.long)
    position = torch.minimum(kept, count - 1).clamp(0, scores.shape[1] - 1)
    cut = ordered.gather(1, position.unsqueeze(1)).squeeze(1) - 1e-5
    return torch.where(count > 0, cut, 1.0)


@no_grad
def score_queue_update(
    queue: Tensor, scores: Tensor, labels: Tensor, valid: Tensor | None = None
) -> Tensor:
    """The per-class score queues after a batch: each class's new scores first (in batch
    order), then its old ones, cut to the queue length (Consistent-Teacher's
    ``torch.cat([new, old])[:num_scores]``). A class without a new score keeps its queue.

    Args:
        queue: (K, Q) floating, one row per class (0 marks an empty slot, as in the code).
        scores: box scores of any shape (flattened in row-major order: image, then box).
        labels: long, the boxes' classes in [0, K), same shape (any value where invalid).
        valid: optional bool, same shape: the boxes that enter the queues (default: all).

    Returns:
        (K, Q) the new queues (a new tensor, the dtype and device of ``queue``).

    Example:
        >>> import torch
        >>> from pseudosel.functional import score_queue_update
        >>> queue = torch.tensor([[0.5, 0.4, 0.3], [0.2, 0.0, 0.0]])
        >>> score_queue_update(queue, torch.tensor([0.9, 0.7, 0.8]), torch.tensor([0, 0, 1]))
        tensor([[0.9000, 0.7000, 0.5000],
                [0.8000, 0.2000, 0.0000]])
    """
    if not isinstance(queue, Tensor) or not queue.is_floating_point() or queue.dim() != 2:
        raise TypeError("queue must be a floating (K, Q) tensor")
    check_long("labels", labels)
    if labels.shape != scores.shape or (valid is not None and valid.shape != scores.shape):
        raise ValueError(
            f"scores, labels and valid must have one shape, got {tuple(scores.shape)}, "
            f"{tuple(labels.shape)}" + ("" if valid is None else f" and {tuple(valid.shape)}")
        )
    num_classes, length = queue.shape
    scores, labels = scores.reshape(-1), labels.reshape(-1)
    entering = torch.ones_like(labels, dtype=torch.bool) if valid is None else valid.reshape(-1)
    entering = entering & (labels >= 0) & (labels < num_classes)
    # a box's rank among its class's new scores, in batch order: a stable sort by class
    # (boxes that do not enter go last, as class K), then the position after the class's
    # start — O(boxes) memory, as dense per-point input needs
    key = torch.where(entering, labels, num_classes)
    order = torch.sort(key, stable=True).indices
    per_class = torch.zeros(num_classes + 1, dtype=torch.long, device=labels.device)
    per_class.index_add_(0, key, torch.ones_like(key))
    starts = per_class.cumsum(0) - per_class
    sorted_rank = torch.arange(len(key), device=labels.device) - starts[key[order]]
    rank = torch.empty_like(key).scatter_(0, order, sorted_rank)
    count = per_class[:num_classes]
    # new scores at (class, rank); boxes past the queue length, or not entering, go to a
    # spare column that is cut off
    fresh = queue.new_zeros(num_classes, length + 1)
    row = torch.where(entering, labels, 0)
    column = torch.where(entering, rank.clamp_max(length), length)
    fresh.index_put_((row, column), scores.to(queue.dtype))
    slot = torch.arange(length, device=queue.device)
    older = queue.gather(
        1, (slot - count.unsqueeze(1)).clamp(0, max(length - 1, 0)).expand(num_classes, length)
    )
    return torch.where(slot < count.unsqueeze(1), fresh[:, :length], older)
