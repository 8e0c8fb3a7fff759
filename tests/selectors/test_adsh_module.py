"""AdshSelector as a module: equal to the functional stages (record, calibrate, select)."""

from __future__ import annotations

import torch
from helpers.sequences import imbalanced_set

import pseudosel
import pseudosel.functional as F


def test_adsh_module_equals_functional():
    data = imbalanced_set(50, 4, 2).float()
    selector = pseudosel.AdshSelector(4, 50)
    selector.update(data, torch.arange(50))
    selector.calibrate()
    conf, labels = data.max(1)
    state = F.adsh_calibrate(conf, labels, F.adsh_init(4))
    assert torch.equal(selector.s, state.s)
    valid = torch.ones(50, dtype=torch.bool)
    for a, b in zip(selector(data), F.adsh_select(data, state, valid=valid), strict=True):
        assert torch.equal(a, b)
