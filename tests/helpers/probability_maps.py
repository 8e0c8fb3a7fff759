"""Realistic probability inputs for tests: spatially smooth softmax maps, peaky or flat."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_maps(
    n: int,
    k: int,
    height: int,
    width: int,
    *,
    sharpness: float = 6.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(n, k, height, width) softmax of smooth random logit fields plus pixel noise.

    ``sharpness`` scales the logits: ~6 gives peaky, segmentation-like maps with confident
    interiors and uncertain borders; ~0.5 gives near-uniform maps. Drawn on the CPU: a
    test on another device moves them (the same values on every device).
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(
        n, k, max(2, height // 6), max(2, width // 6), generator=gen, dtype=torch.float64
    )
    logits = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    logits = logits * sharpness + 0.3 * torch.randn(
        logits.shape, generator=gen, dtype=torch.float64
    )
    return logits.softmax(1).to(dtype)


def classifier_outputs(
    n: int, k: int, *, sharpness: float = 3.0, seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(n, k) softmax outputs with a spread of confidences, like a partly trained classifier
    (drawn on the CPU)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=gen, dtype=torch.float64)
    boost = torch.rand(n, 1, generator=gen, dtype=torch.float64) * sharpness * 3
    logits[:, :1] += boost  # some samples much more confident than others
    logits = logits * sharpness / 2
    perm = torch.randperm(k, generator=gen)
    return logits[:, perm].softmax(1).to(dtype)


def noisy_labels(probs: torch.Tensor, *, seed: int, correct: float = 0.8) -> torch.Tensor:
    """(n,) true labels for (n, k) predictions: the arg-max in a share ``correct`` of the
    rows, a random class in the others (which may be the arg-max too)."""
    gen = torch.Generator().manual_seed(seed)
    n, k = probs.shape
    return torch.where(
        torch.rand(n, generator=gen) < correct,
        probs.argmax(1),
        torch.randint(0, k, (n,), generator=gen),
    )


def stressed_logits(kind: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """float64 logits of one stressing kind: ``"near-uniform"`` (tiny spread),
    ``"near-one-hot"`` (huge spread), ``"ties"`` (many exact ties of the top classes), or
    else a classifier-like spread."""
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if kind == "near-uniform":
        return logits * 1e-3
    if kind == "near-one-hot":
        return logits * 40
    if kind == "ties":
        return (logits * 2).round()
    return logits * 3
