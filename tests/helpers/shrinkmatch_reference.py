"""ShrinkMatch twice over, for tests/functional/test_shrinkmatch.py and
tests/selectors/test_shrinkmatch_module.py:

- a float64 per-position reference written from the paper (Yang et al., ICCV 2023, Sec. 3:
  the shrunk class space of an uncertain sample, its confidence, the two reweighting
  principles), in plain Python floats, never importing pseudosel;
- a transcription of the published code: ``shrink_loss`` of ``CIFAR/shrinkmatch.py`` (the
  same function in ``ImageNet/shrinkmatch.py``; only ``.cuda()`` removed) and the
  ``certain_ratio_ema`` lines of its ``train()``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "RefShrunk",
    "published_certain_ratios",
    "published_shrink_loss",
    "reference_shrink",
    "sub_confidences",
]


class RefShrunk(NamedTuple):
    label: int  # the top-1 class (lowest index on ties)
    kept: frozenset[int]  # the kept classes (uncertain: shrunk; certain: all)
    weight: float  # confidence · [sub_conf(c) >= tau] · certain_ratio, uncertain only
    cut: int | None  # c: ranks 1 .. c-1 removed (None: certain, or K = 2)


def ranking(p: list[float]) -> list[int]:
    """Classes by probability, descending; equal probabilities: lower index first."""
    return sorted(range(len(p)), key=lambda k: (-p[k], k))


def sub_confidences(p: list[float]) -> dict[int, float]:
    """sub_conf(c) = p_(0) / (p_(0) + Σ_{j >= c} p_(j)) for c = 2, ..., K - 1."""
    order = ranking(p)
    ranked = [p[k] for k in order]
    out = {}
    for c in range(2, len(p)):
        tail = math.fsum(ranked[c:])
        out[c] = ranked[0] / (ranked[0] + tail)
    return out


def reference_shrink(p: list[float], tau: float, certain_ratio: float = 1.0) -> RefShrunk:
    """One position: the paper's rule, literally."""
    k = len(p)
    order = ranking(p)
    label, confidence = order[0], p[order[0]]
    if confidence >= tau:  # certain: FixMatch's loss, nothing to shrink
        return RefShrunk(label, frozenset(range(k)), 0.0, None)
    if k < 3:  # nothing to remove: ranks 1 .. c-1 with c >= 2 would leave one class
        return RefShrunk(label, frozenset(range(k)), 0.0, None)
    confs = sub_confidences(p)
    cut = next((c for c in range(2, k) if confs[c] >= tau), k - 1)
    kept = frozenset([order[0], *order[cut:]])
    reaches = confs[cut] >= tau
    weight = confidence * certain_ratio if reaches else 0.0
    return RefShrunk(label, kept, weight, cut)


def shrunk_loss_terms(logits: list[float], ref: RefShrunk) -> float:
    """The cross-entropy over the kept classes toward the label, in float64."""
    z = [logits[j] for j in sorted(ref.kept)]
    top = max(z)
    lse = top + math.log(math.fsum(math.exp(v - top) for v in z))
    return lse - logits[ref.label]


# --- the published code ------------------------------------------------------------------


def published_shrink_loss(pseudo_label, logits_u_s, conf_thresh):
    """``shrink_loss`` of CIFAR/shrinkmatch.py (= ImageNet/shrinkmatch.py), transcribed;
    only ``.cuda()`` removed. Returns (summed loss, removed class index per uncertain
    sample)."""
    removed_class_idx = []
    loss_u_shrink_batch = 0

    B, C = pseudo_label.shape

    max_probs = pseudo_label.max(dim=-1)[0]
    mask = pseudo_label.ge(conf_thresh).float()

    sorted_prob_w, sorted_idx = pseudo_label.topk(C, dim=-1, sorted=True)
    # organize logit_s same as the sorted_prob_w
    sorted_logits_s = logits_u_s.gather(dim=-1, index=sorted_idx)

    if mask.mean().item() == 1:  # no uncertain samples to shrink
        loss_u_shrink_batch = 0
    else:
        for b in range(B):
            if max_probs[b] >= conf_thresh:  # skip certain samples
                continue
            for c in range(2, C):
                sub_conf = sorted_prob_w[b, 0] / (sorted_prob_w[b, 0] + sorted_prob_w[b, c:].sum())
                if (sub_conf >= conf_thresh) or (c == C - 1):
                    sub_logits_s = torch.cat(
                        [sorted_logits_s[b, :1], sorted_logits_s[b, c:]], dim=0
                    )
                    loss_u_shrink = F.cross_entropy(
                        sub_logits_s[None,], torch.zeros(1).long(), reduction="none"
                    )[0]
                    loss_u_shrink *= max_probs[b] * (sub_conf >= conf_thresh)
                    loss_u_shrink_batch += loss_u_shrink
                    removed_class_idx.append(c)
                    break

    return loss_u_shrink_batch, removed_class_idx


def published_certain_ratios(batches, threshold, *, epoch_length=None):
    """The ``certain_ratio_ema`` of ``train()`` after each step of ``batches`` (weak-view
    probabilities (B, C)), transcribed: set from the first batch's share, then
    ``ema * 0.999 + share * 0.001``; reset to None at the start of each epoch of
    ``epoch_length`` steps (None: one epoch). The momentum is the published 0.999."""
    certain_ratio_ema = None
    out = []
    for i, pseudo_label in enumerate(batches):
        if epoch_length is not None and i % epoch_length == 0:
            certain_ratio_ema = None  # train(): ``certain_ratio_ema = None``
        max_probs, _ = torch.max(pseudo_label, dim=-1)
        mask = max_probs.ge(threshold).float()
        if certain_ratio_ema is None:
            certain_ratio_ema = mask.mean().item()
        else:
            certain_ratio_ema = certain_ratio_ema * 0.999 + mask.mean().item() * 0.001
        out.append(certain_ratio_ema)
    return out
