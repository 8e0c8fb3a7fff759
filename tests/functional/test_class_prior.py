"""Class-prior-matched thresholds (DARS, LabelMatch): the vectorised cuts against a float64
reference written from the paper, against transcriptions of the two published rules on the
same inputs, the selected proportions against the prior, and the argument errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.class_prior_reference import reference_cuts, rows
from helpers.probability_maps import classifier_outputs, smooth_maps
from hypothesis import given, settings
from hypothesis import strategies as st

import pseudosel.functional as F
from pseudosel.functional.class_prior import class_cuts

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


@st.composite
def batches(draw):
    """(probs, valid, prior, kept_share): K in 2..10, imbalanced arg-max classes (some never
    predicted), a validity mask (possibly all ignored), tied or continuous confidences."""
    k = draw(st.integers(2, 10))
    n = draw(st.integers(0, 40))
    spatial = draw(st.sampled_from([(), (3,), (2, 3)]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    # imbalanced: class c drawn with weight 2^-c, and up to half the classes never drawn
    weights = torch.tensor([2.0**-c for c in range(k)])
    weights[: draw(st.integers(0, k // 2))] = 0.0 if k > 2 else weights[0]
    weights = weights.flip(0) if draw(st.booleans()) else weights
    positions = n * math.prod(spatial)
    labels = torch.multinomial(weights, max(positions, 1), replacement=True, generator=gen)
    labels = labels[:positions]
    if draw(st.booleans()):  # ties: five confidence levels
        level = torch.randint(0, 5, (positions,), generator=gen)
        confidence = 0.5 + 0.1 * level.double()
    else:
        confidence = 1.0 / k + (1 - 1.0 / k) * torch.rand(positions, generator=gen).double()
        confidence = confidence.clamp(min=1.0 / k + 1e-3)
    flat = ((1 - confidence) / (k - 1)).unsqueeze(1).repeat(1, k)
    flat[torch.arange(positions), labels] = confidence
    probs = flat.reshape(n, *spatial, k).movedim(-1, 1).contiguous()
    keep = draw(st.sampled_from([0.0, 0.5, 1.0]))
    valid = torch.rand(n, *spatial, generator=gen) < keep
    prior = torch.rand(k, generator=gen).double() ** 3
    prior[draw(st.integers(0, k - 1))] = 0.0 if draw(st.booleans()) else prior[0]
    prior = (prior + 1e-12) / (prior + 1e-12).sum()
    share = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    return probs, valid, prior, share


def _reference(probs, valid, prior, share, dtype, **options):
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    confidence, labels, flags = rows(probs.to(dtype).to(compute).numpy(), valid.numpy())
    normalised = F.check_prior(prior, probs.shape[1]).tolist()
    np_dtype = np.dtype(np.float64 if compute == torch.float64 else np.float32)
    return reference_cuts(confidence, labels, flags, normalised, share, dtype=np_dtype, **options)


@settings(max_examples=200, deadline=None)
@given(batches(), st.sampled_from(DTYPES), st.sampled_from([0.0, 0.05, 0.65]))
def test_thresholds_equal_the_reference(batch, dtype, min_threshold):
    probs, valid, prior, share = batch
    thresholds = F.class_prior_thresholds(
        probs.to(dtype), prior, share, valid=valid, tau=0.8, min_threshold=min_threshold
    )
    expected, _ = _reference(
        probs, valid, prior, share, dtype, tau=0.8, min_threshold=min_threshold
    )
    assert thresholds.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert thresholds.double().tolist() == expected  # picked values: exactly equal


@settings(max_examples=100, deadline=None)
@given(batches(), st.sampled_from(DTYPES))
def test_selection_keeps_the_reference_counts(batch, dtype):
    """The mask is 'confidence >= cut of its class': k_c positions per class, and more only
    where positions tie with the cut."""
    probs, valid, prior, share = batch
    sel = F.class_prior(probs.to(dtype), prior, share, valid=valid)
    expected, kept = _reference(probs, valid, prior, share, dtype)
    confidence, labels, flags = rows(probs.to(dtype).to(sel.score.dtype).numpy(), valid.numpy())
    mask = sel.mask.reshape(-1).tolist()
    for c, cut in enumerate(expected):
        chosen = [m for m, y in zip(mask, labels, strict=True) if y == c and m]
        strictly_above = sum(
            1 for s, y, v in zip(confidence, labels, flags, strict=True) if v and y == c and s > cut
        )
        assert strictly_above <= kept[c] <= len(chosen) or kept[c] == len(chosen) == 0
        for s, y, v, m in zip(confidence, labels, flags, mask, strict=True):
            if y == c:
                assert m == (v and s >= cut and prior[c] > 0)
    assert not (sel.mask & ~sel.valid).any()
    assert torch.isfinite(sel.score).all()


def test_classes_without_positions_and_all_ignored():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    # class 2 is never predicted; every position ignored -> every class keeps nothing
    none = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    cut = F.class_prior_thresholds(probs, kept_share=1.0, valid=torch.zeros(3, dtype=torch.bool))
    assert torch.equal(cut, none.expand(3))
    cut = F.class_prior_thresholds(probs, [0.5, 0.25, 0.25], 1.0)
    # s·n·π = 1.5, 0.75, 0.75 -> k = 1, 0, 0
    assert torch.equal(cut, torch.stack((torch.tensor(0.7), none, none)))
    empty = F.class_prior(torch.zeros(0, 3, 4, 4), kept_share=0.5)
    assert empty.mask.shape == (0, 4, 4)


def test_ties_at_the_cut_are_all_kept():
    probs = torch.tensor([[0.8, 0.2]] * 4 + [[0.9, 0.1]])
    sel = F.class_prior(probs, [1.0, 0.0], kept_share=0.4)  # k_0 = 2: 0.9, then 0.8 x 4
    assert F.class_prior_thresholds(probs, [1.0, 0.0], 0.4)[0] == pytest.approx(0.8)
    assert sel.mask.all()


def test_kept_share_none_uses_the_global_threshold():
    """kept_share=None: as many pseudo-labels as the global threshold tau keeps."""
    probs = classifier_outputs(400, 6, sharpness=3.0, seed=4, dtype=torch.float64)
    for tau in (0.5, 0.8, 0.95):
        by_tau = int((probs.amax(1) >= tau).sum())
        sel = F.class_prior(probs, tau=tau)  # uniform prior
        share = by_tau / 400
        cut = F.class_prior_thresholds(probs, None, share)
        assert torch.equal(cut, F.class_prior_thresholds(probs, tau=tau))
        assert int(sel.mask.sum()) <= by_tau


def test_selected_proportions_follow_the_prior():
    """A synthetic long-tailed case: the model over-predicts the head classes and is most
    confident on them. A global threshold keeps mostly head classes; the class-prior cuts
    keep ⌊s·n·π_c⌋ per class, so the kept proportions equal the prior to within 1/(s·n)."""
    gen = torch.Generator().manual_seed(0)
    k, n = 5, 4000
    prior = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], dtype=torch.float64)
    # predictions biased to the head: the head class is predicted ~60% of the time
    predicted = torch.multinomial(torch.tensor([0.6, 0.2, 0.1, 0.06, 0.04]), n, True, generator=gen)
    # and the head is more confident
    confidence = 0.35 + 0.6 * torch.rand(n, generator=gen).double() ** (1.0 + predicted.double())
    probs = ((1 - confidence) / (k - 1)).unsqueeze(1).repeat(1, k)
    probs[torch.arange(n), predicted] = confidence
    share = 0.3
    sel = F.class_prior(probs, prior, share)
    kept = torch.bincount(sel.labels[sel.mask], minlength=k)
    expected = (share * n * prior).floor().long()
    assert torch.equal(kept, expected)  # continuous confidences: no ties
    proportions = kept.double() / kept.sum()
    assert (proportions - prior).abs().max() < 1.0 / (share * n)
    # the same number kept by one global cut is far from the prior (the test can fail)
    cut = probs.amax(1).sort(descending=True).values[int(kept.sum()) - 1]
    global_kept = torch.bincount(predicted[probs.amax(1) >= cut], minlength=k).double()
    assert (global_kept / global_kept.sum() - prior).abs().max() > 0.15


def test_dense_layout_with_ignored_positions_equals_flattened_rows():
    probs = smooth_maps(2, 6, 9, 7, sharpness=3.0, seed=2, dtype=torch.float64)
    valid = torch.rand(2, 9, 7, generator=torch.Generator().manual_seed(1)) < 0.7
    prior = torch.tensor([0.3, 0.2, 0.2, 0.1, 0.1, 0.1], dtype=torch.float64)
    dense = F.class_prior(probs, prior, 0.4, valid=valid)
    flat = F.class_prior(probs.movedim(1, -1).reshape(-1, 6), prior, 0.4, valid=valid.reshape(-1))
    assert torch.equal(dense.mask.reshape(-1), flat.mask)
    assert torch.equal(dense.score.reshape(-1), flat.score)


# --- the published rules, transcribed (CUDA and file I/O removed) --------------------------


def dars_thresholds(scores_per_class, class_ratio_prior_list, valid_ratio, all_pixel_num,
                    global_num, labeling_ratio):  # fmt: skip
    """DARS, tool/gen_pseudo_label_utils.py, get_threshold_and_sampling_ratio (mode 'DARS'):
    the loop over classes, the per-class confidence banks given as lists (they load them
    from class_<j>.npy). Returns the thresholds and the random-sampling ratios sp."""
    thres, sp = [], []
    for j in range(len(class_ratio_prior_list)):
        class_j_num = int(
            float(labeling_ratio)
            * float(class_ratio_prior_list[j])
            / valid_ratio
            * all_pixel_num
            * int(global_num)
        )
        bank = np.array(scores_per_class[j])
        bank.sort()
        bank = bank[::-1]
        if class_j_num > len(bank):
            thres.append(bank[len(bank) - 1].item())
        else:
            thres.append(bank[class_j_num - 1].item())
        remain = bank >= thres[j]
        sp.append(min(float(class_j_num) / float(remain.sum()), 1.0))
    return thres, sp


def labelmatch_thresholds(score_list, potential_positive, percent):
    """LabelMatch, hikvision-research/SSOD mmdet_extension/core/hooks/labelmatch_hooks.py,
    LabelMatchEvalHook.eval_score_thr (the reliable cut cls_thr; detections kept with
    score >= cls_thr, models/detectors/labelmatch.py)."""
    score_list = [np.array(c) for c in score_list]
    score_list = [np.zeros(1) if len(c) == 0 else np.sort(c)[::-1] for c in score_list]
    cls_thr = [0] * len(score_list)
    for i, score in enumerate(score_list):
        cls_thr[i] = max(0.05, score[min(int(potential_positive[i] * percent), len(score) - 1)])
    return cls_thr


def _per_class(probs):
    confidence, labels = probs.amax(1).reshape(-1), probs.argmax(1).reshape(-1)
    return [confidence[labels == c].tolist() for c in range(probs.shape[1])]


@pytest.mark.parametrize("labeling_ratio", [0.2, 0.4, 0.65])
@pytest.mark.parametrize("layout", ["dense", "classification"])
def test_equals_dars(labeling_ratio, layout):
    """DARS on the same confidences: the prior as percentages of all pixels with the valid
    share (their Cityscapes numbers' form), N = every pixel of the unlabelled set."""
    probs = (
        smooth_maps(3, 5, 20, 16, sharpness=3.0, seed=3, dtype=torch.float64)
        if layout == "dense"
        else classifier_outputs(700, 5, sharpness=2.0, seed=3, dtype=torch.float64)
    )
    percentages = [32.07, 20.7, 13.4993, 3.6445, 18.0]  # of all pixels
    valid_ratio = sum(percentages)  # the share of pixels with a label
    positions = probs.numel() // probs.shape[1]
    images, pixels = (probs.shape[0], positions // probs.shape[0])
    banks = _per_class(probs)
    thres, sp = dars_thresholds(banks, percentages, valid_ratio, pixels, images, labeling_ratio)
    prior = torch.tensor(percentages, dtype=torch.float64) / valid_ratio
    ours = F.class_prior_thresholds(probs, prior, labeling_ratio)
    # DARS's k_c >= 1 and every class predicted here: the same cuts
    assert ours.tolist() == thres
    # continuous confidences: DARS's random sampling drops nothing (sp = 1 where the class
    # has enough positions) and the masks agree
    sel = F.class_prior(probs, prior, labeling_ratio)
    for c, bank in enumerate(banks):
        target = math.floor(labeling_ratio * positions * float(prior[c]))
        assert sp[c] == pytest.approx(1.0) or target > len(bank)
        assert int((sel.mask & (sel.labels == c)).sum()) == min(target, len(bank))


def test_where_dars_differs():
    """A class whose count rounds to 0: DARS indexes bank[-1] and keeps every position of
    the class (and fails on a class with no prediction); here the class keeps nothing."""
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]], dtype=torch.float64)
    thres, _ = dars_thresholds(_per_class(probs), [99.0, 1.0], 100.0, 4, 1, 0.5)
    assert thres == [0.9, 0.6]  # class 1: int(0.5·0.01·4) = 0 -> the smallest, 0.6
    ours = F.class_prior_thresholds(probs, [0.99, 0.01], 0.5)
    assert ours[0] == 0.9 and ours[1] > 1.0  # keeps nothing of class 1
    with pytest.raises(IndexError):  # no prediction of class 1
        dars_thresholds([[0.9, 0.8], []], [50.0, 50.0], 100.0, 2, 1, 0.5)
    assert F.class_prior_thresholds(probs[:2], [0.5, 0.5], 0.5)[1] > 1.0


