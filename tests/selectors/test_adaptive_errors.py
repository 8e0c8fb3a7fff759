"""Bad inputs to the adaptive selectors raise named errors."""

from __future__ import annotations

import pytest
import torch

import pseudosel
import pseudosel.functional as F


def probs(n=4, k=5):
    return torch.full((n, k), 1.0 / k)


@pytest.mark.parametrize(
    "make",
    [
        lambda: pseudosel.FlexMatchSelector(6),
        lambda: pseudosel.FreeMatchSelector(6),
        lambda: pseudosel.SoftMatchSelector(6),
        lambda: pseudosel.DistributionAlignment(6),
    ],
)
def test_class_count_mismatch(make):
    with pytest.raises(ValueError, match=r"probs has 5 classes at dim 1 .*num_classes=6"):
        make()(probs())


def test_constructor_errors():
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        pseudosel.FreeMatchSelector(1)
    with pytest.raises(TypeError, match="num_classes must be an int, got float"):
        pseudosel.SoftMatchSelector(3.0)
    with pytest.raises(ValueError, match="num_unlabeled must be >= 1, got 0"):
        pseudosel.FlexMatchSelector(3, 0)
    with pytest.raises(ValueError, match="mapping must be one of 'convex', 'linear', 'concave'"):
        pseudosel.FlexMatchSelector(3, mapping="log")
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        pseudosel.FreeMatchSelector(3, momentum=1.5)
    with pytest.raises(ValueError, match=r"n_sigma must be in \(0, inf\)"):
        pseudosel.SoftMatchSelector(3, n_sigma=0)
    with pytest.raises(ValueError, match=r"rho_init must be in \(0, inf\)"):
        pseudosel.DashSelector(0.0, update_every=5)
    with pytest.raises(ValueError, match="update_every must be >= 1, got 0"):
        pseudosel.DashSelector(1.0, update_every=0)
    with pytest.raises(TypeError):
        pseudosel.DashSelector(1.0)  # update_every is required
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        pseudosel.EntropySplitSelector(0)
    with pytest.raises(ValueError, match=r"alpha0 must be in \[0, 1\]"):
        pseudosel.EntropySplitSelector(10, alpha0=20)
    with pytest.raises(ValueError, match=r"target must be a floating-point \(3,\) probab"):
        pseudosel.DistributionAlignment(3, target=torch.ones(4))
    with pytest.raises(TypeError, match=r"target must be None, 'model' or a \(3,\) probab"):
        pseudosel.DistributionAlignment(3, target=[0.2, 0.3, 0.5])


def test_call_errors():
    with pytest.raises(ValueError, match="probs_labeled must have the 5 classes of probs"):
        pseudosel.AdaMatchSelector()(probs(), probs(k=4))
    with pytest.raises(ValueError, match="probs_labeled is required in training mode"):
        pseudosel.DistributionAlignment(5, target="model")(probs())
    with pytest.raises(ValueError, match=r"unreliable must be in \[0, 1\]"):
        F.entropy_split(probs(), 1.5)
    with pytest.raises(ValueError, match="from_logits=True"):
        pseudosel.FreeMatchSelector(5)(torch.randn(4, 5))
