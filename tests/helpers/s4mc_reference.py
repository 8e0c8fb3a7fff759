"""S4MC written twice, never importing pseudosel: from the paper (float64 numpy, one pixel
at a time) and as the authors' published code does it (a transcription run on torch tensors).

The paper (Kimhi et al., arXiv:2308.13900): for class c at pixel i and its most confident
neighbour q_c (4- or 8-connected), the refined probability is the union of events
p_c + β·q_c − β·P(both c), with P(both c) = p_c·q_c; several neighbours are united one after
another, best first. The threshold is a percentile of the teacher's (unrefined) margin over
the valid positions, applied to the refined margin; its kept share grows over training.
"""

from __future__ import annotations

import math

import numpy as np
import torch

OFFSETS = {
    4: ((-1, 0), (1, 0), (0, -1), (0, 1)),
    8: tuple((di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)),
}

#: the per-class joint constants E_c the published code ships (loss_helper.py,
#: compute_unsupervised_loss: ``pascal_E_joint`` and ``cityscapes_E_joit``)
PASCAL_E = [
    0.9980886695132567, 0.9860495622941258, 0.9555923573386919, 0.9888166500147213,
    0.9861891841249937, 0.9894536447668415, 0.9928481727772317, 0.9899944432748093,
    0.9939554498312092, 0.9723734804881907, 0.9814734877790432, 0.992167780556063,
    0.9921082109870506, 0.9904260573555301, 0.9877020724598903, 0.9890704556150036,
    0.9771896568239452, 0.9865771364049042, 0.9878175644560833, 0.9948415228771397,
    0.993315147276186,
]  # fmt: skip
CITYSCAPES_E = [
    0.9964431323326034, 0.9861639854327645, 0.961200350864672, 0.831981383888851,
    0.9733805255682632, 0.9763628214927057, 0.9914859783638212, 0.9967060462154962,
    0.9877697391019615, 0.98401636296503, 0.9905921230630785, 0.990570758079667,
    0.9847896602829518, 0.9842767938040367, 0.9516618302498175, 0.9894203625002091,
    0.9713330344039811, 0.9448128823732177, 0.9544919165416704,
]  # fmt: skip


# ------------------------------------------------------------------ from the paper


def refine_reference(
    probs: np.ndarray,
    valid: np.ndarray,
    connectivity: int = 4,
    num_neighbours: int = 1,
    beta: float = math.exp(-0.5),
    agreement: list[float] | None = None,
) -> np.ndarray:
    """(N, K, H, W) float64 → refined, one pixel and class at a time. Outside the image and
    at ignored positions a neighbour is 0 (lends nothing); ignored pixels stay as given."""
    n, k, h, w = probs.shape
    out = probs.astype(np.float64).copy()
    for b in range(n):
        for i in range(h):
            for j in range(w):
                if not valid[b, i, j]:
                    continue
                for c in range(k):
                    lent = []
                    for di, dj in OFFSETS[connectivity]:
                        y, x = i + di, j + dj
                        inside = 0 <= y < h and 0 <= x < w
                        lent.append(float(probs[b, c, y, x]) if inside and valid[b, y, x] else 0.0)
                    p = float(probs[b, c, i, j])
                    for q in sorted(lent, reverse=True)[:num_neighbours]:
                        both = p * q if agreement is None else max(p * q, p * agreement[c])
                        p = p + beta * q - beta * both
                    out[b, c, i, j] = p
    return out


def indicator_reference(probs: np.ndarray, indicator: str) -> np.ndarray:
    """(N, K, H, W) → (N, H, W): margin, confidence or entropy −Σ p log(p + 1e-10)."""
    if indicator == "margin":
        top = np.sort(probs, axis=1)
        return top[:, -1] - top[:, -2]
    if indicator == "confidence":
        return probs.max(1)
    return -(probs * np.log(probs + 1e-10)).sum(1)