@pytest.mark.parametrize("percent", [0.2, 0.4])
def test_labelmatch_is_the_next_rank_with_a_floor(percent):
    """LabelMatch on the same scores. Its count P_c = images · boxes per image · π_c is an
    expected object count, and its 0-based index int(P_c · percent) makes the cut the
    (k_c + 1)-th largest: with s · n · π'_c = int(P_c · percent) + 1.5 and
    min_threshold=0.05 our cuts equal its cuts (also where the index passes the class's
    end: both take the smallest score)."""
    probs = classifier_outputs(900, 6, sharpness=2.5, seed=7, dtype=torch.float64)
    cls_ratio_gt = np.array([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])
    images, boxes_per_image = 120, 4.2
    potential_positive = images * boxes_per_image * cls_ratio_gt
    banks = _per_class(probs)
    cls_thr = labelmatch_thresholds(banks, potential_positive, percent)
    index = [int(p * percent) for p in potential_positive]
    counts = torch.tensor([i + 1.5 for i in index], dtype=torch.float64)
    share = float(counts.sum()) / probs.shape[0]
    ours = F.class_prior_thresholds(probs, counts / counts.sum(), share, min_threshold=0.05)
    inside = [index[c] + 1 <= len(bank) for c, bank in enumerate(banks)]
    assert 2 <= sum(inside) < len(banks)  # both cases occur
    assert ours.tolist() == cls_thr


