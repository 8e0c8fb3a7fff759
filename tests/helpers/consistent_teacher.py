"""Consistent-Teacher's published rules (``ssod/models/consistent_teacher.py``), rewritten
as plain loops for the tests: the GMM policy through scikit-learn exactly as the code calls
it, the per-image total-score cut, the per-class score queues and one teacher step."""

from __future__ import annotations

import torch

# the per-class rule through scikit-learn, shared with `pseudosel bench --gmm`
from pseudosel.tools.bench.gmm import published_gmm_policy

__all__ = [
    "published_gmm_policy",
    "published_prefilter",
    "published_queue_update",
    "published_teacher_step",
]


def published_prefilter(scores: torch.Tensor, ratio: float) -> float:
    """The code's per-image cut: sorted descending, num_gt = int(Σ·ratio + 0.5) capped at
    len − 1, cut = scores[num_gt] − 1e-5; an image without boxes gets 1."""
    scores = scores.sort(descending=True)[0]
    if len(scores) == 0:
        return 1.0
    num_gt = int(scores.sum() * ratio + 0.5)
    num_gt = min(num_gt, len(scores) - 1)
    return float(scores[num_gt] - 1e-5)


def published_queue_update(queue: torch.Tensor, scores, labels) -> torch.Tensor:
    """The code's loop: for each class in the batch, cat(new scores, old queue)[:length]."""
    queue = queue.clone()
    for label in torch.unique(labels):
        label = int(label)
        added = scores[labels == label]
        queue[label] = torch.cat([added.float(), queue[label].float()])[: queue.shape[1]]
    return queue


def published_teacher_step(queue, scores, labels, *, dynamic_ratio=1.0, policy="high"):
    """One step of the code on per-image (scores, labels): returns the new queue and, per
    image, the kept boxes (a bool mask over its boxes)."""
    queue = queue.clone()
    first = []
    for s in scores:
        ordered = s.sort(descending=True)[0]
        if len(ordered) == 0:
            cut = 1.0
        else:
            num_gt = min(int(ordered.sum() * dynamic_ratio + 0.5), len(ordered) - 1)
            cut = ordered[num_gt] - 1e-5
        first.append(s > cut)
    kept_scores = torch.cat([s[k] for s, k in zip(scores, first, strict=True)])
    kept_labels = torch.cat([lab[k] for lab, k in zip(labels, first, strict=True)])
    thresholds = torch.zeros_like(kept_scores)
    for label in torch.unique(kept_labels):
        label = int(label)
        row = torch.cat([kept_scores[kept_labels == label].float(), queue[label].float()])
        queue[label] = row[: queue.shape[1]]
        thr = published_gmm_policy(queue[label][queue[label] > 0], 0.0, policy)
        thresholds[kept_labels == label] = thr
    kept_thresholds = torch.split(thresholds, [int(k.sum()) for k in first])
    final = []
    for s, k, thr in zip(scores, first, kept_thresholds, strict=True):
        mask = k.clone()
        mask[k] = s[k] > thr
        final.append(mask)
    return queue, final
