"""Small networks for the example trainers: a CNN for 8x8 digits, an FCN for mosaics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DigitCNN(nn.Module):
    """(n, 1, 8, 8) → (n, 10) logits."""

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _block(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(),
    )


class MosaicFCN(nn.Module):
    """(n, 1, H, W) → (n, 11, H, W) logits; encoder /4, decoder with a full-resolution skip.

    ``forward(x, feature_dropout=True)`` also returns the logits of a second decoder pass
    on the encoder features with channel dropout — UniMatch's feature-perturbation branch.
    """

    def __init__(self, width: int = 24, num_classes: int = 11) -> None:
        super().__init__()
        self.stem = _block(1, width)
        self.encoder = nn.Sequential(
            _block(width, width, stride=2),
            _block(width, 2 * width),
            _block(2 * width, 2 * width, stride=2),
            _block(2 * width, 2 * width),
        )
        self.reduce = _block(2 * width, width)
        self.fuse = nn.Sequential(_block(2 * width, width), nn.Conv2d(width, num_classes, 1))
        self.dropout = nn.Dropout2d(0.5)

    def _decode(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(
            self.reduce(deep), size=skip.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.fuse(torch.cat((skip, up), 1))

    def forward(self, x: torch.Tensor, feature_dropout: bool = False):
        skip = self.stem(x)
        deep = self.encoder(skip)
        logits = self._decode(skip, deep)
        if not feature_dropout:
            return logits
        return logits, self._decode(self.dropout(skip), self.dropout(deep))