def test_class_cuts_on_gathered_rows_match_the_public_function():
    probs = classifier_outputs(50, 4, seed=1, dtype=torch.float64)
    valid = torch.arange(50) % 7 != 0
    confidence, labels = probs.max(1)
    groups = torch.where(valid, labels, 4)
    prior = F.check_prior([0.4, 0.3, 0.2, 0.1], 4)
    cuts, kept = class_cuts(confidence, groups, prior, 0.5)
    assert torch.equal(cuts, F.class_prior_thresholds(probs, prior, 0.5, valid=valid))
    assert kept.tolist() == [
        min(math.floor(0.5 * 43 * p), int(((labels == c) & valid).sum()))
        for c, p in enumerate(prior.tolist())
    ]


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prior", "error", "match"),
    [
        ([0.5, 0.5], ValueError, r"shape \(3,\), got shape \(2,\)"),
        (torch.ones(3, 1) / 3, ValueError, r"shape \(3,\)"),
        ([0.7, -0.1, 0.4], ValueError, "finite values >= 0"),
        ([float("nan"), 0.5, 0.5], ValueError, "finite values >= 0"),
        ([5.0, 3.0, 2.0], ValueError, "sum to 1"),
        ([0.0, 0.0, 0.0], ValueError, "sum to 1"),
        ("balanced", ValueError, "'uniform'"),
        (torch.ones(3, dtype=torch.bool), TypeError, "real tensor"),
        ({"a": 1}, TypeError, "prior must be"),
    ],
)
def test_bad_prior(prior, error, match):
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    with pytest.raises(error, match=match):
        F.class_prior(probs, prior, 0.5)
    with pytest.raises(error, match=match):
        F.class_prior_thresholds(probs, prior, 0.5)


