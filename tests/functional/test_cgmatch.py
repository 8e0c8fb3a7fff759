"""CGMatch against the float64 reference written from the paper (helpers/cgmatch_reference.py)
and against a transcription of the authors' published code, on the same inputs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from helpers.cgmatch_reference import RefCGMatch, counter_gap
from helpers.sequences import numpy_of
from hypothesis import given, settings
from hypothesis import strategies as st

import pseudosel
import pseudosel.functional as F


def _batches(steps, n, k, num_unlabeled, seed, *, distinct=False, keep=0.8):
    """(probs float64, index, valid): sharper every step; repeated indices unless distinct."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in range(steps):
        logits = torch.randn(n, k, generator=gen, dtype=torch.float64) * (1.0 + 0.5 * t)
        if distinct:
            index = torch.randperm(num_unlabeled, generator=gen)[:n]
        else:
            index = torch.randint(0, num_unlabeled, (n,), generator=gen)
        valid = torch.rand(n, generator=gen) < keep
        out.append((logits.softmax(1), index, valid))
    return out


def _start(ref: RefCGMatch, selector) -> None:
    """The reference starts from the module's μ (1/K rounded to float32 there)."""
    mu = numpy_of(selector.mu).copy()
    ref.mu = mu if mu.ndim else mu.item()


def _assert_masks(result, expected, margin, what):
    """Equal wherever the position is not within 1e-9 of its threshold (a float64 tie)."""
    away = margin > 1e-9
    np.testing.assert_array_equal(result[away], expected[away], err_msg=what)
    assert away.mean() > 0.9, what


# --------------------------------------------------------------------------- the paper


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("window", [None, 3])
def test_steps_match_the_paper_reference(per_class, window, device):
    num_unlabeled, k = 15, 4
    selector = pseudosel.CGMatchSelector(
        k, num_unlabeled, momentum=0.7, per_class=per_class, window=window
    ).to(device, torch.float64)
    ref = RefCGMatch(k, 0.7, per_class=per_class, window=window)
    _start(ref, selector)
    batches = _batches(10, 12, k, num_unlabeled, seed=3)
    probs, index, valid = batches[0]
    selector.record(probs.to(device), index.to(device), valid.to(device))  # a warm-up pass
    ref.record(probs.numpy(), index.numpy(), valid.numpy())
    ambiguous_seen = 0
    for t, (probs, index, valid) in enumerate(batches[1:]):
        sel = selector(probs.to(device), index.to(device), valid.to(device))
        ambiguous = selector.ambiguous(sel)
        easy, amb, gaps = ref.step(probs.numpy(), index.numpy(), valid.numpy())
        what = f"step {t}"
        np.testing.assert_allclose(numpy_of(sel.score), gaps, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(numpy_of(selector.mu), ref.mu, rtol=1e-12, err_msg=what)
        np.testing.assert_allclose(float(selector.gap_mu), ref.gap_mu, rtol=1e-12, err_msg=what)
        np.testing.assert_allclose(
            numpy_of(selector.counts), ref.counts(num_unlabeled), rtol=1e-12, atol=1e-12
        )
        conf = probs.max(1).values.numpy()
        mu = ref.mu[probs.argmax(1).numpy()] if per_class else ref.mu
        _assert_masks(numpy_of(sel.mask), easy, np.abs(conf - mu), what)
        gap_margin = np.minimum(np.abs(conf - mu), np.abs(gaps - ref.gap_mu))
        _assert_masks(numpy_of(ambiguous), amb, gap_margin, what)
        assert not (numpy_of(sel.mask) & numpy_of(ambiguous)).any()
        np.testing.assert_array_equal(numpy_of(sel.labels), probs.argmax(1).numpy())
        ambiguous_seen += int(amb.sum())
    assert ambiguous_seen > 0  # the sequence exercises the ambiguous set


def test_functional_stages_equal_the_module():
    num_unlabeled, k = 10, 3
    selector = pseudosel.CGMatchSelector(k, num_unlabeled, momentum=0.9, per_class=True)
    state = F.cgmatch_init(k, num_unlabeled, per_class=True)
    for probs, index, valid in _batches(4, 8, k, num_unlabeled, seed=5):
        probs = probs.float()
        sel = selector(probs, index, valid)
        state = F.cgmatch_update(probs, index, state, valid=valid, momentum=0.9)
        expected = F.cgmatch_select(probs, index, state, valid=valid)
        for a, b in zip(sel, expected, strict=True):
            assert torch.equal(a, b)
        for a, b in zip(selector.state(), state, strict=True):
            assert torch.equal(a, b)
        assert torch.equal(selector.ambiguous(sel), F.ambiguous_positions(sel, state.gap_mu))


def test_count_gap_equals_a_counter_over_the_history():
    gen = torch.Generator().manual_seed(0)
    k = 5
    histories = [torch.randint(0, k, (int(n),), generator=gen).tolist() for n in range(12)]
    histories += [[2, 2, 3, 3], [4], [1, 1, 1]]  # a tie, one prediction, one class only
    counts = torch.zeros(len(histories), k)
    for row, history in enumerate(histories):
        for label in history:
            counts[row, label] += 1
    expected = [counter_gap(history) for history in histories]
    assert F.count_gap(counts).tolist() == expected
    assert F.count_gap(torch.tensor([[3.0]])).tolist() == [3.0]  # K = 1: the count itself


def test_repeated_index_in_one_batch_counts_every_prediction():
    state = F.cgmatch_init(3, 4)
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.2, 0.6]])
    index = torch.tensor([2, 2, 2, 0])
    state = F.cgmatch_update(probs, index, state, momentum=0.0)
    assert state.counts[2].tolist() == [2.0, 1.0, 0.0]
    sel = F.cgmatch_select(probs, index, state)
    assert sel.score.tolist() == [1.0, 1.0, 1.0, 1.0]  # every occurrence reads the final gap
    # first update: g = mean gap over the recorded samples {0, 2}, each counted once
    assert float(state.gap_mu) == 1.0 and state.totals.tolist() == [2.0, 2.0]


