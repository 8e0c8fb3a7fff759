"""A slow, literal reference of the precision-targeted calibration, written from its
definition in plain Python with scipy (it never imports pseudosel).

Definition: candidates t₀ > t₁ > … are tested from the highest down. Candidate t has n
held-out points with confidence >= t, k of them correct; its one-sided Clopper–Pearson lower
bound at level 1 − δ is L = Beta(k, n − k + 1).ppf(δ) (0 when k = 0). Candidates with fewer
than max(min_count, m) points are passed over, m being the fewest points whose perfect record
reaches the target (δ^(1/m) >= 1 − ε). From the first candidate tested on, each one with
L >= 1 − ε is certified and the first with L < 1 − ε ends the sequence. The threshold is the
last certified candidate, or NOTHING. Per class: the same on the points predicted as each
class, at δ/K.
"""

from __future__ import annotations

from collections import deque

from scipy import stats

NOTHING = 2.0


def lower_bound(k: int, n: int, delta: float) -> float:
    """One-sided Clopper–Pearson lower bound, from scipy's Beta quantile."""
    return 0.0 if k == 0 else float(stats.beta.ppf(delta, k, n - k + 1))


def fewest_certifying(epsilon: float, delta: float) -> int:
    m = 1
    while lower_bound(m, m, delta) < 1 - epsilon:
        m += 1
    return m


def certified(points, candidates, epsilon, delta, min_count) -> float:
    """points: list of (confidence, correct)."""
    start = max(min_count, fewest_certifying(epsilon, delta))
    chosen = NOTHING
    for t in sorted(candidates, reverse=True):
        above = [ok for c, ok in points if c >= t]
        n, k = len(above), sum(above)
        if n < start:
            continue
        if lower_bound(k, n, delta) >= 1 - epsilon:
            chosen = t
        else:
            break
    return chosen


class RefPrecisionTarget:
    """Window of the last ``window`` valid held-out pairs and the thresholds from it."""

    def __init__(self, num_classes, *, window, candidates, epsilon, delta, min_count, per_class):
        self.k, self.candidates = num_classes, list(candidates)
        self.epsilon, self.delta, self.min_count = epsilon, delta, min_count
        self.per_class = per_class
        self.pairs: deque = deque(maxlen=window)  # (confidence, correct, predicted)
        self.thresh = [NOTHING] * num_classes

    def observe(self, rows):
        """rows: list of (probability vector, label, valid), in flattened position order."""
        for probs, label, valid in rows:
            if not valid:
                continue
            confidence = max(probs)
            predicted = probs.index(confidence)  # lowest index on ties
            self.pairs.append((confidence, predicted == label, predicted))

    def calibrate(self):
        if not self.pairs:
            return
        if not self.per_class:
            points = [(c, ok) for c, ok, _ in self.pairs]
            tau = certified(points, self.candidates, self.epsilon, self.delta, self.min_count)
            self.thresh = [tau] * self.k
            return
        self.thresh = [
            certified(
                [(c, ok) for c, ok, p in self.pairs if p == cls],
                self.candidates,
                self.epsilon,
                self.delta / self.k,
                self.min_count,
            )
            for cls in range(self.k)
        ]
