"""Consistent-Teacher's GMM threshold, its per-image pre-filter and its score queues: against
scikit-learn's ``GaussianMixture`` called exactly as the published code calls it, and
against the code's own loops (``ssod/models/consistent_teacher.py``), on the same inputs."""

from __future__ import annotations

import pytest
import torch
from helpers.consistent_teacher import (
    published_gmm_policy,
    published_prefilter,
    published_queue_update,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import pseudosel.functional as F
from pseudosel.kernels import formulas_only


def reference_thresholds(rows: torch.Tensor, valid: torch.Tensor, fallback=0.0, policy="high"):
    return torch.tensor(
        [published_gmm_policy(r[v], fallback, policy) for r, v in zip(rows, valid, strict=True)]
    )


def within_one_point(got: torch.Tensor, want: torch.Tensor, rows, valid) -> torch.Tensor:
    """Per row: the two thresholds are equal or neighbours among the row's sorted scores."""
    near = []
    for g, w, r, v in zip(got.tolist(), want.tolist(), rows, valid, strict=True):
        values = sorted(set(r[v].tolist()) | {g, w})
        near.append(abs(values.index(g) - values.index(w)) <= 1)
    return torch.tensor(near)


def random_rows(kinds: list[str], length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Score rows of each kind, float32 in (0, 1], valid where a score is held."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(n, low=0.0, high=1.0):
        return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)

    rows, valid = [], []
    for kind in kinds:
        n = length
        if kind == "bimodal":
            share = int(length * float(uniform(1, 0.2, 0.8)))
            row = torch.cat([uniform(share, 0.02, 0.35), uniform(length - share, 0.55, 1.0)])
        elif kind == "uniform":
            row = uniform(length)
        elif kind == "unimodal":
            row = (0.5 + 0.1 * torch.randn(length, generator=gen, dtype=torch.float64)).clamp(
                0.01, 1.0
            )
        elif kind == "skewed":
            row = uniform(length) ** 3 + 1e-3
        elif kind == "equal":
            row = torch.full((length,), float(uniform(1, 0.05, 1.0)))
        elif kind == "two_values":
            row = torch.where(uniform(length) < 0.5, 0.3, 0.8)
        elif kind == "few":
            n = int(torch.randint(0, 4, (1,), generator=gen))
            row = uniform(length)
        elif kind == "empty":
            n = 0
            row = uniform(length)
        else:
            raise ValueError(kind)
        order = torch.randperm(length, generator=gen)
        rows.append(row[order].to(torch.float32))
        valid.append(torch.arange(length) < n)
    return torch.stack(rows), torch.stack(valid)


KINDS = ["bimodal", "uniform", "unimodal", "skewed", "equal", "two_values", "few", "empty"]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("policy", ["high", "middle"])
def test_equal_to_scikit_learn_on_at_least_99_percent_of_queues(policy, seed):
    # Consistent-Teacher's size: 80 classes x 100 scores, five batches of every kind
    rows, valid = random_rows(KINDS * 50, 100, seed=seed)
    got = F.gmm_thresholds(rows, valid, policy=policy)
    want = reference_thresholds(rows, valid, policy=policy)
    same = got == want
    assert same.float().mean() >= 0.99, f"{int((~same).sum())} of {len(same)} differ"
    assert within_one_point(got, want, rows, valid).all()


@settings(max_examples=40)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=6),
    length=st.integers(1, 120),
    seed=st.integers(0, 2**16),
    policy=st.sampled_from(["high", "middle"]),
    fallback=st.sampled_from([0.0, 0.5, 0.9]),
)
def test_every_row_within_one_point_of_scikit_learn(kinds, length, seed, policy, fallback):
    rows, valid = random_rows(kinds, length, seed)
    got = F.gmm_thresholds(rows, valid, policy=policy, fallback=fallback)
    want = reference_thresholds(rows, valid, fallback, policy)
    assert got.dtype == rows.dtype and torch.isfinite(got).all()
    assert within_one_point(got, want, rows, valid).all(), (got, want)
    # a fallback is never a neighbour of a fitted threshold: both fall back, or neither
    assert torch.equal(got == fallback, want == fallback), (got, want)
    few = valid.sum(1) < 4
    assert (got[few] == fallback).all()


def test_empty_rows_and_no_rows():
    assert F.gmm_thresholds(torch.zeros(3, 0), fallback=0.2).tolist() == pytest.approx([0.2] * 3)
    assert F.gmm_thresholds(torch.zeros(0, 5)).shape == (0,)