def test_window_decays_a_samples_counts_at_each_of_its_predictions():
    state = F.cgmatch_init(2, 2)
    a, b = torch.tensor([[0.9, 0.1]]), torch.tensor([[0.1, 0.9]])
    for probs in (a, a, b):
        state = F.cgmatch_record(probs, torch.tensor([1]), state, window=2)
    # (1 - 1/2)^age: class 0 at ages 2 and 1, class 1 at age 0
    assert state.counts[1].tolist() == [0.25 + 0.5, 1.0]
    assert state.counts[0].tolist() == [0.0, 0.0]  # not visited: not decayed
    both = F.cgmatch_record(torch.cat((a, b)), torch.tensor([0, 0]), state, window=2)
    assert both.counts[0].tolist() == [0.5, 1.0]  # within a batch, in order


def test_first_update_initialises_the_gap_mean_from_every_recorded_sample():
    k, num_unlabeled = 3, 6
    state = F.cgmatch_init(k, num_unlabeled)
    warm = torch.eye(k)[[0, 0, 1, 2]].double() * 0.9 + 0.1 / k
    for _ in range(3):  # three warm-up passes: gaps 3 for samples 0..3
        state = F.cgmatch_record(warm, torch.arange(4), state)
    assert state.totals.tolist() == [12.0, 4.0] and not state.started
    probs = torch.tensor([[0.2, 0.7, 0.1]], dtype=torch.float64)
    state = F.cgmatch_update(probs, torch.tensor([0]), state, momentum=0.9)
    # sample 0 now has counts (3, 1, 0): gap 2; the first g is the mean over all four
    assert float(state.gap_mu) == (2 + 3 + 3 + 3) / 4 and bool(state.started)
    state = F.cgmatch_update(probs, torch.tensor([5]), state, momentum=0.9)
    assert float(state.gap_mu) == pytest.approx(0.9 * 11 / 4 + 0.1 * 1.0)  # then the EMA


