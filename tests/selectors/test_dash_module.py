"""DashSelector as a module: eval mode keeps ρ and the phase; no graph, no host sync."""

from __future__ import annotations

import torch
from helpers.host_sync_guard import forbid_host_sync
from helpers.sequences import cls_batches

import pseudosel
import pseudosel.functional as F


def test_dash_eval_mode_keeps_state_and_phase():
    selector = pseudosel.DashSelector(1.0, update_every=1, gamma=4.0)
    for probs in cls_batches(steps=4):
        selector(probs.float())
    assert bool(selector.use_hard_labels)  # 4th update: 1.0001 / 4³ < 0.05
    state = {k: v.clone() for k, v in selector.state_dict().items()}
    selector.eval()
    probs = cls_batches(steps=5)[4].float()
    sel = selector(probs)
    expected = F.dash_select(probs, selector.rho, valid=sel.valid, use_hard_labels=True)
    assert torch.equal(sel.mask, expected.mask) and torch.equal(sel.score, expected.score)
    for key, value in selector.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert "T=0.5, hard_labels=False" in repr(selector)


def test_dash_builds_no_graph_and_does_not_sync():
    selector = pseudosel.DashSelector(1.0, update_every=2, validate=False)
    logits = torch.randn(16, 5, requires_grad=True)
    with forbid_host_sync():
        for _ in range(3):
            sel = selector(logits.softmax(1))
        direct = F.dash_select(
            logits.softmax(1),
            selector.rho,
            valid=sel.valid,
            use_hard_labels=selector.use_hard_labels,
            validate=False,  # value checks read the host on a CPU (device-side elsewhere)
        )
    assert not sel.score.requires_grad and not sel.weight.requires_grad
    assert not direct.score.requires_grad
    assert all(b.grad_fn is None for b in selector.buffers())
    assert int(selector.step) == 3 and int(selector.update_count) == 2
