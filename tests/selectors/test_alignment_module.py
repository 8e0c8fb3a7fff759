"""DistributionAlignment as a module: a given target must be a probability distribution."""

from __future__ import annotations

import pytest
import torch

import pseudosel


@pytest.mark.parametrize(
    "target",
    [[0.5, 0.6, 0.2], [1.2, -0.1, -0.1], [0.5, float("nan"), 0.5], [0.2, 0.2, 0.2]],
)
def test_alignment_target_must_be_a_distribution(target):
    with pytest.raises(ValueError, match="target must be a probability distribution .* got"):
        pseudosel.DistributionAlignment(3, target=torch.tensor(target))
    # a real distribution is accepted and gives non-negative aligned probabilities
    align = pseudosel.DistributionAlignment(3, target=torch.tensor([0.2, 0.3, 0.5]))
    assert (align(torch.full((4, 3), 1.0 / 3)) >= 0).all()