@pytest.mark.parametrize("per_class", [False, True])
def test_a_batch_without_valid_positions_leaves_the_means(per_class):
    start = F.cgmatch_init(2, 3, per_class=per_class)
    state = F.cgmatch_update(torch.tensor([[0.9, 0.1]]), torch.tensor([0]), start, momentum=0.5)
    after = F.cgmatch_update(
        torch.tensor([[0.2, 0.8]]),
        torch.tensor([1]),
        state,
        valid=torch.tensor([False]),
        momentum=0.5,
    )
    for a, b in zip(state, after, strict=True):
        assert torch.equal(a, b)


def test_inplace_recording_writes_the_given_counts_and_equals_the_copy():
    """A module's step writes its (N_u, K) buffer in place; the result equals the
    out-of-place update, repeated indices included."""
    gen = torch.Generator().manual_seed(3)
    probs = torch.rand(6, 4, generator=gen).softmax(1)
    index = torch.tensor([0, 5, 0, 2, 5, 0])
    start = F.cgmatch_init(4, 7)
    start = F.cgmatch_update(probs.flip(0), index.flip(0), start, momentum=0.9)
    copied = F.cgmatch_update(probs, index, start, momentum=0.9, window=3)
    counts_before = start.counts.clone()
    own = start._replace(counts=start.counts.clone())
    written = F.cgmatch_update(probs, index, own, momentum=0.9, window=3, inplace=True)
    assert written.counts is own.counts
    assert torch.equal(start.counts, counts_before)  # the out-of-place call left it alone
    for a, b in zip(copied, written, strict=True):
        assert torch.equal(a, b)


def test_clamp_bounds_mu_in_the_comparison_only():
    state = F.cgmatch_init(2, 2)._replace(mu=torch.tensor(0.6))
    probs, index = torch.tensor([[0.8, 0.2], [0.96, 0.04]]), torch.tensor([0, 1])
    assert F.cgmatch_select(probs, index, state).mask.tolist() == [True, True]
    clamped = F.cgmatch_select(probs, index, state, clamp=(0.9, 0.95))
    assert clamped.mask.tolist() == [False, True]


def test_ambiguous_weight_is_the_authors_quadratic_ramp():
    assert F.cgmatch_ambiguous_weight(5, 110, warmup_steps=10) == 0.0
    assert F.cgmatch_ambiguous_weight(110, 110, warmup_steps=10, lambda_h=2.0) == 2.0
    # the authors' nonlinear_weight_tracker: λ_h · ((it − warm) / (total − warm))²
    assert F.cgmatch_ambiguous_weight(35, 110, warmup_steps=10) == (25 / 100) ** 2
    with pytest.raises(ValueError, match="total_steps"):
        F.cgmatch_ambiguous_weight(0, 5, warmup_steps=5)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 9),
    k=st.integers(2, 6),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    keep=st.sampled_from([0.0, 0.5, 1.0]),
    per_class=st.booleans(),
    window=st.sampled_from([None, 1, 2.5]),
    seed=st.integers(0, 2**16),
)
def test_properties(n, k, dtype, keep, per_class, window, seed):
    """Finite state, the count total, disjoint sets, score = the sample's gap."""
    num_unlabeled = 7
    gen = torch.Generator().manual_seed(seed)
    state = F.cgmatch_init(k, num_unlabeled, per_class=per_class)
    recorded = 0
    for _ in range(3):
        probs = (torch.randn(n, k, generator=gen) * 3).softmax(1).to(dtype)
        if seed % 3 == 0:
            probs = torch.full((n, k), 1.0 / k, dtype=dtype)  # ties: class 0
        index = torch.randint(0, num_unlabeled, (n,), generator=gen)
        valid = torch.rand(n, generator=gen) < keep
        state = F.cgmatch_update(probs, index, state, valid=valid, window=window)
        sel = F.cgmatch_select(probs, index, state, valid=valid)
        recorded += int(valid.sum())
        for value in state:
            assert torch.isfinite(value.double()).all()
        amb = F.ambiguous_positions(sel, state.gap_mu)
        assert not (sel.mask & amb).any() and not (amb & ~valid).any()
        assert not sel.mask[~valid].any() and (sel.weight[~valid] == 0).all()
        assert torch.equal(sel.weight, sel.mask.to(sel.weight.dtype))
        gaps = F.count_gap(state.counts[index]).to(sel.score.dtype)
        assert torch.equal(sel.score, torch.where(valid, gaps, 0.0))
        assert ((sel.labels >= 0) & (sel.labels < k)).all()
    if window is None:
        assert float(state.counts.sum()) == recorded
    else:
        assert (state.counts.sum(1) <= window + 1e-5).all()  # a decayed total stays below W
    assert bool(state.started) == bool(state.totals[1] > 0)


