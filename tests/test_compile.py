"""torch.compile(fullgraph=True) of both functional selectors: no graph break, same result."""

from __future__ import annotations

import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps
from helpers.tolerances import HALF_DTYPES, dtype_id

import pseudosel.functional as F

pytestmark = pytest.mark.slow


def assert_close_selection(compiled, eager):
    torch.testing.assert_close(compiled.weight, eager.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled.score, eager.score, rtol=1e-4, atol=1e-5)
    assert torch.equal(compiled.labels, eager.labels)
    assert torch.equal(compiled.valid, eager.valid)
    # the trusted set may differ only where a weight rounds to 1 differently
    differs = compiled.mask != eager.mask
    assert (eager.weight[differs] > 1 - 1e-5).all()


def test_compiled_csl_equals_eager_dense_and_classification():
    torch._dynamo.reset()
    compiled = torch.compile(F.csl, fullgraph=True)
    probs = smooth_maps(2, 21, 24, 24, sharpness=6.0, seed=1)
    valid = torch.ones(2, 24, 24, dtype=torch.bool)
    valid[:, :, 20:] = False
    assert_close_selection(compiled(probs, valid=valid), F.csl(probs, valid=valid))
    logits_like = classifier_outputs(128, 10, seed=2)
    assert_close_selection(compiled(logits_like), F.csl(logits_like))
    # value checks become a device-side assertion: RuntimeError instead of ValueError
    with pytest.raises(RuntimeError, match="from_logits=True"):
        compiled(probs * 2, valid=valid)


def test_compiled_threshold_equals_eager():
    torch._dynamo.reset()
    compiled = torch.compile(F.threshold, fullgraph=True)
    probs = smooth_maps(2, 5, 16, 16, sharpness=6.0, seed=3)
    eager = F.threshold(probs, 0.9)
    result = compiled(probs, 0.9)
    for a, b in zip(result, eager, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("selector", [F.threshold, F.csl])
def test_users_compiled_path_returns_bool_masks_equal_to_eager(selector):
    # pseudosel.compiled stores the bool fields as float inside the graph (bool stores are
    # slow in inductor's CPU code) and converts back: same dtypes and values as eager
    from pseudosel.compiled import compiled

    torch._dynamo.reset()
    fast = compiled(selector)
    probs = smooth_maps(3, 6, 12, 12, sharpness=6.0, seed=4)
    valid = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(5)) > 0.3
    for kwargs in ({}, {"valid": valid}):
        result, eager = fast(probs, **kwargs), selector(probs, **kwargs)
        assert result.mask.dtype == result.valid.dtype == torch.bool
        assert_close_selection(result, eager)
        if selector is F.threshold:
            assert torch.equal(result.mask, eager.mask)
        if "valid" in kwargs:
            assert torch.equal(result.valid, valid)


@pytest.mark.parametrize(
    "selector,shape,masked",
    [
        (F.threshold, (2, 70, 6, 6), True),
        (F.threshold, (448, 100), False),
        (F.csl, (2, 5, 6, 6), True),
        (F.csl, (448, 100), False),
    ],
    ids=["threshold-70-classes-masked", "threshold-448x100", "csl-planes-masked", "csl-448x100"],
)
def test_users_compiled_path_refuses_exactly_what_eager_refuses(selector, shape, masked):
    # pseudosel.compiled computes the check inside the graph (class planes fused into the
    # selector's pass for K <= 64) and raises after it: the eager ValueError, naming the
    # position. (A plain torch.compile asserts inside the graph, and inductor's CPU code
    # terminates the process on a failure at shapes like 448x100 and 2x70x6x6.)
    from pseudosel.compiled import compiled

    torch._dynamo.reset()
    fast = compiled(selector)
    if len(shape) == 4:
        probs = smooth_maps(*shape, sharpness=4.0, seed=3)
    else:
        probs = classifier_outputs(*shape, seed=3)
    mask = torch.ones(probs.shape[0], *probs.shape[2:], dtype=torch.bool)
    mask.view(-1)[-1] = False
    mask = mask if masked else None
    fast(probs, valid=mask)
    for value in (float("nan"), -1e-3, 0.5):
        bad = probs.clone()
        bad.view(probs.shape[0], probs.shape[1], -1)[0, 1, 0] = value
        with pytest.raises(ValueError, match="First offending position") as eager:
            selector(bad, valid=mask)
        with pytest.raises(ValueError, match="First offending position") as raised:
            fast(bad, valid=mask)
        assert str(raised.value) == str(eager.value)
        fast(bad, valid=mask, validate=False)
    if masked:
        ignored = probs.clone()
        ignored.view(probs.shape[0], probs.shape[1], -1)[-1, :, -1] = float("nan")
        fast(ignored, valid=mask)  # an ignored position is not checked


def test_only_single_input_selectors_move_the_check_after_the_graph():
    # selectors without validate=, or with a second probability input (AdaMatch's
    # labelled batch), keep their own checks inside the graph and still compile
    from pseudosel.compiled import _checks_after_graph, compiled

    assert _checks_after_graph(F.csl) and _checks_after_graph(F.threshold)
    assert not _checks_after_graph(F.adamatch)
    assert not _checks_after_graph(F.flexmatch_select)
    torch._dynamo.reset()
    probs, labeled = classifier_outputs(64, 10, seed=1), classifier_outputs(16, 10, seed=2)
    fast = compiled(F.adamatch)(probs, labeled, 0.9)
    eager = F.adamatch(probs, labeled, 0.9)
    assert torch.equal(fast.mask, eager.mask) and torch.equal(fast.labels, eager.labels)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=dtype_id)
def test_users_compiled_path_checks_half_inputs_as_eager_does(dtype):
    # half inputs: row sums in float32 on both paths, so the verdicts agree
    from pseudosel.compiled import compiled

    torch._dynamo.reset()
    fast = compiled(F.threshold)
    probs = smooth_maps(2, 7, 5, 5, sharpness=3.0, seed=6).to(dtype)
    fast(probs)
    F.threshold(probs)
    bad = probs.clone()
    bad[1, 2, 3, 4] = bad[1, 2, 3, 4] + 0.25
    with pytest.raises(ValueError, match="First offending position") as eager:
        F.threshold(bad)
    with pytest.raises(ValueError, match="First offending position") as raised:
        fast(bad)
    assert str(raised.value) == str(eager.value)
