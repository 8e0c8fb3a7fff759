"""S4MC's refinement and selection (pseudosel.functional.s4mc) against a float64 reference
written from the paper (tests/helpers/s4mc_reference.py) and against a transcription of the
authors' code run on the same tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.s4mc_reference import (
    AUTHORS_BETA,
    CITYSCAPES_E,
    PASCAL_E,
    authors_kept,
    refine_reference,
    select_reference,
)
from helpers.tolerances import DTYPES, assert_close, compute_dtype, dtype_id
from hypothesis import given, settings
from hypothesis import strategies as st

from pseudosel.functional import masked_quantile, s4mc, s4mc_refine
from pseudosel.functional.s4mc import S4MC_BETA


@st.composite
def dense_inputs(draw, dtypes=DTYPES):
    n = draw(st.integers(1, 2))
    k = draw(st.integers(2, 6))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dtype = draw(st.sampled_from(dtypes))
    sharpness = draw(st.sampled_from([0.0, 0.5, 2.0, 8.0]))
    keep = draw(st.sampled_from([0.0, 0.5, 0.8, 1.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = torch.randn(n, k, h, w, generator=gen, dtype=torch.float64) * sharpness
    probs = logits.softmax(1).to(dtype)
    valid = torch.rand(n, h, w, generator=gen) < keep
    return probs, valid


def _agreement(k: int, draw_it: bool, seed: int) -> list[float] | None:
    if not draw_it:
        return None
    return torch.rand(k, generator=torch.Generator().manual_seed(seed)).tolist()


# ------------------------------------------------------------------ refinement == paper


@settings(max_examples=120, deadline=None)
@given(
    dense_inputs(),
    st.sampled_from([4, 8]),
    st.integers(1, 8),
    st.booleans(),
    st.integers(0, 1000),
)
def test_refine_equals_the_paper_reference(inputs, connectivity, n, with_agreement, seed):
    probs, valid = inputs
    n = min(n, connectivity)
    agreement = _agreement(probs.shape[1], with_agreement, seed)
    refined = s4mc_refine(
        probs, connectivity=connectivity, num_neighbours=n, agreement=agreement, valid=valid
    )
    expected = refine_reference(
        probs.double().numpy(), valid.numpy(), connectivity, n, agreement=agreement
    )
    assert refined.shape == probs.shape and refined.dtype == compute_dtype(probs.dtype)
    assert_close(refined, torch.from_numpy(expected), probs.dtype)
    # ignored pixels come back as given; valid ones only rise, and stay in [0, 1]
    ignored = ~valid.unsqueeze(1).expand_as(probs)
    assert torch.equal(refined[ignored], probs.to(refined.dtype)[ignored])
    if agreement is None:
        kept = ~ignored
        assert (refined[kept] >= probs.to(refined.dtype)[kept] - 1e-6).all()  # float32 ulps
    assert (refined <= 1 + 1e-6).all() and (refined >= 0).all()


def test_refine_by_hand():
    # a 1 x 3 image, two classes: p0 = (0.6, 0.9, 0.9); 4-connectivity, β = e^(−1/2)
    p = torch.tensor([0.6, 0.9, 0.9], dtype=torch.float64).reshape(1, 1, 1, 3)
    probs = torch.cat((p, 1 - p), 1)
    beta = math.exp(-0.5)
    refined = s4mc_refine(probs)
    expected0 = [0.6 + beta * 0.9 * (1 - 0.6), 0.9 + beta * 0.9 * 0.1, 0.9 + beta * 0.9 * 0.1]
    expected1 = [0.4 + beta * 0.1 * 0.6, 0.1 + beta * 0.4 * 0.9, 0.1 + beta * 0.1 * 0.9]
    torch.testing.assert_close(refined[0, 0, 0], torch.tensor(expected0, dtype=torch.float64))
    torch.testing.assert_close(refined[0, 1, 0], torch.tensor(expected1, dtype=torch.float64))
    # the ignored middle pixel lends nothing: the ends have no neighbour left
    valid = torch.tensor([[[True, False, True]]])
    alone = s4mc_refine(probs, valid=valid)
    assert torch.equal(alone, probs)


def test_border_and_single_pixel():
    probs = torch.tensor([[[[0.7]], [[0.3]]]], dtype=torch.float64)  # 1 x 1: no neighbour
    assert torch.equal(s4mc_refine(probs, connectivity=8), probs)
    # the published E still lowers p where no neighbour lends: p·(1 − β·E)
    refined = s4mc_refine(probs, agreement=[0.5, 0.5])
    torch.testing.assert_close(refined, probs * (1 - S4MC_BETA * 0.5))


def test_one_spatial_dim_is_a_row_and_more_are_slices():
    gen = torch.Generator().manual_seed(0)
    probs = torch.randn(2, 3, 7, generator=gen, dtype=torch.float64).softmax(1)
    assert torch.equal(s4mc_refine(probs), s4mc_refine(probs.unsqueeze(2)).squeeze(2))
    volume = torch.randn(2, 3, 4, 5, 6, generator=gen, dtype=torch.float64).softmax(1)
    by_slice = torch.stack([s4mc_refine(volume[:, :, d]) for d in range(4)], 2)
    torch.testing.assert_close(s4mc_refine(volume), by_slice)


def test_ignored_positions_may_hold_anything():
    gen = torch.Generator().manual_seed(1)
    probs = torch.randn(2, 4, 5, 5, generator=gen).softmax(1)
    valid = torch.rand(2, 5, 5, generator=gen) < 0.6
    poisoned = probs.clone()
    poisoned.movedim(1, -1)[~valid] = float("nan")
    clean = s4mc_refine(probs, valid=valid)
    dirty = s4mc_refine(poisoned, valid=valid)
    assert torch.equal(dirty[valid.unsqueeze(1).expand_as(probs)],
                       clean[valid.unsqueeze(1).expand_as(probs)])  # fmt: skip
    sel = s4mc(poisoned, valid=valid)
    assert torch.equal(sel.mask, s4mc(probs, valid=valid).mask)
    assert torch.isfinite(sel.score).all()


# ------------------------------------------------------------------ selection == paper


@settings(max_examples=120, deadline=None)
@given(
    dense_inputs(),
    st.floats(0.0, 100.0),
    st.sampled_from(["margin", "confidence", "entropy"]),
    st.sampled_from([4, 8]),
    st.integers(1, 3),
)
def test_selection_equals_the_reference(inputs, drop_percent, indicator, connectivity, n):
    probs, valid = inputs
    sel = s4mc(
        probs,
        drop_percent,
        indicator=indicator,
        connectivity=connectivity,
        num_neighbours=n,
        valid=valid,
    )
    mask, labels, after, cut = select_reference(
        probs.double().numpy(),
        valid.numpy(),
        drop_percent,
        indicator,
        connectivity=connectivity,
        num_neighbours=n,
    )
    # equal away from the cut (half inputs are computed in float32)
    tol = 1e-9 if probs.dtype == torch.float64 else 1e-5
    decided = torch.from_numpy(np.abs(after - cut) > tol) | ~valid
    assert torch.equal(sel.mask[decided], torch.from_numpy(mask)[decided])
    assert torch.equal(sel.labels[valid], torch.from_numpy(labels)[valid])
    score = torch.from_numpy(-after if indicator == "entropy" else after)
    assert_close(sel.score[valid], score[valid], probs.dtype)
    assert (sel.score[~valid] == 0).all() and not sel.mask[~valid].any()
    assert torch.equal(sel.weight, sel.mask.to(sel.weight.dtype))


def test_the_cut_is_numpy_percentile_as_the_authors_call_it():
    gen = torch.Generator().manual_seed(3)
    probs = (torch.randn(2, 5, 9, 11, generator=gen, dtype=torch.float64) * 2).softmax(1)
    target = torch.where(torch.rand(2, 9, 11, generator=gen) < 0.2, 255, 1)
    top = probs.topk(2, dim=1).values
    margin = top[:, 0] - top[:, 1]
    for percent in (60.0, 60.5, 77.25, 100.0):
        expected = np.percentile(margin[target != 255].numpy().flatten(), 100 - percent)
        cut = masked_quantile(margin, target != 255, (100 - percent) / 100)
        assert abs(float(cut) - float(expected)) < 1e-12


def test_uniform_input_keeps_nothing_and_all_ignored_is_empty():
    probs = torch.full((1, 3, 4, 4), 1 / 3)
    assert not s4mc(probs, 100.0).mask.any()  # margin 0 everywhere: 0 > 0 is false
    valid = torch.zeros(1, 4, 4, dtype=torch.bool)
    sel = s4mc(probs, valid=valid)
    assert not sel.mask.any() and (sel.weight == 0).all() and torch.isfinite(sel.score).all()
    empty = s4mc(torch.rand(0, 3, 4, 4).softmax(1))
    assert empty.mask.shape == (0, 4, 4)


# ------------------------------------------------------------------ == the authors' code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
@pytest.mark.parametrize(
    "indicator,connectivity,n,percent",
    [
        ("margin", 4, 1, 60.0),
        ("margin", 8, 1, 75.5),
        ("margin", 8, 3, 90.0),
        ("confidence", 4, 2, 70.0),
        ("entropy", 4, 1, 65.0),
        ("entropy", 8, 2, 99.0),
    ],
)
@pytest.mark.parametrize("dataset", ["none", "pascal", "cityscapes"])
def test_masks_equal_the_authors_code(dataset, indicator, connectivity, n, percent, dtype):
    """The published refinement + threshold (helpers.s4mc_reference.authors_kept) on the
    same tensors: the same kept pixels. ``none``: E = 0, the paper's p·q (our default);
    with a dataset's E, ``agreement=E``. β as the code computes it (float32 e^(−1/2))."""
    k = {"none": 6, "pascal": 21, "cityscapes": 19}[dataset]
    e = {"none": [0.0] * k, "pascal": PASCAL_E, "cityscapes": CITYSCAPES_E}[dataset]
    gen = torch.Generator().manual_seed(connectivity * 100 + n)
    probs = (torch.randn(2, k, 12, 10, generator=gen, dtype=torch.float64) * 3).softmax(1)
    probs = probs.to(dtype)
    kept = authors_kept(
        probs,
        torch.zeros(2, 12, 10, dtype=torch.long),
        percent,
        E_joint=e,
        indicator=indicator,
        neigborhood_size=connectivity,
        n_neigbors=n,
    )
    sel = s4mc(
        probs,
        percent,
        indicator=indicator,
        connectivity=connectivity,
        num_neighbours=n,
        beta=AUTHORS_BETA,
        agreement=None if dataset == "none" else torch.tensor(e),
    )
    if indicator == "margin":  # (the other indicators may keep all or nothing here)
        assert kept.any() and (~kept).any()
    assert torch.equal(sel.mask, kept)