# ------------------------------------------------------------------ the authors' code


class AuthorsCGMatch:
    """A transcription of the authors' rule (OverfitFlow/CGMatch, cuda and logging removed,
    their state widened to float64 so the comparison is exact):

    - ``semilearn/algorithms/cgmatch/cgmatch.py``: ``update_bank`` (the N × queue_size
      zero-initialised queue and its pointer), ``compute_count_gap`` (Counter per row),
      ``compute_train_dy_metrics`` (its ``count_gap`` dict only: no ground truth),
      ``save_train_dy_metrics`` (every sample's gap, at the end of the warm-up),
      ``warm_up_evaluate`` (every sample's arg-max into the queue), ``train_step``'s order;
    - ``semilearn/algorithms/cgmatch/utils.py``: ``CGMatchThresholdingHook.update`` and
      ``.masking`` (the variance, unused by the masks, left out).

    ``zero_fill=False`` is the one change for the comparison over many steps: a row's
    Counter reads its filled slots only (the authors' reads all queue_size slots).
    """

    def __init__(self, num_data, queue_size, num_classes, momentum, per_class, zero_fill=True):
        self.queue_size, self.num_classes, self.m = queue_size, num_classes, momentum
        self.per_class, self.zero_fill = per_class, zero_fill
        self.queue_pseudo_labels = torch.zeros((num_data, queue_size), dtype=torch.long)
        self.queue_ptr = torch.zeros(num_data, dtype=torch.long)
        self.filled = torch.zeros(num_data, dtype=torch.long)
        self.count_gap = {}
        if not per_class:
            self.prob_max_mu_t = torch.tensor(1.0 / num_classes, dtype=torch.float64)
        else:
            self.prob_max_mu_t = torch.ones(num_classes, dtype=torch.float64) / num_classes
        self.count_gap_mu_t = None

    def update_bank(self, ulb_idxs, pseudo_labels):
        self.queue_pseudo_labels[ulb_idxs, self.queue_ptr[ulb_idxs]] = pseudo_labels
        self.queue_ptr[ulb_idxs] = (self.queue_ptr[ulb_idxs] + 1) % self.queue_size
        self.filled[ulb_idxs] = (self.filled[ulb_idxs] + 1).clamp(max=self.queue_size)

    def compute_count_gap(self, ulb_idxs=None):
        rows = range(len(self.queue_ptr)) if ulb_idxs is None else ulb_idxs.tolist()
        count_gaps = []
        for i in rows:
            row = self.queue_pseudo_labels[i].tolist()
            if not self.zero_fill:
                row = row[: int(self.filled[i])]
            counter = Counter(row)
            max_value, max_count = counter.most_common(1)[0]
            sorted_counts = sorted(counter.values(), reverse=True)
            second_max_count = sorted_counts[1] if len(sorted_counts) > 1 else 0
            count_gaps.append(max_count - second_max_count)
        return count_gaps

    def compute_train_dy_metrics(self, ulb_idxs=None):
        guids = range(len(self.queue_ptr)) if ulb_idxs is None else ulb_idxs.tolist()
        count_gaps = self.compute_count_gap(ulb_idxs)
        for i, guid in enumerate(guids):
            self.count_gap[guid] = count_gaps[i]
        return count_gaps

    def warm_up_evaluate(self, probs, ulb_idxs):
        self.update_bank(ulb_idxs, probs.argmax(-1))

    def hook_update(self, probs_x_ulb, count_gaps):
        max_probs, max_idx = probs_x_ulb.max(dim=-1)
        if not self.per_class:
            prob_max_mu_t = torch.mean(max_probs)
            self.prob_max_mu_t = self.m * self.prob_max_mu_t + (1 - self.m) * prob_max_mu_t.item()
        else:
            prob_max_mu_t = torch.zeros_like(self.prob_max_mu_t)
            for i in range(self.num_classes):
                prob = max_probs[max_idx == i]
                if len(prob) > 1:
                    prob_max_mu_t[i] = torch.mean(prob)
            self.prob_max_mu_t = self.m * self.prob_max_mu_t + (1 - self.m) * prob_max_mu_t
        if self.count_gap_mu_t is None:
            values = self.count_gap.values()
            self.count_gap_mu_t = torch.tensor(sum(values) / len(values), dtype=torch.float64)
        else:
            count_gap_mu_t = torch.sum(count_gaps) / len(count_gaps)
            self.count_gap_mu_t = self.m * self.count_gap_mu_t + (1 - self.m) * count_gap_mu_t
        return max_probs, max_idx

    def masking(self, probs_x_ulb, idx_ulb):
        gaps = [self.count_gap[g] for g in idx_ulb.tolist()]
        count_gaps = torch.tensor(gaps, dtype=torch.float64)  # theirs: long, mean in float32
        self.hook_update(probs_x_ulb, count_gaps)
        max_probs, max_idx = probs_x_ulb.max(dim=-1)
        mu = self.prob_max_mu_t if not self.per_class else self.prob_max_mu_t[max_idx]
        easy_mask = max_probs.ge(mu).to(max_probs.dtype)
        ambiguous_mask = (count_gaps.ge(self.count_gap_mu_t)) & (max_probs < mu)
        return easy_mask, ambiguous_mask.to(max_probs.dtype)

    def train_step(self, probs, idx_ulb):
        """The selection part of ``train_step`` (probs after their distribution alignment)."""
        pseudo_label = probs.argmax(-1)
        self.update_bank(idx_ulb, pseudo_label)
        self.compute_train_dy_metrics(idx_ulb)
        return self.masking(probs, idx_ulb)


