"""Real offline data for the example trainers: scikit-learn's handwritten digits.

- :func:`digit_splits` — the 1,797 real 8x8 digits split into a few labelled examples per
  class, an unlabelled set (labels kept only to measure pseudo-label quality) and a test set.
- :func:`long_tailed_splits` — the same, with labelled and unlabelled class counts falling
  geometrically from a head class to a tail class (imbalance ratio head / tail), and a
  balanced test set.
- :func:`make_mosaics` — "digit mosaics" for segmentation: real digits placed on a canvas,
  per-pixel label = the digit's class where its ink is, background (class 10) elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

BACKGROUND = 10  # segmentation class of pixels without ink
NUM_SEG_CLASSES = 11
IGNORE = 255
INK = 0.25  # a digit pixel (scaled to [0, 1]) brighter than this is ink


@dataclass
class DigitSplits:
    """Images (n, 1, 8, 8) in [0, 1] and labels (n,) of each split."""

    labelled: tuple[torch.Tensor, torch.Tensor]
    unlabelled: tuple[torch.Tensor, torch.Tensor]  # labels hidden from training
    test: tuple[torch.Tensor, torch.Tensor]


def _all_digits() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.long)


def digit_splits(labels_per_class: int = 4, test_fraction: float = 0.2, seed: int = 0):
    """Stratified test split, then ``labels_per_class`` labelled digits per class; the rest
    is the unlabelled set. Deterministic for a seed."""
    images, targets = _all_digits()
    gen = torch.Generator().manual_seed(seed)
    test_idx, labelled_idx, unlabelled_idx = [], [], []
    for k in range(10):
        members = (targets == k).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = round(len(members) * test_fraction)
        test_idx.append(members[:n_test])
        labelled_idx.append(members[n_test : n_test + labels_per_class])
        unlabelled_idx.append(members[n_test + labels_per_class :])
    pick = [torch.cat(parts) for parts in (labelled_idx, unlabelled_idx, test_idx)]
    labelled, unlabelled, test = ((images[i], targets[i]) for i in pick)
    return DigitSplits(labelled, unlabelled, test)


#: how the unlabelled class counts follow the labelled ones in :func:`long_tailed_splits`
UNLABELLED_PROFILES = ("same", "reversed", "balanced")


def long_tailed_counts(head: int, imbalance: float, classes: int = 10) -> list[int]:
    """``head · imbalance^(-r / (classes - 1))`` for ranks r = 0 … classes − 1, rounded, at
    least 1: the exponential profile of CIFAR-LT, used by Adsh and DARS. A head smaller than
    the imbalance ratio would give a tail under one example (a weaker ratio than asked):
    refused."""
    if head < imbalance:
        raise ValueError(
            f"an imbalance ratio of {imbalance:g} needs at least {imbalance:g} examples in the "
            f"head class, got {head}"
        )
    return [max(1, round(head * imbalance ** (-r / (classes - 1)))) for r in range(classes)]


def long_tailed_splits(
    head_labelled: int = 20,
    head_unlabelled: int = 110,
    imbalance: float = 10.0,
    unlabelled: str = "same",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DigitSplits:
    """Long-tailed labelled and unlabelled digits, a balanced test set.

    A seeded permutation ranks the ten classes from head to tail (so seeds average over which
    digit is rare); rank r gets ``long_tailed_counts(head_labelled, imbalance)[r]`` labelled
    digits and, for ``unlabelled="same"``, the unlabelled counts of the same profile with
    ``head_unlabelled`` at the head (110 by default: with 20 labelled, every digit has that
    many outside the test split, the rarest one 139) — the same imbalance ratio in both, as
    Adsh and DARS evaluate. ``"reversed"`` gives the unlabelled set the opposite order (the
    labelled tail is the unlabelled head: the labelled distribution is a wrong prior),
    ``"balanced"`` ``head_unlabelled`` of every class. The test split is stratified
    (``test_fraction`` of every class) and the same as :func:`digit_splits`' for the seed.
    Deterministic for a seed.
    """
    if unlabelled not in UNLABELLED_PROFILES:
        raise ValueError(f"unlabelled must be one of {UNLABELLED_PROFILES}, got {unlabelled!r}")
    images, targets = _all_digits()
    gen = torch.Generator().manual_seed(seed)
    members_of = []
    test_idx = []
    for k in range(10):
        members = (targets == k).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = round(len(members) * test_fraction)
        test_idx.append(members[:n_test])
        members_of.append(members[n_test:])
    rank_of_class = torch.randperm(10, generator=gen).tolist()
    labelled_counts = long_tailed_counts(head_labelled, imbalance)
    unlabelled_counts = {
        "same": long_tailed_counts(head_unlabelled, imbalance),
        "reversed": long_tailed_counts(head_unlabelled, imbalance)[::-1],
        "balanced": [head_unlabelled] * 10,
    }[unlabelled]
    labelled_idx, unlabelled_idx = [], []
    for k, members in enumerate(members_of):
        n_l, n_u = labelled_counts[rank_of_class[k]], unlabelled_counts[rank_of_class[k]]
        if n_l + n_u > len(members):
            raise ValueError(
                f"class {k} has {len(members)} digits outside the test split, "
                f"{n_l} labelled + {n_u} unlabelled were asked for"
            )
        labelled_idx.append(members[:n_l])
        unlabelled_idx.append(members[n_l : n_l + n_u])
    pick = [torch.cat(parts) for parts in (labelled_idx, unlabelled_idx, test_idx)]
    labelled, unlabelled_split, test = ((images[i], targets[i]) for i in pick)
    return DigitSplits(labelled, unlabelled_split, test)


def make_mosaics(
    count: int,
    *,
    size: int = 48,
    digits: tuple[torch.Tensor, torch.Tensor] | None = None,
    scale: int = 2,
    fill: tuple[int, int] = (2, 5),
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Canvases of real digits with dense labels.

    The canvas holds a grid of cells of ``8 * scale`` pixels (shifted as a whole by a random
    offset when ``size`` leaves a margin); each canvas fills a random number (``fill``,
    inclusive) of random cells with a random digit, upscaled by ``scale`` (nearest). Cells
    never overlap, so every ink pixel belongs to exactly one digit: label = that digit's
    class where the digit's intensity exceeds ``INK``, ``BACKGROUND`` elsewhere.

    Args:
        count: number of canvases.
        size: canvas side in pixels (default 48: a 3 x 3 grid of 16-pixel cells).
        digits: (images (n, 1, 8, 8), labels (n,)) to draw from (default: all 1,797).
        scale: upscaling of each 8x8 digit. Default 2.
        fill: (min, max) digits per canvas. Default (2, 5).
        seed: the same seed gives the same canvases.

    Returns:
        ``(images, labels)``: float (count, 1, size, size) in [0, 1], long (count, size, size).
    """
    images, targets = digits if digits is not None else _all_digits()
    gen = torch.Generator().manual_seed(seed)
    side = 8 * scale
    cells_per_row = size // side
    if cells_per_row < 1:
        raise ValueError(f"size must be at least {side} for scale={scale}, got {size}")
    cells = cells_per_row * cells_per_row
    canvas = torch.zeros(count, 1, size, size)
    labels = torch.full((count, size, size), BACKGROUND, dtype=torch.long)
    big = F.interpolate(images, scale_factor=scale, mode="nearest")  # (n, 1, side, side)
    margin = size - cells_per_row * side  # free pixels around the grid: the random shift
    for i in range(count):  # data generation, not a selection path
        n_digits = int(torch.randint(fill[0], min(fill[1], cells) + 1, (1,), generator=gen))
        chosen_cells = torch.randperm(cells, generator=gen)[:n_digits]
        chosen_digits = torch.randint(0, len(images), (n_digits,), generator=gen)
        shift = torch.randint(0, margin + 1, (2,), generator=gen) if margin else (0, 0)
        for cell, d in zip(chosen_cells.tolist(), chosen_digits.tolist(), strict=True):
            top = (cell // cells_per_row) * side + int(shift[0])
            left = (cell % cells_per_row) * side + int(shift[1])
            patch = big[d, 0]
            canvas[i, 0, top : top + side, left : left + side] = patch
            ink = patch > INK
            region = labels[i, top : top + side, left : left + side]
            region[ink] = int(targets[d])
    return canvas, labels