def test_ignored_pixels_equal_the_authors_code_on_zeroed_input():
    """The published code lets pixels marked 255 lend their probabilities; here they lend
    nothing — which the published code does on input zeroed there. The percentile excludes
    them in both."""
    gen = torch.Generator().manual_seed(7)
    probs = (torch.randn(3, 4, 9, 9, generator=gen, dtype=torch.float64) * 2).softmax(1)
    target = torch.where(torch.rand(3, 9, 9, generator=gen) < 0.3, 255, 0)
    valid = target != 255
    kept = authors_kept(probs * valid.unsqueeze(1), target, 70.0, E_joint=[0.0] * 4)
    sel = s4mc(probs, 70.0, valid=valid, beta=AUTHORS_BETA)
    assert torch.equal(sel.mask, kept)


def test_default_beta_is_the_published_value():
    assert S4MC_BETA == math.exp(-0.5)
    assert abs(S4MC_BETA - AUTHORS_BETA) < 1e-7


# ------------------------------------------------------------------ errors


def test_classification_input_is_refused():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    with pytest.raises(ValueError, match=r"dense input probs \(N, K, H, W\).*\(2, 2\)"):
        s4mc(probs)
    with pytest.raises(ValueError, match="s4mc_refine needs dense"):
        s4mc_refine(probs)