def select_reference(
    probs: np.ndarray,
    valid: np.ndarray,
    drop_percent: float,
    indicator: str = "margin",
    **refine: object,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mask, labels, refined indicator, cut): the cut is numpy's percentile of the
    unrefined indicator over the valid positions, the test is on the refined one."""
    probs = np.where(valid[:, None], probs, 0.0)
    refined = refine_reference(probs, valid, **refine)
    before = indicator_reference(probs, indicator)[valid]
    after = indicator_reference(refined, indicator)
    if indicator == "entropy":
        cut = float(np.percentile(before, drop_percent)) if before.size else 0.0
        mask = valid & (after < cut)
    else:
        cut = float(np.percentile(before, 100 - drop_percent)) if before.size else 0.0
        mask = valid & (after > cut)
    return mask, probs.argmax(1), after, cut


def kept_percent_reference(drop_percent: float, epoch: int, epochs: int) -> float:
    """The published schedule (train_semi.py, per epoch)."""
    percent_unreliable = (100 - drop_percent) * (1 - epoch / epochs)
    return 100 - percent_unreliable


# ------------------------------------------------------------------ the authors' code


def authors_neighbours(X: torch.Tensor, n: int = 4) -> list[torch.Tensor]:
    """Transcribes ``get_neigbor_tensors(X, n, entrophy=False)`` (s4mc_utils/utils/
    loss_helper.py): zero padding, then the 4 or 8 shifted views."""
    assert n in [4, 8]
    X = torch.nn.functional.pad(X, (1, 1, 1, 1, 0, 0, 0, 0))
    neighbours = []
    if n == 8:
        for i, j in [(None, -2), (1, -1), (2, None)]:
            for k, l in [(None, -2), (1, -1), (2, None)]:  # noqa: E741
                if i == k and i == 1:
                    continue
                neighbours.append(X[:, :, i:j, k:l])
    else:
        neighbours.append(X[:, :, :-2, 1:-1])
        neighbours.append(X[:, :, 2:, 1:-1])
        neighbours.append(X[:, :, 1:-1, :-2])
        neighbours.append(X[:, :, 1:-1, 2:])
    return neighbours


def authors_kept(
    prob: torch.Tensor,
    target: torch.Tensor,
    percent: float,
    *,
    E_joint: list[float],
    indicator: str = "margin",
    neigborhood_size: int = 4,
    n_neigbors: int = 1,
) -> torch.Tensor:
    """Transcribes the ``torch.no_grad()`` block of ``compute_unsupervised_loss``
    (s4mc_utils/utils/loss_helper.py), ``.cuda()``/device moves removed, starting from the
    teacher's probabilities (the published code applies the softmax first) and with the
    dataset's E given; returns the kept pixels: ``target != 255`` after the code set the
    dropped ones to 255."""
    target = target.clone()
    num_class = prob.shape[1]
    if indicator == "entropy":
        entropy = -torch.sum(prob * torch.log(prob + 1e-10), dim=1)
        thresh = np.percentile(entropy[target != 255].detach().cpu().numpy().flatten(), percent)
    elif indicator == "confidence":
        _max_probs, max_class = torch.max(prob, dim=1)
        thresh = np.percentile(
            _max_probs[target != 255].detach().cpu().numpy().flatten(), 100 - percent
        )
    else:
        _topk, _ = torch.topk(prob, 2, dim=1)
        _margin = _topk[:, 0, :, :] - _topk[:, 1, :, :]
        thresh = np.percentile(
            _margin[target != 255].detach().cpu().numpy().flatten(), 100 - percent
        )
    E = torch.tensor(E_joint).view((1, num_class, 1, 1)).to(prob.device)
    neighbors = torch.stack(authors_neighbours(prob, n=neigborhood_size))
    k_neighbors, neigbor_idx = torch.topk(neighbors, k=n_neigbors, axis=0)
    for neighbor in k_neighbors:
        beta = torch.exp(torch.tensor(-1 / 2))
        prob = prob + beta * neighbor - (torch.max(prob * neighbor, prob * E) * beta)
    if indicator == "entropy":
        entropy = -torch.sum(prob * torch.log(prob + 1e-10), dim=1)
        thresh_mask = entropy.ge(thresh).bool() * (target != 255).bool()
    elif indicator == "confidence":
        max_probs, _ = torch.max(prob, dim=1)
        thresh_mask = max_probs.le(thresh).bool() * (target != 255).bool()
    else:
        _topk, _ = torch.topk(prob, 2, dim=1)
        margin = _topk[:, 0, :, :] - _topk[:, 1, :, :]
        thresh_mask = margin.le(thresh).bool() * (target != 255).bool()
    target[thresh_mask] = 255
    return target != 255


#: the published β as the code computes it (a float32 tensor: e^(−1/2) rounded to float32)
AUTHORS_BETA = float(torch.exp(torch.tensor(-1 / 2)))


def authors_schedule(drop_percent: float, epochs: int, iters_per_epoch: int) -> list[float]:
    """Transcribes train_semi.py's per-step ``drop_percent`` (epoch-based), for every
    iteration of every epoch."""
    values = []
    for epoch in range(epochs):
        for _ in range(iters_per_epoch):
            percent_unreliable = (100 - drop_percent) * (1 - epoch / epochs)
            values.append(100 - percent_unreliable)
    return values
