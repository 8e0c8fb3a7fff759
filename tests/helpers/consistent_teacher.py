"""Consistent-Teacher's published rules (``ssod/models/consistent_teacher.py``), rewritten
as plain loops for the tests: the GMM policy through scikit-learn exactly as the code calls
it, the per-image total-score cut, the per-class score queues and one teacher step."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.mixture import GaussianMixture


def published_gmm_policy(scores: torch.Tensor, given_gt_thr: float, policy: str) -> float:
    """The code's ``gmm_policy``: fewer than 4 scores → ``given_gt_thr``; otherwise a
    two-component GaussianMixture with weights ½, means (min, max), precisions 1, fitted on
    the scores as float32 numpy; ``high``: the score of the most likely (largest
    ``score_samples``) high-component point, taken as the smallest high-component score at
    or above it; ``middle``: the smallest high-component score; no high point → fallback."""
    if len(scores) < 4:
        return given_gt_thr
    x = scores.cpu().numpy()[:, np.newaxis]
    gmm = GaussianMixture(
        2,
        weights_init=[0.5, 0.5],
        means_init=[[np.min(x)], [np.max(x)]],
        precisions_init=[[[1.0]], [[1.0]]],
    )
    gmm.fit(x)
    assignment = gmm.predict(x)
    density = gmm.score_samples(x)
    if not (assignment == 1).any():
        return given_gt_thr
    if policy == "high":
        density[assignment == 0] = -np.inf
        best = np.argmax(density, axis=0)
        return float(x[(assignment == 1) & (x >= x[best]).squeeze()].min())
    return float(x[assignment == 1].min())


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