def test_prior_within_tolerance_is_normalised():
    prior = F.check_prior([0.5, 0.3, 0.2004], 3)
    assert float(prior.sum()) == pytest.approx(1.0, abs=1e-15)
    assert F.check_prior("uniform", 4).tolist() == [0.25] * 4


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"kept_share": 1.5}, ValueError, "kept_share"),
        ({"kept_share": -0.1}, ValueError, "kept_share"),
        ({"kept_share": float("nan")}, ValueError, "kept_share"),
        ({"kept_share": "0.5"}, TypeError, "kept_share"),
        ({"kept_share": True}, TypeError, "kept_share"),
        ({"kept_share": torch.ones(2)}, ValueError, "kept_share"),
        ({"tau": 1.5}, ValueError, "tau"),
        ({"min_threshold": -1.0}, ValueError, "min_threshold"),
    ],
)
def test_bad_options(options, error, match):
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    with pytest.raises(error, match=match):
        F.class_prior(probs, **options)


def test_bad_probabilities_name_the_argument():
    with pytest.raises(ValueError, match="probs"):
        F.class_prior(torch.tensor([[0.5, 0.7]]), kept_share=0.5)
    with pytest.raises(ValueError, match="valid"):
        F.class_prior(torch.tensor([[0.5, 0.5]]), kept_share=0.5, valid=torch.ones(3).bool())


def test_kept_share_tensor_and_no_graph():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]], requires_grad=True)
    sel = F.class_prior(probs, kept_share=torch.tensor(1.0))
    assert sel.mask.tolist() == [True, False]  # k = 1 per class; class 1 never predicted
    assert not any(t.requires_grad for t in sel)
