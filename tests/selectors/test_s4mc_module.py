"""S4MCSelector: the published schedule of the kept share, step by step, module ==
functional, the authors' training loop on the same tensors, checkpoints, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers.s4mc_reference import (
    AUTHORS_BETA,
    PASCAL_E,
    authors_kept,
    authors_schedule,
    kept_percent_reference,
)

import pseudosel
from pseudosel import S4MCSelector
from pseudosel.functional import s4mc


def _batch(seed: int, k: int = 5, dtype=torch.float32, keep: float = 0.8):
    gen = torch.Generator().manual_seed(seed)
    probs = (torch.randn(2, k, 8, 9, generator=gen, dtype=torch.float64) * 2).softmax(1)
    valid = torch.rand(2, 8, 9, generator=gen) < keep
    return probs.to(dtype), valid


def test_schedule_equals_the_published_one_step_by_step():
    epochs, iters = 7, 5
    selector = S4MCSelector(epochs * iters, steps_per_epoch=iters)
    probs, valid = _batch(0)
    for expected in authors_schedule(60.0, epochs, iters):
        assert float(selector.kept_percent()) == expected  # exactly: the same float64 ops
        selector(probs, valid)
    assert float(selector.kept_percent()) == 100.0  # past T: everything the cut allows


def test_per_step_schedule_and_clamp():
    selector = S4MCSelector(8, drop_percent=50.0)
    probs, valid = _batch(1)
    for t in range(12):
        expected = kept_percent_reference(50.0, min(t, 8), 8)
        assert float(selector.kept_percent()) == pytest.approx(expected, abs=1e-12)
        selector(probs, valid)
    assert int(selector.step) == 12


def test_module_equals_the_functional_at_the_scheduled_percent():
    selector = S4MCSelector(6, connectivity=8, num_neighbours=2, indicator="entropy")
    for t in range(4):
        probs, valid = _batch(10 + t)
        percent = float(selector.kept_percent())
        sel = selector(probs, valid)
        expected = s4mc(
            probs, percent, indicator="entropy", connectivity=8, num_neighbours=2, valid=valid
        )
        for name in ("labels", "weight", "mask", "score", "valid"):
            assert torch.equal(getattr(sel, name), getattr(expected, name)), (t, name)


def test_training_loop_equals_the_authors_code():
    """Per step: train_semi.py's drop_percent, then compute_unsupervised_loss's kept pixels
    (helpers.s4mc_reference), on PASCAL's 21 classes with its E and the code's β."""
    epochs, iters = 3, 2
    selector = S4MCSelector(
        epochs * iters, steps_per_epoch=iters, agreement=PASCAL_E, beta=AUTHORS_BETA
    )
    schedule = authors_schedule(60.0, epochs, iters)
    for t, percent in enumerate(schedule):
        probs, _ = _batch(20 + t, k=21, dtype=torch.float64)
        target = torch.zeros(2, 8, 9, dtype=torch.long)
        kept = authors_kept(probs, target, percent, E_joint=PASCAL_E)
        assert torch.equal(selector(probs).mask, kept), t


def test_select_reliable_with_an_ignore_mask():
    """The segmentation trainer's call: select_reliable(probs, module, ignore_mask=...)."""
    probs, valid = _batch(3)
    ignore = torch.where(valid, 0, 255).to(torch.uint8)
    a, b = S4MCSelector(10), S4MCSelector(10)
    for _ in range(3):
        by_name = pseudosel.select_reliable(probs, a, ignore_mask=ignore)
        direct = b(probs, valid=valid)
        assert torch.equal(by_name.mask, direct.mask) and torch.equal(by_name.valid, valid)
    assert int(a.step) == int(b.step) == 3


def test_eval_does_not_advance_and_state_dict_resumes_exactly():
    selector = S4MCSelector(10)
    batches = [_batch(30 + t) for t in range(6)]
    for probs, valid in batches[:3]:
        selector(probs, valid)
    selector.eval()
    before = copy.deepcopy(selector.state_dict())
    selector(*batches[3])
    assert torch.equal(selector.state_dict()["step"], before["step"])
    selector.train()
    assert set(selector.state_dict()) == {"step"}
    resumed = S4MCSelector(10)
    resumed.load_state_dict(before)
    for probs, valid in batches[3:]:
        assert torch.equal(resumed(probs, valid).mask, selector(probs, valid).mask)
    assert int(resumed.step) == int(selector.step) == 6


def test_agreement_is_a_buffer_that_moves_and_is_not_saved():
    selector = S4MCSelector(4, agreement=[0.9, 0.8, 0.95])
    assert selector.agreement.dtype == torch.float64 and "agreement" not in selector.state_dict()
    selector.to(torch.float32)
    assert selector.agreement.dtype == torch.float32
    probs, valid = _batch(4, k=3)
    sel = selector(probs, valid)
    expected = s4mc(probs, 60.0, agreement=[0.9, 0.8, 0.95], valid=valid)
    assert torch.equal(sel.mask, expected.mask)
    with pytest.raises(ValueError, match=r"agreement must have shape \(4,\) .*got \(3,\)"):
        selector(*_batch(5, k=4))


def test_hard_weighting_and_repr():
    selector = S4MCSelector(4, weighting="hard")
    sel = selector(*_batch(6))
    assert torch.equal(sel.weight, sel.mask.to(sel.weight.dtype))
    assert "total_steps=4" in repr(selector) and "connectivity=4" in repr(selector)


def test_forward_builds_no_graph():
    probs, valid = _batch(7)
    probs.requires_grad_(True)
    sel = S4MCSelector(4)(probs, valid)
    assert not any(field.requires_grad for field in sel)


@pytest.mark.parametrize(
    "options,error,match",
    [
        ({"total_steps": 0}, ValueError, "total_steps must be >= 1"),
        ({"total_steps": True}, TypeError, "total_steps must be an int"),
        ({"total_steps": 4, "steps_per_epoch": 0}, ValueError, "steps_per_epoch"),
        ({"total_steps": 4, "drop_percent": -1}, ValueError, "drop_percent"),
        ({"total_steps": 4, "indicator": "gap"}, ValueError, "indicator"),
        ({"total_steps": 4, "connectivity": 6}, ValueError, "connectivity"),
        ({"total_steps": 4, "num_neighbours": 9}, ValueError, "num_neighbours"),
        ({"total_steps": 4, "beta": -0.1}, ValueError, "beta"),
        ({"total_steps": 4, "agreement": [1.5]}, ValueError, "agreement"),
        ({"total_steps": 4, "agreement": "pascal"}, TypeError, "agreement"),
        ({"total_steps": 4, "momentum": 0.9}, TypeError, "unexpected keyword"),
    ],
)
def test_bad_constructor_arguments(options, error, match):
    with pytest.raises(error, match=match):
        S4MCSelector(**options)


def test_classification_input_is_refused():
    with pytest.raises(ValueError, match=r"dense input probs \(N, K, H, W\)"):
        S4MCSelector(4)(torch.tensor([[0.9, 0.1], [0.6, 0.4]]))
    with pytest.raises(ValueError, match="dense input"):
        pseudosel.select_reliable(torch.tensor([[0.9, 0.1]]), S4MCSelector(4))
