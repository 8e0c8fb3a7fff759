"""nn.Module selectors: same results as the functionals, options checked at construction."""

from __future__ import annotations

import pytest
import torch
from helpers.probability_maps import smooth_maps

import pseudosel
import pseudosel.functional as F


def test_modules_equal_functionals():
    probs = smooth_maps(2, 5, 9, 9, seed=3)
    valid = torch.rand(2, 9, 9, generator=torch.Generator().manual_seed(0)) > 0.2
    pairs = [
        (pseudosel.ThresholdSelector(0.8)(probs, valid), F.threshold(probs, 0.8, valid=valid)),
        (
            pseudosel.CSLSelector(alpha=8.0, residual="reference")(probs, valid),
            F.csl(probs, alpha=8.0, residual="reference", valid=valid),
        ),
    ]
    for module_result, functional_result in pairs:
        for a, b in zip(module_result, functional_result, strict=True):
            assert torch.equal(a, b)


def test_modules_check_options_at_construction():
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\], got 2"):
        pseudosel.ThresholdSelector(2)
    with pytest.raises(ValueError, match="cluster_rule must be one of"):
        pseudosel.CSLSelector(cluster_rule="max")
    with pytest.raises(TypeError):
        pseudosel.CSLSelector(2.0)  # options are keyword-only


def test_modules_are_stateless_and_printable():
    selector = pseudosel.CSLSelector(scope="batch")
    assert selector.state_dict() == {}
    assert "scope='batch'" in repr(selector) and "alpha=2.0" in repr(selector)
    assert selector.options["scope"] == "batch"
    assert "tau=0.95" in repr(pseudosel.ThresholdSelector())


def test_module_validate_switch():
    logits = torch.randn(4, 3) * 5
    with pytest.raises(ValueError):
        pseudosel.CSLSelector()(logits)
    pseudosel.CSLSelector(validate=False)(logits.softmax(1))
    pseudosel.ThresholdSelector(validate=False)(logits)  # no check, no error
