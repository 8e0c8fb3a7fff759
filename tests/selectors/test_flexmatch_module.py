"""FlexMatchSelector as a module: the sample positions it needs, and eval mode."""

from __future__ import annotations

import pytest
import torch
from helpers.sequences import cls_batches

import pseudosel


def probs(n=4, k=5):
    return torch.full((n, k), 1.0 / k)


def test_flexmatch_eval_mode_selects_without_recording():
    selector = pseudosel.FlexMatchSelector(6, 40)
    selector(cls_batches()[5], index=torch.arange(24))
    state = {k: v.clone() for k, v in selector.state_dict().items()}
    selector.eval()
    selector(cls_batches()[6], index=torch.arange(24))
    for key, value in selector.state_dict().items():
        assert torch.equal(value, state[key])


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