def test_rows_that_cannot_be_split_fall_back():
    rows = torch.tensor([[0.4] * 10, [0.2, 0.7, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    got = F.gmm_thresholds(rows, rows > 0, fallback=0.25)
    assert got.tolist() == [0.25, 0.25]  # all equal: no high point; three scores: too few


def test_invalid_entries_do_not_count_even_when_not_finite():
    rows, valid = random_rows(["bimodal", "uniform", "few"], 50, seed=3)
    poisoned = torch.where(valid, rows, float("nan"))
    torch.testing.assert_close(
        F.gmm_thresholds(poisoned, valid), F.gmm_thresholds(rows, valid), rtol=0, atol=0
    )


def test_the_early_stop_on_the_cpu_changes_nothing():
    rows, valid = random_rows(KINDS * 3, 100, seed=5)
    early = F.gmm_thresholds(rows, valid)
    # the device path: every row frozen once stopped, all max_iter steps run
    with formulas_only():
        assert torch.equal(F.gmm_thresholds(rows, valid), early)


def test_half_precision_scores():
    rows, valid = random_rows(["bimodal"] * 4, 60, seed=7)
    for dtype in (torch.float16, torch.bfloat16):
        half = rows.to(dtype)
        got = F.gmm_thresholds(half, valid)
        assert got.dtype == dtype
        want = reference_thresholds(half.float(), valid)
        assert torch.equal(got.float(), want)


# ------------------------------------------------------------ the per-image pre-filter


@settings(max_examples=60)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=5),
    ratio=st.sampled_from([0.5, 1.0, 1.5]),
    seed=st.integers(0, 2**16),
)
def test_total_score_cut_is_the_published_rule(counts, ratio, seed):
    gen = torch.Generator().manual_seed(seed)
    width = max(counts)
    scores = torch.rand(len(counts), width, generator=gen)
    valid = torch.arange(width) < torch.tensor(counts).unsqueeze(1)
    cut = F.total_score_cut(torch.where(valid, scores, float("nan")), valid, ratio=ratio)
    want = [published_prefilter(s[v], ratio) for s, v in zip(scores, valid, strict=True)]
    assert cut.tolist() == pytest.approx(want, abs=0, rel=0)
    kept = valid & (scores > cut.unsqueeze(1))
    for row, count in zip(kept, counts, strict=True):
        assert 1 <= int(row.sum()) <= max(count, 1) or count == 0


def test_total_score_cut_without_boxes():
    assert F.total_score_cut(torch.zeros(3, 0)).tolist() == [1.0, 1.0, 1.0]


# ------------------------------------------------------------ the score queues


@settings(max_examples=60)
@given(
    boxes=st.integers(0, 60),
    classes=st.integers(1, 6),
    length=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_score_queue_update_is_the_published_loop(boxes, classes, length, seed):
    gen = torch.Generator().manual_seed(seed)
    queue = torch.rand(classes, length, generator=gen) * (
        torch.rand(classes, length, generator=gen) < 0.7
    )
    scores = torch.rand(boxes, generator=gen)
    labels = torch.randint(0, classes, (boxes,), generator=gen)
    valid = torch.rand(boxes, generator=gen) < 0.8
    got = F.score_queue_update(queue, scores, torch.where(valid, labels, -7), valid)
    assert torch.equal(got, published_queue_update(queue, scores[valid], labels[valid]))


def test_score_queue_update_keeps_batch_order_across_images():
    queue = torch.zeros(2, 4)
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.6, 0.7, 0.2]])
    labels = torch.tensor([[1, 0, 1], [1, 1, 0]])
    got = F.score_queue_update(queue, scores, labels)
    assert torch.equal(got, torch.tensor([[0.1, 0.2, 0, 0], [0.9, 0.5, 0.6, 0.7]]))


# ------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: F.gmm_thresholds(torch.rand(3)), TypeError, r"\(K, Q\).*shape \(3,\)"),
        (lambda: F.gmm_thresholds(torch.ones(2, 3, dtype=torch.long)), TypeError, "floating"),
        (lambda: F.gmm_thresholds(torch.rand(2, 3), torch.ones(2, 3)), TypeError,
         "valid must be a bool"),
        (lambda: F.gmm_thresholds(torch.rand(2, 3), torch.ones(3, 2, dtype=torch.bool)), ValueError,
         r"valid must have the shape of scores \(2, 3\), got \(3, 2\)"),
        (lambda: F.gmm_thresholds(torch.rand(2, 3), policy="low"), ValueError,
         "policy must be one of 'high', 'middle', got 'low'"),
        (lambda: F.gmm_thresholds(torch.rand(2, 3), max_iter=-1), ValueError,
         "max_iter must be an integer >= 0, got -1"),
        (lambda: F.gmm_thresholds(torch.rand(2, 3), reg_covar=0), ValueError,
         r"reg_covar must be in \(0, inf\), got 0"),
        (lambda: F.total_score_cut(torch.rand(4)), TypeError, r"\(N, M\) tensor of box scores"),
        (lambda: F.total_score_cut(torch.rand(2, 4), ratio=-1), ValueError, "ratio must be in"),
        (lambda: F.score_queue_update(torch.zeros(2, 3), torch.rand(4), torch.zeros(4)), TypeError,
         "labels must be a long tensor, got torch.float32"),
        (lambda: F.score_queue_update(torch.zeros(2, 3), torch.rand(4),
                                      torch.zeros(5, dtype=torch.long)), ValueError,
         r"one shape, got \(4,\), \(5,\)"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_compiled_fullgraph_equals_eager():
    rows, valid = random_rows(KINDS * 2, 40, seed=11)
    fitted = torch.compile(F.gmm_thresholds, fullgraph=True)
    with formulas_only():  # eager runs every step too: the compiled path never stops early
        eager = F.gmm_thresholds(rows, valid, policy="middle")
    assert torch.equal(fitted(rows, valid, policy="middle"), eager)
