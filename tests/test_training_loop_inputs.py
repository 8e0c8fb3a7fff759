"""What a real training loop feeds selectors: tensors that require grad, and non-finite
values (padding, ignore regions) at ignored positions. Every selector of the zoo, many steps.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from helpers.probability_maps import smooth_maps
from helpers.selector_zoo import CASES, case_batch, outputs_of, state_of


def _inputs(case, step: int, device):
    return case_batch(case, step, size=(6, 7), valid_seed=100 + step, device=device)


def _graph_size(tensor: torch.Tensor) -> int:
    """Number of autograd nodes reachable from ``tensor`` (0 without a graph)."""
    seen, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_grad_requiring_inputs_build_no_graph(case, device):
    """Outputs never require grad, state never carries history, and nothing accumulates."""
    steps = 2 if case.convex else 30
    module, step = case.build(5, device=device)
    logits = torch.zeros(1, device=device, requires_grad=True)  # a "network parameter"
    step_inputs = []
    for i in range(steps):
        probs, valid = _inputs(case, i, device)
        probs = (probs.log() + logits).softmax(1)  # requires grad, like a real forward
        assert probs.requires_grad
        result = step(probs, valid)
        for out in outputs_of(result):
            assert not out.requires_grad, f"{case.name}: an output requires grad at step {i}"
            assert out.grad_fn is None
        for value in state_of(module, step):
            assert value.grad_fn is None and not value.requires_grad, (
                f"{case.name}: state carries an autograd graph at step {i} "
                f"({_graph_size(value)} nodes)"
            )
        # memory does not grow: once the loop drops its step, nothing of it stays alive
        step_inputs.append(weakref.ref(probs))
        del probs, result
    gc.collect()  # once: per step it would dominate the test's time
    alive = sum(ref() is not None for ref in step_inputs)
    assert alive == 0, f"{case.name} keeps {alive} of {steps} steps' inputs alive"


@pytest.mark.parametrize("case", [c for c in CASES if not c.convex], ids=lambda c: c.name)
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_at_ignored_positions_never_reach_state(case, poison, device):
    """NaN/±Inf only where valid is False: outputs and state equal the run where those
    positions hold ordinary probabilities, over several steps."""
    clean_module, clean_step = case.build(5, device=device)
    dirty_module, dirty_step = case.build(5, device=device)
    for i in range(6):
        probs, valid = _inputs(case, i, device)
        poisoned = probs.clone()
        poisoned.movedim(1, -1)[~valid] = poison
        clean = outputs_of(clean_step(probs, valid))
        dirty = outputs_of(dirty_step(poisoned, valid))
        for a, b in zip(clean, dirty, strict=True):
            if a.dim() == probs.dim():  # aligned probabilities: compare valid positions
                a, b = a.movedim(1, -1)[valid], b.movedim(1, -1)[valid]
            elif a.shape == valid.shape and a.dtype != torch.bool:
                a, b = a[valid], b[valid]  # labels/weights/scores: valid positions
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"{case.name} step {i}")
        clean_state = state_of(clean_module, clean_step)
        for a, b in zip(clean_state, state_of(dirty_module, dirty_step), strict=True):
            if b.is_floating_point():
                assert torch.isfinite(b).all(), f"{case.name}: non-finite state at step {i}"
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"{case.name} state step {i}")


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("kind", ["F.adamatch", "AdaMatchSelector", "DistributionAlignment"])
def test_non_finite_values_at_ignored_labeled_positions_stay_out(kind, poison, device):
    """The labelled batch (AdaMatch's cutoff, alignment's target='model') has ignore
    regions too: poison there changes nothing."""
    import pseudosel
    import pseudosel.functional as F

    align = {
        tag: pseudosel.DistributionAlignment(4, momentum=0.5, target="model").to(device)
        for tag in "cd"
    }
    for i in range(4):
        probs = smooth_maps(2, 4, 5, 5, seed=i).to(device)
        labeled = smooth_maps(3, 4, 5, 5, seed=50 + i).to(device)
        valid_lb = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(i)) < 0.6
        valid_lb = valid_lb.to(device)
        poisoned = labeled.clone()
        poisoned.movedim(1, -1)[~valid_lb] = poison
        outputs = {}
        for tag, lb in (("c", labeled), ("d", poisoned)):
            if kind == "F.adamatch":
                outputs[tag] = F.adamatch(probs, lb, 0.7, valid_labeled=valid_lb).mask
            elif kind == "AdaMatchSelector":
                outputs[tag] = pseudosel.AdaMatchSelector(0.7)(probs, lb, None, valid_lb).mask
            else:
                outputs[tag] = align[tag](probs, lb, valid_labeled=valid_lb)
                assert torch.isfinite(align[tag].p_target).all()
        torch.testing.assert_close(outputs["d"], outputs["c"], rtol=0, atol=0)
    if kind == "DistributionAlignment":
        torch.testing.assert_close(align["d"].p_target, align["c"].p_target, rtol=0, atol=0)
