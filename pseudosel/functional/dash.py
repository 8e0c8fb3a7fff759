"""Dash: keep positions whose pseudo-label loss is below a shrinking threshold ρ_t.

Xu et al., "Dash: Semi-Supervised Learning with Dynamic Thresholding", ICML 2021; the loss,
the two phases and the defaults follow USB's ``DashThresholdingHook``.

The loss of a position is the cross-entropy of p against its pseudo-label:

- soft phase (USB's default while ρ > ρ_min): the target is the sharpened distribution
  q = softmax(logits / T), T = 0.5, and ℓ = −Σ_k q_k·log p_k. From probabilities,
  softmax(logits / T) = p^(1/T) / Σ_j p_j^(1/T) exactly, so q = softmax(log p / T) over the
  class axis (a class with p_k = 0 gets q_k = 0 and adds 0, never NaN);
- hard phase (once ρ reaches ρ_min): the target is ŷ = argmax p, and ℓ = −log max p.

ℓ_soft >= ℓ_hard (every −log p_k >= −log max p), so the soft phase keeps fewer positions.
The threshold decays every ``update_every`` steps: ρ_t = max(C·γ^(−k)·ρ_init, ρ_min) at the
k-th update (k = 0 at the first step). ρ_init is the mean cross-entropy of the model on
labeled data after warm-up.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pseudosel import kernels
from pseudosel._deprecation import keyword_valid
from pseudosel._grad import no_grad
from pseudosel.features import confidence_and_labels
from pseudosel.inputs import prepare
from pseudosel.kernels import cpu
from pseudosel.selection import Selection, hard_selection
from pseudosel.validation import check_real, compute_dtype, in_dtype

__all__ = ["dash_rho", "dash_select"]


@no_grad
def dash_rho(
    update_count: Tensor,
    rho_init: Tensor,
    *,
    gamma: float = 1.27,
    c: float = 1.0001,
    rho_min: float = 0.05,
) -> Tensor:
    """ρ after ``update_count`` previous updates: max(C·γ^(−k)·ρ_init, ρ_min).

    Example:
        >>> import torch
        >>> from pseudosel.functional import dash_rho
        >>> dash_rho(torch.tensor(2), torch.tensor(1.0), gamma=2.0, c=1.0)
        tensor(0.2500)
    """
    decay = torch.pow(
        torch.as_tensor(gamma, dtype=rho_init.dtype), -update_count.to(rho_init.dtype)
    )
    return torch.clamp_min(c * decay * rho_init, rho_min)


@no_grad
@keyword_valid("dash_select", 2)
def dash_select(
    probs: Tensor,
    rho: Tensor,
    *,
    valid: Tensor | None = None,
    use_hard_labels: Tensor | bool = False,
    T: float = 0.5,
    validate: bool = True,
    activation: str = "softmax",
    multilabel: bool | None = None,
) -> Selection:
    """mask = ℓ <= ρ, with ℓ the cross-entropy of p against soft or hard pseudo-labels.

    Args:
        probs: (N, K, *spatial) probabilities.
        rho: 0-dim threshold ρ_t (see :func:`dash_rho`).
        valid: optional bool (N, *spatial); False positions are never selected.
        use_hard_labels: False (default, USB while ρ > ρ_min): ℓ = −Σ_k q_k·log p_k with
            q = softmax(log p / T), the cross-entropy against ``softmax(logits / T)``.
            True (USB once ρ reaches ρ_min): ℓ = −log max p. A 0-dim bool tensor (such as
            ``rho <= rho_min``) picks per call on the device, without a host read; then
            both losses are computed.
        T: the sharpening temperature of the soft targets (> 0). Default 0.5 (USB).
        activation: ``"softmax"`` (default) or ``"sigmoid"``: binary (N, 1, *spatial) or
            multi-label (N, L, *spatial) probabilities read as (1 − p, p)
            (:func:`class_probs`); ``valid`` and the fields are then (N, L, *spatial).
        validate: check that valid positions hold probabilities (default True).
        multilabel: for ``"sigmoid"``, as in :func:`~pseudosel.functional.threshold`.

    Returns:
        :class:`~pseudosel.Selection`: ``labels`` = argmax p (Dash's consistency loss uses
        hard pseudo-labels), ``mask`` = valid & ℓ <= ρ, ``weight`` = mask as 0/1,
        ``score`` = −ℓ (higher = more reliable; 0 at ignored positions). Computed in float32
        for float16/bfloat16 input, else in the input dtype.

    Example:
        >>> import torch
        >>> from pseudosel.functional import dash_select
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])
        >>> dash_select(probs, torch.tensor(0.6)).mask  # soft: ℓ = 0.13, 0.64, 0.69
        tensor([ True, False, False])
        >>> dash_select(probs, torch.tensor(0.6), use_hard_labels=True).mask
        tensor([ True,  True, False])
    """
    T = check_real("T", T, low=0.0, low_open=True)
    probs, valid, all_valid = prepare(
        probs, valid, activation=activation, multilabel=multilabel, validate=validate
    )
    return dash_after_front_door(probs, rho, valid, all_valid, use_hard_labels, T)


def dash_after_front_door(
    probs: Tensor,
    rho: Tensor,
    valid: Tensor,
    all_valid: bool,
    use_hard_labels: Tensor | bool,
    T: float,
    features: tuple[Tensor, Tensor] | None = None,
) -> Selection:
    """:func:`dash_select`'s formula on what the front door returned (also
    :class:`~pseudosel.DashSelector`'s step, which runs its own front door). ``features``:
    the confidence and arg-max of ``probs`` when the caller has them.

    The score −ℓ is computed as it is returned. Hard: −ℓ = log ĉ. Soft: with
    u = log p − log ĉ <= 0, e = exp(u / T) and Z = Σ e, q = e / Z and log p = u + log ĉ,
    so −ℓ = Σ q·log p = log ĉ + Σ e·u / Z (e·u is 0 where e = 0: p = 0 or underflow).
    mask = ℓ <= ρ, i.e. −ℓ >= −ρ (a negation is exact)."""
    confidence, labels = features or confidence_and_labels(probs)
    dtype = compute_dtype(probs.dtype)
    log_top = torch.log(in_dtype(confidence, dtype))
    if isinstance(use_hard_labels, bool) and use_hard_labels:
        score = log_top
    else:
        z, spread = _soft_loss_terms(probs, log_top, T, dtype)
        soft_score = log_top + spread / z
        if isinstance(use_hard_labels, bool):
            score = soft_score
        else:
            score = torch.where(use_hard_labels.to(log_top.device), log_top, soft_score)
    mask = score >= -in_dtype(rho, dtype)
    if not all_valid:
        mask &= valid
    return hard_selection(labels, mask, score, valid, all_valid=all_valid)


def _soft_loss_terms(
    probs: Tensor, log_top: Tensor, T: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Z = Σ_k e_k and Σ_k e_k·u_k over the classes, (N, *spatial) each, with
    u = log p − log ĉ and e = exp(u / T); ``log_top`` = log ĉ."""
    top = log_top.unsqueeze(1)
    # eager CPU: log and exp in cache-sized blocks, not as input-sized temporaries, and
    # e·u with u clamped instead of xlogy (a third of its speed on a CPU), at any size
    if kernels.eager_cpu(probs):
        return cpu.dash_soft_loss_terms(probs, top, T, dtype)
    e = ((probs.to(dtype).log() - top) / T).exp()
    # e·u = T·e·log e, 0 where e = 0 (xlogy), never 0·(−inf)
    return e.sum(1), torch.special.xlogy(e, e).sum(1) * T
