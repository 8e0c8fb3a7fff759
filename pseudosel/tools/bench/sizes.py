"""The inputs ``pseudosel bench`` times the kernels on: the standard shapes and smooth
random probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["DEFAULT_SIZES", "LARGE_SIZES", "QUICK_SIZES", "make_probs", "parse_size"]

DEFAULT_SIZES = ["448x10", "448x100", "256x1000", "8x21x321x321", "64x21x32x32"]
LARGE_SIZES = ["16x19x512x512", "16x21x512x512"]  # GPU / large-memory only
QUICK_SIZES = ["64x10", "4x5x16x16"]


def parse_size(text: str) -> tuple[int, ...]:
    """``"8x21x321x321"`` → (8, 21, 321, 321): N x K [x spatial], positive, K >= 2.

    Raises ``TypeError`` for a non-string and ``ValueError`` naming the text otherwise.
    """
    if not isinstance(text, str):
        raise TypeError(f"a size must be a string like '8x21x321x321', got {text!r}")
    parts = text.strip().lower().split("x")
    if len(parts) < 2 or not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(
            f"{text!r} is not a shape like 448x10 or 8x21x321x321 (N x K [x H x W]: positive "
            "integers joined by 'x')"
        )
    shape = tuple(int(part) for part in parts)
    if min(shape) < 1 or shape[1] < 2:
        raise ValueError(
            f"{text!r} is not a shape like 448x10 or 8x21x321x321: every size must be >= 1 "
            "and K (the second) >= 2"
        )
    return shape


def make_probs(shape: Sequence[int], dtype: torch.dtype, device: str | torch.device):
    """Softmax of smooth random logits (a spread of confidences, as from a real model)."""
    gen = torch.Generator().manual_seed(0)
    shape = tuple(shape)
    if len(shape) == 4:
        n, k, h, w = shape
        coarse = torch.randn(n, k, max(2, h // 8), max(2, w // 8), generator=gen)
        logits = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")
        logits = logits * 6 + 0.3 * torch.randn(shape, generator=gen)
    else:
        logits = torch.randn(shape, generator=gen) * 4
    return logits.softmax(1).to(device=device, dtype=dtype)
