"""SoftMatch's truncated-Gaussian weights against the literal float64 reference
(helpers/adaptive_reference.py), over multi-step sequences; USB's per-class quirk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.adaptive_reference import RefSoftMatch
from helpers.sequences import cls_batches, numpy_of, start_from
from hypothesis import given, settings
from hypothesis import strategies as st

import pseudosel


@pytest.mark.parametrize("n_sigma", [2.0, 0.7, 3.5])
@pytest.mark.parametrize("per_class", [False, True])
def test_softmatch_matches_reference(per_class, n_sigma, device):
    selector = pseudosel.SoftMatchSelector(
        6, momentum=0.9, n_sigma=n_sigma, per_class=per_class
    ).to(device, torch.float64)
    ref = RefSoftMatch(6, momentum=0.9, n_sigma=n_sigma, per_class=per_class)
    start_from(ref, selector, "mu", "var")
    for probs in cls_batches(device=device):
        sel = selector(probs)
        np.testing.assert_allclose(
            numpy_of(sel.weight), ref.step(numpy_of(probs)), rtol=1e-10, atol=1e-14
        )
        np.testing.assert_allclose(numpy_of(selector.mu), ref.mu, rtol=1e-12)
        np.testing.assert_allclose(numpy_of(selector.var), ref.var, rtol=1e-10)
        assert torch.equal(sel.mask, sel.weight == 1)
    # n_sigma matters: a wider factor gives smaller weights below the mean
    if n_sigma != 2.0:
        default = pseudosel.SoftMatchSelector(6, per_class=per_class).to(device, torch.float64)
        default.eval().load_state_dict(selector.state_dict())
        selector.eval()
        uncertain = cls_batches(device=device)[0]  # early, unconfident: weights below 1
        ours, theirs = selector(uncertain).weight, default(uncertain).weight
        wider = (theirs >= ours) if n_sigma > 2.0 else (theirs <= ours)
        assert wider.all() and not torch.equal(ours, theirs)


def test_softmatch_per_class_quirk_rare_classes_pull_towards_zero_one(device):
    selector = pseudosel.SoftMatchSelector(3, momentum=0.5, per_class=True)
    selector = selector.to(device, torch.float64)
    probs = torch.tensor(
        [[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.1, 0.7, 0.2]], dtype=torch.float64, device=device
    )
    selector(probs)
    # class 0: two samples → mean 0.7, variance 0.02; classes 1 and 2: (0, 1) as in USB
    torch.testing.assert_close(
        selector.mu.cpu(), torch.tensor([0.5 / 3 + 0.35, 0.5 / 3, 0.5 / 3], dtype=torch.float64)
    )
    torch.testing.assert_close(
        selector.var.cpu(), torch.tensor([0.5 + 0.01, 1.0, 1.0], dtype=torch.float64)
    )


def test_softmatch_single_position_batches_stay_finite(device):
    selector = pseudosel.SoftMatchSelector(3).to(device)
    for _ in range(3):
        sel = selector(torch.tensor([[0.5, 0.3, 0.2]], device=device))
        assert torch.isfinite(selector.var) and torch.isfinite(sel.weight).all()
    sel = selector(torch.zeros(0, 3, device=device))
    assert torch.isfinite(selector.mu) and sel.weight.shape == (0,)


@pytest.mark.parametrize("number", [float, np.float32], ids=["float", "numpy float32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.float64])
@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 70),
    k=st.integers(2, 12),
    scale=st.floats(0.0, 30.0),
    mu=st.floats(0.0, 1.0),
    var=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1e-30])),
    momentum=st.one_of(st.sampled_from([0.0, 0.7, 0.999, 1.0]), st.floats(0.0, 1.0)),
    n_sigma=st.floats(0.1, 5.0),
    seed=st.integers(0, 2**16),
)
def test_statistics_read_on_the_host_equal_the_device_side_form(
    number, dtype, state_dtype, n, k, scale, mu, var, momentum, n_sigma, seed
):
    """On an eager CPU the plain update reads two sums and the state as Python numbers and
    runs the EMA there (and the module's lane the spread of the weights too): the state and
    the weights are those of the device-side form (``formulas_only()``), bit for bit — a
    NumPy float32 momentum or n_σ included (its value, and 1 − m in its own arithmetic)."""
    momentum, n_sigma = number(momentum), number(n_sigma)
    from pseudosel.functional.softmatch import softmatch_weights, softmatch_weights_on_host
    from pseudosel.kernels import formulas_only

    generator = torch.Generator().manual_seed(seed)
    probs = (torch.randn(n, k, generator=generator, dtype=torch.float64) * scale).softmax(1)
    probs = probs.to(dtype)
    state = pseudosel.functional.SoftMatchState(
        torch.tensor(mu, dtype=state_dtype), torch.tensor(var, dtype=state_dtype)
    )
    on_host = pseudosel.functional.softmatch_update(probs, state, momentum=momentum)
    with formulas_only():
        device_side = pseudosel.functional.softmatch_update(probs, state, momentum=momentum)
    for ours, theirs in zip(on_host, device_side, strict=True):
        bits = torch.int32 if state_dtype == torch.float32 else torch.int64
        assert torch.equal(ours.view(bits), theirs.view(bits))
    confidence, labels = probs.max(1)
    valid = torch.ones(n, dtype=torch.bool)
    ours = softmatch_weights_on_host(confidence, labels, on_host, valid, n_sigma)
    theirs = softmatch_weights(confidence, labels, on_host, valid, True, n_sigma)
    for field in ("weight", "mask", "score", "labels"):
        assert torch.equal(getattr(ours, field), getattr(theirs, field)), field


def test_update_under_vmap_over_states_equals_one_by_one():
    """The plain update reads numbers on the host only where it can: inside
    ``torch.func.vmap`` over states it takes the device-side form."""
    probs = torch.randn(64, 5, generator=torch.Generator().manual_seed(1)).softmax(1)
    mus, variances = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([1.0, 0.3, 0.05])

    def update(mu, var):
        state = pseudosel.functional.SoftMatchState(mu, var)
        return tuple(pseudosel.functional.softmatch_update(probs, state, momentum=0.9))

    batched = torch.func.vmap(update)(mus, variances)
    for i in range(3):
        one = update(mus[i], variances[i])
        torch.testing.assert_close(batched[0][i], one[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(batched[1][i], one[1], rtol=1e-6, atol=0)


def test_update_on_fake_tensors_reads_nothing():
    """Under fake tensors (tracing without data) the plain update takes the device-side
    form: no value is read (with validate=False, as a tracer calls it)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = torch.randn(64, 5, generator=torch.Generator().manual_seed(2)).softmax(1)
    state = pseudosel.functional.softmatch_init(5)
    with FakeTensorMode() as mode:
        fake_state = pseudosel.functional.SoftMatchState(*(mode.from_tensor(t) for t in state))
        new = pseudosel.functional.softmatch_update(
            mode.from_tensor(real), fake_state, validate=False
        )
        assert new.mu.shape == () and new.var.shape == ()