@pytest.mark.parametrize(
    "options,error,match",
    [
        ({"connectivity": 6}, ValueError, "connectivity must be 4 or 8, got 6"),
        ({"connectivity": True}, ValueError, "connectivity"),
        ({"num_neighbours": 0}, ValueError, r"num_neighbours must be in \[1, 4\]"),
        ({"num_neighbours": 5}, ValueError, "num_neighbours"),
        ({"num_neighbours": 1.0}, TypeError, "num_neighbours must be an int"),
        ({"beta": 1.5}, ValueError, r"beta must be in \[0, 1\]"),
        ({"beta": "x"}, TypeError, "beta"),
        ({"agreement": [0.9]}, ValueError, "agreement must hold one value per class"),
        ({"agreement": [0.9, 2.0, 0.5]}, ValueError, "agreement"),
        ({"agreement": torch.ones(2, 3)}, ValueError, r"agreement must have shape \(3,\)"),
        ({"agreement": torch.ones(3, dtype=torch.long)}, TypeError, "agreement"),
        ({"agreement": 0.5}, TypeError, "agreement"),
    ],
)
def test_bad_refinement_options(options, error, match):
    probs = torch.rand(1, 3, 4, 4).softmax(1)
    with pytest.raises(error, match=match):
        s4mc_refine(probs, **options)
    with pytest.raises(error, match=match):
        s4mc(probs, **options)


def test_bad_selection_arguments():
    probs = torch.rand(1, 3, 4, 4).softmax(1)
    with pytest.raises(ValueError, match=r"drop_percent must be in \[0, 100\], got 120"):
        s4mc(probs, 120)
    with pytest.raises(ValueError, match="indicator must be one of"):
        s4mc(probs, indicator="variance")
    with pytest.raises(ValueError, match="valid"):
        s4mc(probs, valid=torch.ones(1, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="from_logits"):
        s4mc(torch.randn(1, 3, 4, 4) * 3)
