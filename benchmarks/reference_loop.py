"""A baseline in the structure of the authors' CSL code, to measure our kernel against.

Written here from CSL_SPEC.md's description of that code (no code was copied): a Python
loop over images; per image the features as full-size tensor expressions (the arg-max slot
zeroed and left inside the variance sum, as in their segmentation code — our
``residual="reference"`` variant), boolean gathers of the valid pixels, a thin SVD of the
2 x n feature matrix, per-cluster statistics from boolean gathers, Python branches on tensor
values (each a host synchronisation) and a boolean scatter back. One deliberate difference:
g uses the residual mass summed over the residual classes, not 1 − c (which cancels to 0 in
float32 and made their g blow up), so that the weights can be checked against
``pseudosel.functional.csl(..., residual="reference")``.
"""

from __future__ import annotations

import torch

import pseudosel.functional as F

EPS = 1e-8


def reference_style_csl(
    probs: torch.Tensor, alpha: float = 2.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(N, K, H, W) → (N, H, W) CSL weights, one image at a time, computed in ``dtype``."""
    probs = probs.to(dtype)
    weights = torch.zeros(probs.shape[0], *probs.shape[2:], dtype=dtype, device=probs.device)
    k = probs.shape[1]
    for i in range(probs.shape[0]):
        p = probs[i]
        conf, label = p.max(0)
        residual = p.clone()
        residual.scatter_(0, label.unsqueeze(0), 0.0)  # zero the arg-max slot
        r = residual.sum(0)
        mean = r / (k - 1)
        variance = ((residual - mean) ** 2).sum(0) / (k - 1)  # zeroed slot still inside
        g = (k - 1) ** 2 / (2 * r.clamp_min(1e-30))
        spread = torch.where(r > 0, g * variance, torch.zeros_like(r))
        valid = torch.ones_like(conf, dtype=torch.bool)
        x = torch.stack((conf[valid], spread[valid]))  # (2, n): a boolean gather
        n = x.shape[1]
        if n == 0:
            continue
        assign = torch.zeros(n, dtype=torch.long, device=x.device)
        if n > 1:
            _, _, vh = torch.linalg.svd(x, full_matrices=False)  # thin SVD of 2 x n
            assign = vh.abs().argmax(0)  # the authors always split
        stats = []
        for j in (0, 1):
            members = x[:, assign == j]  # boolean gather
            if members.shape[1] == 0:
                stats.append(None)
                continue
            mean_j = members.mean(1)
            var_j = members.var(1) if members.shape[1] > 1 else torch.zeros_like(mean_j)
            stats.append((mean_j, var_j))
        reliable = 0
        if stats[0] is None or (stats[1] is not None and (stats[1][0][0] > stats[0][0][0]).item()):
            reliable = 1
        center, spread_var = stats[reliable]
        z_c = (x[0] - center[0]) / torch.sqrt(spread_var[0] + EPS)
        z_s = (center[1] - x[1]) / torch.sqrt(spread_var[1] + EPS)
        w = torch.exp(-(z_c**2 + z_s**2) / alpha)
        w[(z_c > 0) | (z_s > 0)] = 1.0  # boolean scatter
        image = weights[i]
        image[valid] = w
    return weights


def baseline(probs: torch.Tensor):
    """Benchmark factory: the reference-style loop on dense input (timed in float32).

    Checked on this very input: run in float64, its weights must equal
    ``pseudosel.functional.csl(probs.double())`` (its defaults are the authors' code) within
    1e-6 (in float32 both differ from float64 by rounding only, the loop's SVD more than our
    kernel).
    """
    if probs.dim() != 4:
        return {}, None
    ours = F.csl(probs.double(), validate=False).weight  # defaults: the authors' code
    theirs = reference_style_csl(probs, dtype=torch.float64)
    checked = bool((ours - theirs).abs().max() <= 1e-6)
    return {"reference-style loop": lambda: reference_style_csl(probs)}, checked
