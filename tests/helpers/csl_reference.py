"""A slow, literal float64 reference of CSL, written from CSL_SPEC.md and nothing else.

Per position: arg-max, residual classes, their population variance, g. Per group: a Python
loop, the thin SVD of the 2 x n feature matrix, per-cluster mean and unbiased variance,
z-scores and the OR override. Its only job is to be obviously right; the fast kernel in
pseudosel must match it.

Defaults are the authors' published code, as pseudosel's: ``residual="reference"`` (the
zeroed arg-max slot stays in the variance sum) and always two clusters
(``rank_one_guard=False``); ``residual="theory"`` is the paper's formula and
``rank_one_guard=True`` the optional one-cluster rule for groups with λ₂ <= 1e-12 λ₁.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LINEAR_LAMBDA = 0.25
NEGLOG_LAMBDA = 0.5


def reference_features(probs: np.ndarray, residual: str = "reference", g_scale: float = 1.0):
    """probs (N, K, *spatial) float64 → c, s (N, *spatial) float64 and labels (N, *spatial)."""
    n, k = probs.shape[:2]
    flat = np.moveaxis(probs.reshape(n, k, -1), 1, 2).reshape(-1, k)  # (positions, K)
    c = np.zeros(len(flat))
    s = np.zeros(len(flat))
    labels = np.zeros(len(flat), dtype=np.int64)
    for i, p in enumerate(flat):
        top = int(np.argmax(p))  # first maximum = lowest index on ties
        rest = np.delete(p, top)
        r = rest.sum()
        c[i] = p[top]
        labels[i] = top
        if r > 0:
            mean = r / (k - 1)
            squares = np.sum((rest - mean) ** 2)
            if residual == "reference":
                # the authors' code keeps the zeroed arg-max slot inside the variance sum
                squares += mean**2
            variance = squares / (k - 1)  # population variance over the K - 1 residuals
            g = (k - 1) ** 2 / (2 * r)
            s[i] = g_scale * g * variance
    shape = (n, *probs.shape[2:])
    return c.reshape(shape), s.reshape(shape), labels.reshape(shape)


@dataclass
class ReferenceGroup:
    weight: np.ndarray  # (n_group,) over all positions of the group
    mask: np.ndarray  # trusted: z_c > 0 or z_s > 0 or z = 0 (where, exactly, weight = 1)
    score: np.ndarray
    cluster: np.ndarray  # 0 / 1 per position (-1 for ignored)
    tie_margin: np.ndarray  # (|V[0, i]| - |V[1, i]|) / max of the two: near 0 = near-tie
    reliable: int


def reference_split(
    c: np.ndarray,
    s: np.ndarray,
    valid: np.ndarray,
    *,
    alpha: float = 2.0,
    cluster_rule: str = "confidence",
    min_var: float = 0.0,
    eps: float = 1e-8,
    rank_one_guard: bool = False,
) -> ReferenceGroup:
    """One group: c, s, valid (n,) → weights etc. Literal CSL_SPEC.md §3–4."""
    size = len(c)
    weight = np.zeros(size)
    mask = np.zeros(size, dtype=bool)
    score = np.zeros(size)
    cluster = np.full(size, -1)
    margin = np.full(size, np.inf)
    idx = np.flatnonzero(valid)
    n = len(idx)
    if n == 0:
        return ReferenceGroup(weight, mask, score, cluster, margin, 0)
    x = np.stack([c[idx], s[idx]], axis=1)  # (n, 2), not centred, not scaled
    assign = np.zeros(n, dtype=int)
    if n > 1:
        u, sv, _ = np.linalg.svd(x.T, full_matrices=False)
        if not rank_one_guard or sv[1] ** 2 > 1e-12 * sv[0] ** 2:
            # The authors take argmax_j |V[j, i]| with V[j, i] = (x_i · u_j) / σ_j. Compared
            # as |x_i · u_0| σ_1 against |x_i · u_1| σ_0 it is the same decision, and stays
            # defined when σ_1 = 0 (V's second row is then arbitrary; u_1 is not).
            projections = np.abs(u.T @ x.T)  # (2, n): |x_i · u_j|
            a0, a1 = projections[0] * sv[1], projections[1] * sv[0]
            assign = (a1 > a0).astype(int)  # ties -> cluster 0 (the first)
            margin[idx] = (a0 - a1) / np.maximum(np.maximum(a0, a1), 1e-300)
    cluster[idx] = assign
    stats = []
    for j in (0, 1):
        pts = x[assign == j]
        if len(pts) == 0:
            stats.append(None)
            continue
        mean = pts.mean(axis=0)
        var = pts.var(axis=0, ddof=1) if len(pts) > 1 else np.zeros(2)
        if cluster_rule == "confidence":
            rank = mean[0]
        elif cluster_rule == "linear":
            rank = mean[0] - LINEAR_LAMBDA * mean[1]
        else:
            rank = mean[0] - NEGLOG_LAMBDA * np.log(mean[1] + eps)
        stats.append((mean, var, rank))
    reliable = 0
    if stats[0] is None or (stats[1] is not None and stats[1][2] > stats[0][2]):
        reliable = 1
    mean, var, _ = stats[reliable]
    var = np.maximum(var, min_var)
    for row, i in enumerate(idx):
        z_c = (x[row, 0] - mean[0]) / np.sqrt(var[0] + eps)
        z_s = (mean[1] - x[row, 1]) / np.sqrt(var[1] + eps)
        if z_c > 0 or z_s > 0:
            weight[i] = 1.0
            score[i] = max(z_c, z_s)
        else:
            weight[i] = np.exp(-(z_c**2 + z_s**2) / alpha)
            score[i] = -np.sqrt(z_c**2 + z_s**2)
        mask[i] = z_c > 0 or z_s > 0 or (z_c == 0 and z_s == 0)
    return ReferenceGroup(weight, mask, score, cluster, margin, reliable)


@dataclass
class ReferenceSelection:
    labels: np.ndarray
    weight: np.ndarray
    mask: np.ndarray
    score: np.ndarray
    cluster: np.ndarray
    tie_margin: np.ndarray


def reference_csl(
    probs: torch.Tensor,
    *,
    alpha: float = 2.0,
    scope: str = "auto",
    cluster_rule: str = "confidence",
    residual: str = "reference",
    g_scale: float = 1.0,
    min_var: float = 0.0,
    eps: float = 1e-8,
    rank_one_guard: bool = False,
    valid: torch.Tensor | None = None,
) -> ReferenceSelection:
    """CSL in float64 on the given (possibly rounded) probabilities, group by group."""
    p = probs.detach().to(torch.float64).cpu().numpy()
    shape = (p.shape[0], *p.shape[2:])
    ok = np.ones(shape, dtype=bool) if valid is None else valid.cpu().numpy()
    c, s, labels = reference_features(p, residual, g_scale)
    if scope == "auto":
        scope = "sample" if p.ndim > 2 else "batch"
    rows = p.shape[0] if scope == "sample" else 1
    out = {name: np.zeros((rows, c.size // max(rows, 1))) for name in ("w", "t", "z", "k", "m")}
    for g in range(rows):
        res = reference_split(
            c.reshape(rows, -1)[g],
            s.reshape(rows, -1)[g],
            ok.reshape(rows, -1)[g],
            alpha=alpha,
            cluster_rule=cluster_rule,
            min_var=min_var,
            eps=eps,
            rank_one_guard=rank_one_guard,
        )
        out["w"][g], out["t"][g], out["z"][g], out["k"][g], out["m"][g] = (
            res.weight,
            res.mask,
            res.score,
            res.cluster,
            res.tie_margin,
        )
    weight = out["w"].reshape(shape)
    return ReferenceSelection(
        labels=labels,
        weight=weight,
        mask=out["t"].reshape(shape).astype(bool),
        score=out["z"].reshape(shape),
        cluster=out["k"].reshape(shape),
        tie_margin=out["m"].reshape(shape),
    )
