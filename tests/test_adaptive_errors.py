"""Bad inputs to the adaptive selectors raise named errors."""

from __future__ import annotations

import pytest
import torch

import pseudosel
import pseudosel.functional as F


def probs(n=4, k=5):
    return torch.full((n, k), 1.0 / k)


def test_flexmatch_index_errors():
    selector = pseudosel.FlexMatchSelector(5, 10)
    with pytest.raises(ValueError, match=r"index .* is required.*num_unlabeled=10"):
        selector(probs())
    with pytest.raises(ValueError, match=r"index must lie in \[0, 10\).*from 0 to 12"):
        selector(probs(), index=torch.tensor([0, 1, 2, 12]))
    with pytest.raises(ValueError, match=r"index must lie in \[0, 10\).*from -1"):
        selector(probs(), index=torch.tensor([-1, 1, 2, 3]))
    with pytest.raises(TypeError, match="index must be a torch.long tensor, got torch.int32"):
        selector(probs(), index=torch.arange(4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"index must have shape \(4,\)"):
        selector(probs(), index=torch.arange(3))
    with pytest.raises(ValueError, match=r"per-sample FlexMatch takes \(N, K\) probs"):
        selector(torch.full((2, 5, 3, 3), 0.2), index=torch.arange(2))
    with pytest.raises(ValueError, match="index was given but this FlexMatchSelector is class"):
        pseudosel.FlexMatchSelector(5)(probs(), index=torch.arange(4))


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


@pytest.mark.parametrize(
    "target",
    [[0.5, 0.6, 0.2], [1.2, -0.1, -0.1], [0.5, float("nan"), 0.5], [0.2, 0.2, 0.2]],
)
def test_alignment_target_must_be_a_distribution(target):
    with pytest.raises(ValueError, match="target must be a probability distribution .* got"):
        pseudosel.DistributionAlignment(3, target=torch.tensor(target))
    # a real distribution is accepted and gives non-negative aligned probabilities
    align = pseudosel.DistributionAlignment(3, target=torch.tensor([0.2, 0.3, 0.5]))
    assert (align(probs(k=3)) >= 0).all()


def test_flexmatch_eval_mode_needs_no_index():
    selector = pseudosel.FlexMatchSelector(5, 10)
    trained = selector(probs(), index=torch.arange(4))
    selector.eval()
    before = {name: value.clone() for name, value in selector.state_dict().items()}
    frozen = selector(probs())  # no index: selecting only
    assert torch.equal(frozen.mask, trained.mask)
    for name, value in selector.state_dict().items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(ValueError, match=r"index .* is required"):
        selector.update(probs())  # recording always needs the positions


def test_call_errors():
    with pytest.raises(ValueError, match="probs_labeled must have the 5 classes of probs"):
        pseudosel.AdaMatchSelector()(probs(), probs(k=4))
    with pytest.raises(ValueError, match="probs_labeled is required in training mode"):
        pseudosel.DistributionAlignment(5, target="model")(probs())
    with pytest.raises(ValueError, match=r"unreliable must be in \[0, 1\]"):
        F.entropy_split(probs(), 1.5)
    with pytest.raises(ValueError, match="from_logits=True"):
        pseudosel.FreeMatchSelector(5)(torch.randn(4, 5))
