"""Digit-mosaic detection: real scikit-learn digits at random places and scales on a canvas,
one box per digit, ten classes.

- :func:`make_detection_mosaics` — canvases with their boxes (x1, y1, x2, y2, pixels, tight
  around the digit's ink) and classes, the digits drawn from a given pool;
- :func:`detection_data` — the labelled, unlabelled and test canvases of a seed, built from
  disjoint digit pools (:func:`digits_data.digit_splits`), so no digit image appears in two
  sets and the labelled canvases hold only the labelled digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from digits_data import INK, digit_splits

NUM_CLASSES = 10
CANVAS = 40  # canvas side in pixels
SCALES = (1.5, 2.0, 2.5)  # a digit's 8 pixels become 12, 16 or 20


@dataclass
class Detections:
    """Canvases (n, 1, S, S) in [0, 1] and, per canvas, boxes (m_i, 4) and labels (m_i,)."""

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor) -> Detections:
        picked = index.tolist()
        return Detections(
            self.images[index], [self.boxes[i] for i in picked], [self.labels[i] for i in picked]
        )


def make_detection_mosaics(
    count: int,
    digits: tuple[torch.Tensor, torch.Tensor],
    *,
    size: int = CANVAS,
    fill: tuple[int, int] = (1, 4),
    seed: int = 0,
) -> Detections:
    """``count`` canvases, each with ``fill`` (inclusive range) digits at random scales
    (:data:`SCALES`) and places, their squares never overlapping (a draw that would overlap
    is retried, then dropped). A digit's box is tight around its ink (pixels above
    :data:`digits_data.INK` after resizing)."""
    images, targets = digits
    gen = torch.Generator().manual_seed(seed)
    canvas = torch.zeros(count, 1, size, size)
    boxes, labels = [], []
    for i in range(count):  # data generation, not a selection path
        wanted = int(torch.randint(fill[0], fill[1] + 1, (1,), generator=gen))
        taken: list[tuple[int, int, int]] = []
        image_boxes, image_labels = [], []
        for _ in range(wanted):
            for _ in range(20):
                scale = SCALES[int(torch.randint(0, len(SCALES), (1,), generator=gen))]
                side = round(8 * scale)
                top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=gen))
                if all(
                    top + side <= t or t + s <= top or left + side <= lft or lft + s <= left
                    for t, lft, s in taken
                ):
                    break
            else:
                continue
            d = int(torch.randint(0, len(images), (1,), generator=gen))
            patch = F.interpolate(
                images[d : d + 1], size=(side, side), mode="bilinear", align_corners=False
            )[0, 0].clamp(0, 1)
            ink = (patch > INK).nonzero()
            if len(ink) == 0:
                continue
            taken.append((top, left, side))
            canvas[i, 0, top : top + side, left : left + side] = patch
            y1, x1 = ink.min(0).values.tolist()
            y2, x2 = (ink.max(0).values + 1).tolist()
            image_boxes.append([left + x1, top + y1, left + x2, top + y2])
            image_labels.append(int(targets[d]))
        boxes.append(torch.tensor(image_boxes, dtype=torch.float32).reshape(-1, 4))
        labels.append(torch.tensor(image_labels, dtype=torch.long))
    return Detections(canvas, boxes, labels)


def detection_data(
    seed: int, labels_per_class: int, labelled: int, unlabelled: int, test: int
) -> tuple[Detections, Detections, Detections]:
    """The labelled, unlabelled and test canvases of a seed (disjoint digit pools)."""
    splits = digit_splits(labels_per_class=labels_per_class, seed=seed)
    parts = ((labelled, splits.labelled), (unlabelled, splits.unlabelled), (test, splits.test))
    return tuple(  # type: ignore[return-value]
        make_detection_mosaics(count, digits, seed=seed * 1000 + i)
        for i, (count, digits) in enumerate(parts, 1)
    )
