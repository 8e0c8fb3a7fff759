"""Weak and strong views of the example data, vectorised over the batch, seeded.

Classification (8x8 digits): weak = small random translation; strong = random affine
(rotation, scale, shear, translation), Gaussian noise and a cutout square.
Segmentation (digit mosaics): random crops with padded ignore regions; strong = brightness
and contrast jitter, blur and noise (geometry unchanged, so pseudo-labels stay aligned).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from digits_data import IGNORE


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def weak_digits(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Translate each (n, 1, 8, 8) digit by up to one pixel in each direction."""
    n, _, h, w = images.shape
    shift = torch.randint(-1, 2, (n, 2), generator=gen).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = shift[:, 0] * 2 / w
    theta[:, 1, 2] = shift[:, 1] * 2 / h
    return _affine(images, theta)


def strong_digits(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random affine, noise and cutout of (n, 1, 8, 8) digits."""
    n, _, h, w = images.shape
    angle = _uniform(n, -25, 25, gen) * math.pi / 180
    scale = _uniform(n, 0.85, 1.15, gen)
    shear = _uniform(n, -0.25, 0.25, gen)
    shift = _uniform(2 * n, -1.5, 1.5, gen).view(n, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        (
            torch.stack((cos, -sin + shear, shift[:, 0] * 2 / w), -1),
            torch.stack((sin, cos, shift[:, 1] * 2 / h), -1),
        ),
        1,
    )
    out = _affine(images, theta)
    out = out + 0.08 * torch.randn(out.shape, generator=gen)
    # cutout: a 3 x 3 square at a random place
    top = torch.randint(0, h - 2, (n, 1, 1), generator=gen)
    left = torch.randint(0, w - 2, (n, 1, 1), generator=gen)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    square = (rows >= top) & (rows < top + 3) & (cols >= left) & (cols < left + 3)
    return out.masked_fill(square.unsqueeze(1), 0.0).clamp(0, 1)


def random_crops(
    images: torch.Tensor, labels: torch.Tensor, crop: int, pad: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad by ``pad`` (image 0, label IGNORE) and take one random ``crop`` per sample."""
    padded = F.pad(images, (pad, pad, pad, pad), value=0.0)
    padded_labels = F.pad(labels, (pad, pad, pad, pad), value=IGNORE)
    n, _, h, w = padded.shape
    top = torch.randint(0, h - crop + 1, (n,), generator=gen)
    left = torch.randint(0, w - crop + 1, (n,), generator=gen)
    rows = (top.view(n, 1) + torch.arange(crop)).view(n, crop, 1)
    cols = (left.view(n, 1) + torch.arange(crop)).view(n, 1, crop)
    batch = torch.arange(n).view(n, 1, 1)
    crops = padded[batch, 0, rows, cols].unsqueeze(1)
    return crops, padded_labels[batch, rows, cols]


def strong_mosaic(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Photometric strong view of (n, 1, H, W) canvases: jitter, blur, noise."""
    n = images.shape[0]
    brightness = _uniform(n, 0.6, 1.4, gen).view(n, 1, 1, 1)
    contrast = _uniform(n, 0.6, 1.4, gen).view(n, 1, 1, 1)
    mean = images.mean(dim=(2, 3), keepdim=True)
    out = ((images - mean) * contrast + mean) * brightness
    blur = (torch.rand(n, generator=gen) < 0.5).view(n, 1, 1, 1)
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    blurred = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel.view(1, 1, 3, 3))
    out = torch.where(blur, blurred, out)
    return (out + 0.05 * torch.randn(out.shape, generator=gen)).clamp(0, 1)
