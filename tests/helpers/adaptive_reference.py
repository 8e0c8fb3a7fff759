"""Literal float64 references of the adaptive selectors, one step at a time.

Written from SELECTORS.md and the published USB / U2PL behaviour (update order, quirks),
with numpy, Python loops and collections.Counter — slow and obvious. Inputs are numpy
arrays of valid positions: probs (n, K).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def flex_map(x, mapping):
    if mapping == "convex":
        return x / (2 - x)
    if mapping == "linear":
        return x
    return np.log(x + 1) / math.log(2)


class RefFlexMatch:
    """Per-sample store (num_unlabeled given) or class-wise cumulative counts."""

    def __init__(self, num_classes, num_unlabeled=None, tau=0.95, warmup=True, mapping="convex"):
        self.k, self.n, self.tau, self.warmup, self.mapping = (
            num_classes,
            num_unlabeled,
            tau,
            warmup,
            mapping,
        )
        self.selected_label = [-1] * num_unlabeled if num_unlabeled else None
        self.class_counts = Counter({-1: 0})  # class-wise form
        self.classwise_acc = np.zeros(num_classes)

    def step(self, probs, index=None):
        max_probs, max_idx = probs.max(1), probs.argmax(1)
        thresholds = self.tau * flex_map(self.classwise_acc, self.mapping)
        mask = max_probs >= thresholds[max_idx]
        select = max_probs >= self.tau  # the FIXED tau decides what is recorded
        if self.selected_label is not None:
            for i in range(len(probs)):
                if select[i]:
                    self.selected_label[index[i]] = int(max_idx[i])
            counter = Counter(self.selected_label)
            total = self.n
        else:
            for i in range(len(probs)):
                self.class_counts[int(max_idx[i]) if select[i] else -1] += 1
            counter = self.class_counts
            total = sum(counter.values())
        if max(counter.values()) < total:
            if self.warmup:
                denominator = max(counter.values())
            else:
                denominator = max(v for key, v in counter.items() if key != -1)
            for c in range(self.k):
                self.classwise_acc[c] = counter[c] / denominator
        return mask

    def counts(self):
        counter = Counter(self.selected_label) if self.selected_label else self.class_counts
        return [counter[c] for c in range(self.k)] + [counter[-1]]


class RefFreeMatch:
    def __init__(self, num_classes, momentum=0.999, use_quantile=False, clip_thresh=False):
        self.m, self.use_quantile, self.clip = momentum, use_quantile, clip_thresh
        self.p_model = np.ones(num_classes) / num_classes
        self.label_hist = np.ones(num_classes) / num_classes
        self.time_p = self.p_model.mean()

    def step(self, probs):
        m = self.m
        max_probs, max_idx = probs.max(1), probs.argmax(1)
        batch = np.quantile(max_probs, 0.8) if self.use_quantile else max_probs.mean()
        self.time_p = self.time_p * m + (1 - m) * batch
        if self.clip:
            self.time_p = np.clip(self.time_p, 0.0, 0.95)
        self.p_model = self.p_model * m + (1 - m) * probs.mean(0)
        hist = np.bincount(max_idx, minlength=len(self.p_model)).astype(float)
        self.label_hist = self.label_hist * m + (1 - m) * hist / hist.sum()
        mod = self.p_model / self.p_model.max()
        return max_probs >= self.time_p * mod[max_idx]


class RefSoftMatch:
    def __init__(self, num_classes, momentum=0.999, n_sigma=2.0, per_class=False):
        self.k, self.m, self.n_sigma, self.per_class = num_classes, momentum, n_sigma, per_class
        shape = (num_classes,) if per_class else ()
        self.mu = np.full(shape, 1.0 / num_classes)
        self.var = np.ones(shape)

    def step(self, probs):
        m = self.m
        max_probs, max_idx = probs.max(1), probs.argmax(1)
        if self.per_class:
            mu_t, var_t = np.zeros(self.k), np.ones(self.k)
            for c in range(self.k):
                values = max_probs[max_idx == c]
                if len(values) > 1:
                    mu_t[c], var_t[c] = values.mean(), values.var(ddof=1)
            self.mu = m * self.mu + (1 - m) * mu_t
            self.var = m * self.var + (1 - m) * var_t
            mu, var = self.mu[max_idx], self.var[max_idx]
        else:
            if len(max_probs) > 0:
                self.mu = m * self.mu + (1 - m) * max_probs.mean()
            if len(max_probs) > 1:  # USB would produce NaN here; documented deviation
                self.var = m * self.var + (1 - m) * max_probs.var(ddof=1)
            mu, var = self.mu, self.var
        below = np.minimum(max_probs - mu, 0.0)
        return np.exp(-(below**2) / (2 * var / self.n_sigma**2))


def ref_adamatch(probs, probs_labeled, tau=0.95):
    cutoff = probs_labeled.max(1).mean() * tau
    return probs.max(1) >= cutoff


class RefDash:
    """USB's DashThresholdingHook: soft targets softmax(logits / T) until ρ = ρ_min, then hard.

    ``step`` returns (mask, loss) over the rows; logits are log p (softmax(log p) = p).
    """

    def __init__(
        self, rho_init, update_every, gamma=1.27, c=1.0001, rho_min=0.05, T=0.5, hard_labels=False
    ):
        self.rho_init, self.every, self.gamma, self.c, self.rho_min = (
            rho_init,
            update_every,
            gamma,
            c,
            rho_min,
        )
        self.T, self.always_hard = T, hard_labels
        self.it, self.count, self.rho = 0, 0, None
        self.use_hard_label = False

    def step(self, probs):
        if self.it % self.every == 0:
            self.rho = max(self.c * self.gamma ** (-self.count) * self.rho_init, self.rho_min)
            self.count += 1
        self.it += 1
        self.use_hard_label = self.always_hard or self.rho == self.rho_min
        loss = np.array([self.loss(row) for row in probs])
        return loss <= self.rho, loss

    def loss(self, p):
        """Cross-entropy of p against argmax p (hard) or softmax(log p / T) (soft)."""
        k = len(p)
        if self.use_hard_label:
            top = max(range(k), key=lambda j: p[j])
            return -math.log(p[top])
        # logits / T with logits = log p; a zero probability has logit −inf and weight 0
        scaled = [math.log(p[j]) / self.T if p[j] > 0 else -math.inf for j in range(k)]
        top = max(scaled)
        exps = [math.exp(v - top) for v in scaled]
        q = [e / sum(exps) for e in exps]
        return -sum(q[j] * math.log(p[j]) for j in range(k) if q[j] > 0)


def ref_entropy(probs):
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(probs), 0.0)
    return -terms.sum(1)


class RefU2PL:
    def __init__(self, total_steps, alpha0=0.2):
        self.total, self.alpha0, self.t = total_steps, alpha0, 0

    def step(self, probs):
        alpha_t = 100 * self.alpha0 * (1 - min(self.t, self.total) / self.total)
        ent = ref_entropy(probs)
        thresh = np.percentile(ent, 100 - alpha_t)
        self.t += 1
        return ent < thresh  # reliable; unreliable = entropy >= thresh


class RefDistAlign:
    def __init__(self, num_classes, momentum=0.999, target_model=False, p_target=None):
        self.m = momentum
        self.target_model = target_model
        self.p_target = np.ones(num_classes) / num_classes if p_target is None else p_target
        self.p_model = None

    def step(self, probs, probs_labeled=None):
        if self.p_model is None:
            self.p_model = probs.mean(0)
        else:
            self.p_model = self.p_model * self.m + probs.mean(0) * (1 - self.m)
        if self.target_model:
            self.p_target = self.p_target * self.m + probs_labeled.mean(0) * (1 - self.m)
        aligned = probs * (self.p_target + 1e-6) / (self.p_model + 1e-6)
        return aligned / aligned.sum(1, keepdims=True)


class RefCorrMatch:
    """CorrMatch's ThreshController (util/thresh_helper.py): τ is updated with the batch
    (mean over predicted classes of the max confidence in that class), then the mask."""

    def __init__(self, momentum=0.999, thresh_init=0.85):
        self.m, self.thresh = momentum, thresh_init

    def step(self, probs):
        conf, pred = probs.max(1), probs.argmax(1)
        total, present = 0.0, 0
        for c in sorted(set(pred.tolist())):
            total += max(conf[i] for i in range(len(conf)) if pred[i] == c)
            present += 1
        if present > 0:
            self.thresh = self.m * self.thresh + (1 - self.m) * (total / present)
        return conf >= self.thresh


class RefDistAlignQueue:
    """USB's DistAlignQueueHook: write the batch mean at the pointer, then align with the
    means of the whole queues (zero rows included)."""

    def __init__(self, num_classes, queue_length=128, target="uniform", p_target=None):
        self.L = queue_length
        self.p_model = np.zeros((queue_length, num_classes))
        self.p_model_ptr = 0
        self.learn = target == "model"
        if target == "uniform":
            self.p_target = np.ones((queue_length, num_classes)) / num_classes
        elif target == "model":
            self.p_target = np.zeros((queue_length, num_classes))
        else:
            self.p_target = np.tile(p_target, (queue_length, 1))
        self.p_target_ptr = 0

    def step(self, probs, probs_labeled=None):
        self.p_model[self.p_model_ptr] = probs.mean(0)
        self.p_model_ptr = (self.p_model_ptr + 1) % self.L
        if self.learn:
            self.p_target[self.p_target_ptr] = probs_labeled.mean(0)
            self.p_target_ptr = (self.p_target_ptr + 1) % self.L
        aligned = probs * (self.p_target.mean(0) + 1e-6) / (self.p_model.mean(0) + 1e-6)
        return aligned / aligned.sum(1, keepdims=True)


class RefAdsh:
    """USB's AdaptiveThresholdingHook (imb_algorithms/adsh/utils.py): per-step masking with
    exp(−s), per-epoch recomputation from per-class sorted confidences, class 0 calibrated."""

    def __init__(self, num_classes, tau_1=0.95, calibration_class=0):
        self.k, self.tau_1, self.calib = num_classes, tau_1, calibration_class
        self.s = np.full(num_classes, tau_1)

    def mask(self, probs):
        return probs.max(1) >= np.exp(-self.s[probs.argmax(1)])

    def epoch_end(self, probs):
        conf_all, pred_all = probs.max(1), probs.argmax(1)
        calib = self.calib
        if calib is None:
            calib = int(np.argmax(np.bincount(pred_all, minlength=self.k)))
        C = [sorted(conf_all[pred_all == y].tolist(), reverse=True) for y in range(self.k)]
        rho = 1.0
        for i in range(len(C[calib])):
            if C[calib][i] < self.tau_1:
                break
            rho = i / len(C[calib])
        for k in range(self.k):
            if len(C[k]) != 0:
                self.s[k] = -math.log(C[k][int(len(C[k]) * rho) - 1])