def _warm_up(authors, selector, probs_all):
    """The authors' warm-up: one prediction of every unlabelled sample per warm-up step,
    then every sample's gap (save_train_dy_metrics)."""
    everyone = torch.arange(len(probs_all[0]))
    for probs in probs_all:
        authors.warm_up_evaluate(probs, everyone)
        selector.record(probs, everyone)
    authors.compute_train_dy_metrics()


def _warm_passes(num_unlabeled, k, passes, seed):
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(num_unlabeled, k, generator=gen, dtype=torch.float64) * 2
    return [
        (centre + torch.randn(num_unlabeled, k, generator=gen, dtype=torch.float64)).softmax(1)
        for _ in range(passes)
    ]


@pytest.mark.parametrize("per_class", [False, True])
def test_equals_the_authors_code_without_their_zero_fill(per_class):
    """Many steps, queues that never wrap: with the empty slots not counted, the authors'
    masks, μ and g are ours, step for step."""
    num_unlabeled, k, batch, steps, passes = 24, 4, 8, 9, 3
    authors = AuthorsCGMatch(num_unlabeled, 50, k, 0.8, per_class, zero_fill=False)
    selector = pseudosel.CGMatchSelector(k, num_unlabeled, momentum=0.8, per_class=per_class)
    selector.double()
    authors.prob_max_mu_t = selector.mu.clone()  # 1/K rounded to float32 in both
    _warm_up(authors, selector, _warm_passes(num_unlabeled, k, passes, seed=1))
    ambiguous_seen = 0
    # an epoch-like sampler: distinct samples within a batch (the authors' scatter keeps one
    # of two writes to one sample, pseudosel records both)
    batches = _batches(steps, batch, k, num_unlabeled, 2, distinct=True)
    for t, (probs, index, _) in enumerate(batches):
        easy, ambiguous = authors.train_step(probs, index)
        sel = selector(probs, index)
        assert torch.equal(sel.mask, easy.bool()), f"step {t}"
        assert torch.equal(selector.ambiguous(sel), ambiguous.bool()), f"step {t}"
        torch.testing.assert_close(selector.mu, authors.prob_max_mu_t, rtol=1e-12, atol=0)
        torch.testing.assert_close(selector.gap_mu, authors.count_gap_mu_t, rtol=1e-12, atol=0)
        ambiguous_seen += int(ambiguous.sum())
    assert ambiguous_seen > 0


