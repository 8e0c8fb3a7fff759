"""Property-based tests: random shapes, dtypes, validity, peaky to uniform inputs."""

from __future__ import annotations

import pytest
import torch
from helpers.selector_zoo import declared_options
from helpers.tolerances import DTYPES
from hypothesis import given, settings
from hypothesis import strategies as st

import pseudosel
import pseudosel.functional as F
from pseudosel.registry import selector_spec

NUM_UNLABELED = 64


@st.composite
def selection_inputs(draw):
    n = draw(st.integers(0, 4))
    k = draw(st.integers(2, 8))
    spatial = draw(st.lists(st.integers(0, 6), min_size=0, max_size=2))
    dtype = draw(st.sampled_from(DTYPES))
    sharpness = draw(st.sampled_from([0.0, 0.3, 2.0, 10.0, 60.0]))
    keep = draw(st.sampled_from([0.0, 0.1, 0.7, 1.0]))
    special = draw(st.sampled_from(["none", "one_hot", "uniform", "repeated"]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = (n, k, *spatial)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * sharpness
    if special == "one_hot":
        logits = torch.where(logits == logits.amax(1, keepdim=True), 1e4, 0.0)
    elif special == "uniform":
        logits = torch.zeros(shape, dtype=torch.float64)
    elif special == "repeated" and n > 0:
        logits = logits[:1].expand(shape)
    probs = logits.softmax(1).to(dtype)
    valid = torch.rand((n, *spatial), generator=gen) < keep
    return probs, valid


def check_selection(sel: pseudosel.Selection, probs: torch.Tensor, valid: torch.Tensor):
    position_shape = (probs.shape[0], *probs.shape[2:])
    for field in sel:
        assert field.shape == position_shape
    assert sel.labels.dtype == torch.long
    assert ((sel.labels >= 0) & (sel.labels < probs.shape[1])).all()
    expected = torch.float64 if probs.dtype == torch.float64 else torch.float32
    assert sel.weight.dtype == sel.score.dtype == expected
    assert torch.isfinite(sel.weight).all() and torch.isfinite(sel.score).all()
    assert ((sel.weight >= 0) & (sel.weight <= 1)).all()
    assert (sel.weight[sel.mask] == 1).all()
    assert torch.equal(sel.valid, valid)
    assert (sel.weight[~valid] == 0).all() and not sel.mask[~valid].any()
    ratio = sel.ratio()
    assert 0 <= ratio.item() <= 1


@settings(max_examples=300)
@given(
    selection_inputs(),
    st.sampled_from(["auto", "sample", "batch"]),
    st.sampled_from(["confidence", "linear", "neglog"]),
)
def test_csl_properties(device, inputs, scope, rule):
    probs, valid = (x.to(device) for x in inputs)
    sel = F.csl(probs, valid=valid, scope=scope, cluster_rule=rule)
    check_selection(sel, probs, valid)
    # each group with a valid position trusts at least one of them (its best point)
    if scope == "sample" and probs.dim() > 2 and probs.shape[0] > 0:
        has_valid = valid.flatten(1).any(1)
        assert (sel.mask.flatten(1).any(1) | ~has_valid).all()


@settings(max_examples=300)
@given(selection_inputs(), st.floats(0.0, 1.0))
def test_threshold_properties(device, inputs, tau):
    probs, valid = (x.to(device) for x in inputs)
    sel = F.threshold(probs, tau, valid=valid)
    check_selection(sel, probs, valid)
    assert torch.equal(sel.weight, sel.mask.to(sel.weight.dtype))


@given(
    st.integers(1, 5),
    st.integers(2, 6),
    st.floats(0.5, 10.0),
    st.integers(0, 2**31 - 1),
    st.sampled_from([F.csl, F.threshold]),
)
def test_logits_are_rejected(n, k, scale, seed, select):
    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * scale
    with pytest.raises(ValueError, match="from_logits=True"):
        select(logits)


def _stateful() -> dict:
    """Every stateful selector of the registry, with each option set of its declaration."""
    found = {}
    for name in pseudosel.available_selectors(stateful=True):
        spec = selector_spec(name)
        for example, options in declared_options(spec, NUM_UNLABELED):
            found[f"{name}/{example}"] = (spec, options)
    return found


STATEFUL = _stateful()


@settings(max_examples=150)
@given(selection_inputs(), st.sampled_from(sorted(STATEFUL)), st.booleans())
def test_stateful_selector_properties(device, inputs, name, training):
    """Two declared steps (``spec.step``) in training or eval mode: documented shapes and
    ranges, finite state. A selector recording per sample, or one taking (N, K) input
    only, gets the positions as rows, with their indices; one taking images only gets rows
    as 1 x 1 images."""
    probs, valid = (x.to(device) for x in inputs)
    spec, options = STATEFUL[name]
    per_sample = options["num_unlabeled"] is not None
    if per_sample or not spec.dense:
        probs, valid = probs.movedim(1, -1).reshape(-1, probs.shape[1]), valid.reshape(-1)
    elif not spec.classification and probs.dim() == 2:  # an image of one pixel per row
        probs, valid = probs[..., None, None], valid[..., None, None]
    selector = spec.build(probs.shape[1], **options).to(device).train(training)
    index = torch.arange(len(probs), device=device) % NUM_UNLABELED
    extra = {"index": index} if per_sample else {}
    for _ in range(2):
        sel = spec.step(selector, probs, valid, **extra)
        check_selection(sel, probs, valid)
    for value in selector.state_dict().values():
        if value.is_floating_point():
            assert torch.isfinite(value).all()


@settings(max_examples=80)
@given(selection_inputs())
def test_alignment_and_adamatch_properties(device, inputs):
    probs, valid = (x.to(device) for x in inputs)
    k = probs.shape[1]
    aligned = pseudosel.DistributionAlignment(k).to(device)(probs, valid=valid)
    assert aligned.shape == probs.shape and torch.isfinite(aligned).all()
    labeled = torch.full((3, k), 1.0 / k, dtype=probs.dtype, device=device)
    sel = pseudosel.AdaMatchSelector()(probs, labeled, valid=valid)
    check_selection(sel, probs, valid)


@settings(max_examples=60)
@given(st.integers(0, 12), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_flexmatch_per_sample_counts_always_match_a_recount(n, k, seed):
    gen = torch.Generator().manual_seed(seed)
    selector = pseudosel.FlexMatchSelector(k, 10, tau=0.5)
    for _ in range(3):
        probs = (torch.randn(n, k, generator=gen) * 3).softmax(1)
        index = torch.randint(0, 10, (n,), generator=gen)
        selector(probs, index=index)
        recount = torch.bincount(selector.selected_label + 1, minlength=k + 1)
        assert selector.counts.tolist() == recount[1:].tolist() + [recount[0].item()]
