"""Class-prior-matched thresholds (DARS), written from the paper as slow float64 Python:
one sorted list per class, one loop over the classes. Never imports pseudosel."""

from __future__ import annotations

import math

import numpy as np

FLOAT32 = np.dtype(np.float32)


def rows(probs: np.ndarray, valid: np.ndarray) -> tuple[list[float], list[int], list[bool]]:
    """Positions as plain lists: confidence (the max), arg-max (first on ties), valid."""
    flat = np.moveaxis(probs, 1, -1).reshape(-1, probs.shape[1])
    return (
        [float(max(row)) for row in flat],
        [int(np.argmax(row)) for row in flat],
        [bool(v) for v in valid.reshape(-1)],
    )


def keep_none(highest: float, dtype: np.dtype) -> float:
    """The next float of ``dtype`` above max(1, highest)."""
    top = dtype.type(max(1.0, highest))
    return float(np.nextafter(top, dtype.type(np.inf)))


def reference_cuts(
    confidence: list[float],
    labels: list[int],
    valid: list[bool],
    prior: list[float],
    kept_share: float | None,
    *,
    tau: float = 0.95,
    min_threshold: float = 0.0,
    dtype: np.dtype = FLOAT32,
) -> tuple[list[float], list[int]]:
    """Per class c: k_c = min(floor(s · n · π_c), m_c) and the k_c-th largest confidence of
    the positions predicted c (floored at ``min_threshold`` in ``dtype``); the next float above
    max(1, the class's highest confidence) where k_c = 0. s: ``kept_share``, else the share
    of valid positions with confidence >= tau."""
    n = sum(valid)
    if kept_share is None:
        kept_by_tau = sum(1 for c, v in zip(confidence, valid, strict=True) if v and c >= tau)
        share = kept_by_tau / max(n, 1)
    else:
        share = kept_share
    thresholds, kept = [], []
    for c, p in enumerate(prior):
        scores = sorted(
            (s for s, y, v in zip(confidence, labels, valid, strict=True) if v and y == c),
            reverse=True,
        )
        k = min(math.floor(share * n * p), len(scores))
        kept.append(k)
        if k == 0:
            thresholds.append(keep_none(scores[0] if scores else 1.0, dtype))
        else:
            thresholds.append(max(scores[k - 1], float(dtype.type(min_threshold))))
    return thresholds, kept


class ReferenceClassPrior:
    """The module's running cuts, step by step: the batch cuts of the classes with
    k_c >= 1 move t_c ← m · t_c + (1 − m) · cut_c (a class's first cut replaces ``tau``);
    a position is kept when its confidence reaches its class's cut and its prior is > 0."""

    def __init__(self, num_classes: int, *, prior=None, kept_share=None, tau=0.95, momentum=0.9):
        self.k = num_classes
        self.fixed = None if prior is None else [float(p) for p in prior]
        self.counts = [0.0] * num_classes
        self.kept_share, self.tau, self.momentum = kept_share, tau, momentum
        self.thresholds = [tau] * num_classes
        self.initialized = [False] * num_classes

    def prior(self) -> list[float]:
        if self.fixed is not None:
            return self.fixed
        total = sum(self.counts)
        if total == 0:
            return [1.0 / self.k] * self.k
        return [c / total for c in self.counts]

    def update_labeled(self, labels: list[int]) -> None:
        for y in labels:
            self.counts[y] += 1

    def step(self, confidence, labels, valid, *, training=True, dtype=FLOAT32):
        if training:
            cuts, kept = reference_cuts(
                confidence, labels, valid, self.prior(), self.kept_share, tau=self.tau,
                dtype=dtype,
            )  # fmt: skip
            for c in range(self.k):
                if kept[c] >= 1:
                    old = self.thresholds[c]
                    self.thresholds[c] = (
                        self.momentum * old + (1 - self.momentum) * cuts[c]
                        if self.initialized[c]
                        else cuts[c]
                    )
                    self.initialized[c] = True
        prior = self.prior()
        return [
            v and s >= float(dtype.type(self.thresholds[y])) and prior[y] > 0
            for s, y, v in zip(confidence, labels, valid, strict=True)
        ]
