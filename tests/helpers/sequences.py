"""Multi-step input sequences for the adaptive selectors' reference tests, and the numpy
views their references (helpers/adaptive_reference.py) take (``numpy_of`` is re-exported
from helpers/tolerances.py).

Every sequence is drawn on the CPU (the same values on every device) and moved to
``device``; the numpy views copy back to the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from helpers.probability_maps import classifier_outputs, smooth_maps
from helpers.tolerances import numpy_of

__all__ = [
    "STEPS",
    "cls_batches",
    "dense_batches",
    "imbalanced_set",
    "masked",
    "numpy_of",
    "rows",
    "start_from",
]

#: steps of a reference sequence
STEPS = 8


def cls_batches(n=24, k=6, steps=STEPS, seed=0, device="cpu") -> list[Tensor]:
    """Classification batches growing more confident, as during training (float64)."""
    return [
        classifier_outputs(n, k, sharpness=1.0 + 1.5 * t, seed=seed + t, dtype=torch.float64).to(
            device
        )
        for t in range(steps)
    ]


def dense_batches(n=2, k=5, size=9, steps=STEPS, seed=0, device="cpu"):
    """(probs, valid) dense batches growing sharper, about a quarter ignored (float64)."""
    out = []
    for t in range(steps):
        probs = smooth_maps(
            n, k, size, size, sharpness=2.0 + t, seed=seed + t, dtype=torch.float64
        ).to(device)
        valid = torch.rand(n, size, size, generator=torch.Generator().manual_seed(t)) > 0.25
        out.append((probs, valid.to(device)))
    return out


def imbalanced_set(n, k, epoch, seed=0, device="cpu") -> Tensor:
    """An unlabelled set with a head class 0 and a long tail, sharper every epoch."""
    gen = torch.Generator().manual_seed(seed + epoch)
    weights = torch.tensor([0.5**c for c in range(k)], dtype=torch.float64)
    labels = torch.multinomial(weights, n, replacement=True, generator=gen)
    logits = torch.randn(n, k, generator=gen, dtype=torch.float64)
    logits[torch.arange(n), labels] += 2.0 + 0.5 * epoch
    return (logits * (1.0 + 0.3 * epoch)).softmax(1).to(device)


def rows(probs: Tensor, valid: Tensor | None = None) -> np.ndarray:
    """(N, K, *spatial) → (n_valid, K) numpy rows of valid positions, in memory order."""
    flat = probs.movedim(1, -1).reshape(-1, probs.shape[1])
    if valid is not None:
        flat = flat[valid.flatten()]
    return numpy_of(flat)


def start_from(ref, selector, *names) -> None:
    """Give the reference the module's initial state (1/K is rounded to float32 there)."""
    for name in names:
        value = numpy_of(getattr(selector, name)).copy()
        setattr(ref, name, value if value.ndim else value.item())


def masked(values: Tensor, valid: Tensor | None) -> np.ndarray:
    """The values at valid positions, flattened, as numpy."""
    return numpy_of(values.flatten()[valid.flatten()] if valid is not None else values)