def test_equals_the_authors_verbatim_code_once_every_queue_is_exactly_full():
    """The authors' code as published (zero-filled queues of 6): after 5 warm-up passes and
    a first training batch holding every sample, each queue holds 6 real predictions and no
    empty slot: the masks and means equal ours."""
    num_unlabeled, k, queue = 16, 3, 6
    for per_class in (False, True):
        authors = AuthorsCGMatch(num_unlabeled, queue, k, 0.0, per_class)
        selector = pseudosel.CGMatchSelector(k, num_unlabeled, momentum=0.0, per_class=per_class)
        selector.double()
        authors.prob_max_mu_t = selector.mu.clone()
        _warm_up(authors, selector, _warm_passes(num_unlabeled, k, queue - 1, seed=4))
        probs = _warm_passes(num_unlabeled, k, 1, seed=5)[0]
        index = torch.randperm(num_unlabeled, generator=torch.Generator().manual_seed(0))
        easy, ambiguous = authors.train_step(probs[index], index)
        sel = selector(probs[index], index)
        assert torch.equal(sel.mask, easy.bool())
        assert torch.equal(selector.ambiguous(sel), ambiguous.bool())
        assert ambiguous.any() and not easy.all()
        torch.testing.assert_close(selector.gap_mu, authors.count_gap_mu_t, rtol=1e-12, atol=0)


def test_the_authors_zero_fill_counts_empty_slots_as_class_zero():
    """Where a queue is not full, the authors' gap is ours with the empty slots added to
    class 0 — an artefact pseudosel does not reproduce — and it changes the masks."""
    num_unlabeled, k, queue = 10, 3, 8
    authors = AuthorsCGMatch(num_unlabeled, queue, k, 0.9, per_class=False)
    selector = pseudosel.CGMatchSelector(k, num_unlabeled, momentum=0.9).double()
    authors.prob_max_mu_t = selector.mu.clone()
    _warm_up(authors, selector, _warm_passes(num_unlabeled, k, 2, seed=7))
    visits = torch.full((num_unlabeled,), 2.0, dtype=torch.float64)
    filled = selector.counts.clone()
    filled[:, 0] += queue - visits
    assert authors.compute_count_gap() == F.count_gap(filled).tolist()
    assert authors.compute_count_gap() != F.count_gap(selector.counts).tolist()
    # a sample predicted twice as class 2 has gap 2 here, 8 - 2 - 2 = 4 there
    probs = torch.tensor([[0.1, 0.2, 0.7]] * num_unlabeled, dtype=torch.float64)
    index = torch.arange(num_unlabeled)
    easy, ambiguous = authors.train_step(probs, index)
    sel = selector(probs, index)
    assert torch.equal(sel.mask, easy.bool())  # μ is the same: the queue plays no part
    assert not torch.equal(sel.score, torch.tensor(authors.compute_count_gap(index)).double())


def test_the_authors_sliding_window_forgets_what_counts_keep():
    """After a queue wraps, the authors count its last queue_size predictions; pseudosel
    (window=None) counts them all, and window=W decays instead (docs/cgmatch.md)."""
    authors = AuthorsCGMatch(1, 4, 3, 0.9, per_class=False)
    state = F.cgmatch_init(3, 1)
    for label in [1, 1, 1, 1, 2, 2, 2, 2]:
        probs = torch.eye(3, dtype=torch.float64)[[label]]
        authors.update_bank(torch.tensor([0]), probs.argmax(-1))
        state = F.cgmatch_record(probs, torch.tensor([0]), state)
    assert authors.compute_count_gap() == [4]  # the last four: class 2 only
    assert F.count_gap(state.counts).tolist() == [0.0]  # four of each
    assert counter_gap([1] * 4 + [2] * 4) == 0.0
