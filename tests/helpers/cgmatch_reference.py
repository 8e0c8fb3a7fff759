"""A slow, obvious float64 reference of CGMatch, written from the paper (Cheng et al., CVPR
2025, Sec. 3): every sample keeps the list of its pseudo-labels, its count gap is the count of
its most frequent label minus that of the second (collections.Counter over the whole list),
μ_t and g_t are EMAs. Python loops over samples, numpy float64; never imports pseudosel.

``window=W`` is pseudosel's documented option, not the paper's: the counts weigh a sample's
j-th most recent prediction by (1 − 1/W)^j (j = 0 for the newest).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np


def counter_gap(history: list[int], decay: float = 1.0) -> float:
    """Most frequent label's count minus the runner-up's (0 if none), weighted by age."""
    if decay == 1.0:
        counts = Counter(history)
    else:
        counts = defaultdict(float)
        for age, label in enumerate(reversed(history)):
            counts[label] += decay**age
    ordered = sorted(counts.values(), reverse=True) + [0.0, 0.0]
    return float(ordered[0] - ordered[1])


class RefCGMatch:
    """One CGMatch run: ``record`` (warm-up passes) and ``step`` (a training step)."""

    def __init__(self, num_classes, momentum, *, per_class=False, window=None):
        self.k, self.m, self.per_class = num_classes, momentum, per_class
        self.decay = 1.0 if window is None else 1.0 - 1.0 / window
        self.history: dict[int, list[int]] = defaultdict(list)
        self.mu = np.full(num_classes, 1.0 / num_classes) if per_class else 1.0 / num_classes
        self.gap_mu = 0.0
        self.started = False

    def gap(self, sample: int) -> float:
        return counter_gap(self.history.get(sample, []), self.decay)

    def counts(self, num_unlabeled: int) -> np.ndarray:
        out = np.zeros((num_unlabeled, self.k))
        for sample, history in self.history.items():
            for age, label in enumerate(reversed(history)):
                out[sample, label] += self.decay**age
        return out

    def record(self, probs, index, valid):
        probs = np.asarray(probs, dtype=np.float64)
        for i in range(len(probs)):
            if valid[i]:
                self.history[int(index[i])].append(int(np.argmax(probs[i])))

    def step(self, probs, index, valid):
        """Record, then the EMAs, then (easy, ambiguous, gaps) for the batch."""
        probs = np.asarray(probs, dtype=np.float64)
        self.record(probs, index, valid)
        conf = probs.max(1)
        labels = probs.argmax(1)
        gaps = np.array([self.gap(int(s)) for s in index])
        rows = [i for i in range(len(probs)) if valid[i]]
        m = self.m
        if self.per_class:
            batch = np.zeros(self.k)
            for c in range(self.k):
                members = [conf[i] for i in rows if labels[i] == c]
                if len(members) > 1:  # the authors' hook: fewer than two -> 0
                    batch[c] = np.mean(members)
            self.mu = m * self.mu + (1 - m) * batch
        elif rows:
            self.mu = m * self.mu + (1 - m) * np.mean([conf[i] for i in rows])
        if not self.started:
            seen = [s for s, h in self.history.items() if h]
            if seen:
                self.gap_mu = float(np.mean([self.gap(s) for s in seen]))
                self.started = True
        elif rows:
            self.gap_mu = m * self.gap_mu + (1 - m) * float(np.mean([gaps[i] for i in rows]))
        mu = self.mu[labels] if self.per_class else np.full(len(probs), self.mu)
        valid = np.asarray(valid, dtype=bool)
        easy = valid & (conf >= mu)
        ambiguous = valid & ~easy & (gaps >= self.gap_mu)
        return easy, ambiguous, np.where(valid, gaps, 0.0)
