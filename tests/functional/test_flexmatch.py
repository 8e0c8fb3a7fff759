"""FlexMatch's curriculum thresholds against the literal float64 reference
(helpers/adaptive_reference.py), over multi-step sequences, per sample and class-wise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.adaptive_reference import RefFlexMatch
from helpers.sequences import cls_batches, dense_batches, masked, numpy_of, rows

import pseudosel


@pytest.mark.parametrize("warmup", [True, False])
@pytest.mark.parametrize("mapping", ["convex", "linear", "concave"])
def test_flexmatch_per_sample_matches_reference(warmup, mapping, device):
    num_unlabeled, k = 40, 6
    selector = pseudosel.FlexMatchSelector(
        k, num_unlabeled, tau=0.9, warmup=warmup, mapping=mapping
    ).to(device, torch.float64)
    ref = RefFlexMatch(k, num_unlabeled, tau=0.9, warmup=warmup, mapping=mapping)
    gen = torch.Generator().manual_seed(1)
    for t, probs in enumerate(cls_batches(device=device)):
        index = torch.randint(0, num_unlabeled, (len(probs),), generator=gen)  # duplicates too
        sel = selector(probs, index=index.to(device))
        expected = ref.step(numpy_of(probs), index.numpy())
        np.testing.assert_array_equal(numpy_of(sel.mask), expected, err_msg=f"step {t}")
        assert selector.selected_label.tolist() == ref.selected_label
        np.testing.assert_allclose(numpy_of(selector.classwise_acc), ref.classwise_acc, rtol=1e-15)
        # incremental counts equal a full recount at every step
        recount = torch.bincount(selector.selected_label + 1, minlength=k + 1)
        assert selector.counts.tolist() == recount[1:].tolist() + [recount[0].item()]
        assert selector.counts.tolist() == ref.counts()
    assert (selector.selected_label >= 0).sum() > 10  # the curriculum actually moved


def test_flexmatch_first_step_passes_everything_and_records_with_fixed_tau(device):
    selector = pseudosel.FlexMatchSelector(3, 4, tau=0.95).to(device)
    probs = torch.tensor(
        [[0.4, 0.3, 0.3], [0.96, 0.02, 0.02], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]], device=device
    )
    sel = selector(probs, index=torch.arange(4, device=device))
    assert sel.mask.all()  # β = 0 → T(k) = 0: the published early behaviour
    # only the sample above the FIXED τ = 0.95 is recorded, not those above their T(k) = 0
    assert selector.selected_label.tolist() == [-1, 0, -1, -1]
    # counts: σ = (1, 0, 0), unused 3 → warm-up β = σ / max(1, 3)
    assert selector.counts.tolist() == [1, 0, 0, 3]
    torch.testing.assert_close(selector.classwise_acc.cpu(), torch.tensor([1 / 3, 0.0, 0.0]))
    torch.testing.assert_close(selector.thresholds().cpu(), 0.95 * torch.tensor([0.2, 0.0, 0.0]))


def test_flexmatch_classwise_dense_matches_reference(device):
    selector = pseudosel.FlexMatchSelector(5, tau=0.8).to(device, torch.float64)
    ref = RefFlexMatch(5, None, tau=0.8)
    for probs, valid in dense_batches(device=device):
        sel = selector(probs, valid=valid)
        expected = ref.step(rows(probs, valid))
        np.testing.assert_array_equal(masked(sel.mask, valid), expected)
        assert not sel.mask[~valid].any()
        assert selector.counts.tolist() == ref.counts()
        np.testing.assert_allclose(numpy_of(selector.classwise_acc), ref.classwise_acc, rtol=1e-15)
