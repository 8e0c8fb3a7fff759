"""Selection metrics: hand computations, AUROC against scikit-learn, accumulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import pseudosel
from pseudosel import Selection
from pseudosel.metrics import SelectionStats, as_log_dict, auroc, selection_quality


def hand_selection():
    # 6 positions; the last is ignored by the selection, the fifth has no true label
    labels = torch.tensor([0, 1, 1, 0, 2, 1])
    weight = torch.tensor([1.0, 1.0, 0.5, 0.25, 1.0, 0.0])
    mask = weight == 1
    score = torch.tensor([3.0, 2.0, -1.0, -2.0, 1.0, 0.0])
    valid = torch.tensor([True, True, True, True, True, False])
    target = torch.tensor([0, 0, 1, 0, 255, 1])
    return Selection(labels, weight, mask, score, valid), target


def test_selection_quality_by_hand():
    sel, target = hand_selection()
    q = selection_quality(sel, target, num_classes=3)
    # valid: 5; selected: positions 0, 1, 4 → ratio 3/5; weights sum 3.75 → mean 0.75
    assert q["ratio"].item() == pytest.approx(3 / 5)
    assert q["mean_weight"].item() == pytest.approx(3.75 / 5)
    # known (valid, target != 255): 0, 1, 2, 3; correct: 0, 2, 3; selected known: 0, 1
    assert q["precision"].item() == pytest.approx(1 / 2)
    assert q["weighted_precision"].item() == pytest.approx((1 + 0.5 + 0.25) / 2.75)
    assert q["recall"].item() == pytest.approx(1 / 3)
    assert q["accuracy"].item() == pytest.approx(3 / 4)
    # scores: correct {3, -1, -2}, wrong {2}: pairs (3 > 2) only → 1 / 3
    assert q["auroc"].item() == pytest.approx(1 / 3)
    # per class (pseudo-label): class 0 has positions 0, 3 → 1 selected; class 1: 1, 2 → 1;
    # class 2: 4 → 1
    assert q["accepted"].tolist() == [1.0, 1.0, 1.0]
    assert q["acceptance"].tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_ratio_matches_selection_ratio():
    sel = pseudosel.select_reliable(torch.randn(3, 4, 6, 6).softmax(1))
    assert selection_quality(sel)["ratio"].item() == pytest.approx(sel.ratio().item())
    assert "precision" not in selection_quality(sel)


def test_auroc_equals_sklearn_on_random_data():
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        n = int(torch.randint(5, 300, (1,), generator=gen))
        score = torch.randn(n, generator=gen)
        if trial % 3 == 0:
            score = score.round()  # many ties
        positive = torch.rand(n, generator=gen) < 0.6
        include = torch.rand(n, generator=gen) < 0.8
        keep = include.numpy()
        if positive[include].all() or not positive[include].any():
            continue
        expected = roc_auc_score(positive.numpy()[keep], score.numpy()[keep])
        assert auroc(score, positive, include).item() == pytest.approx(expected, abs=1e-12)


def test_auroc_is_half_when_undefined():
    assert (
        auroc(torch.rand(5), torch.ones(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool))
        == 0.5
    )


def test_stats_accumulate_like_one_big_batch():
    gen = torch.Generator().manual_seed(1)
    probs = torch.randn(40, 5, generator=gen).mul(2).softmax(1)
    target = torch.where(
        torch.rand(40, generator=gen) < 0.7,
        probs.argmax(1),
        torch.randint(0, 5, (40,), generator=gen),
    )
    stats = SelectionStats(num_classes=5, bins=65536)
    for chunk in range(4):
        part = slice(10 * chunk, 10 * chunk + 10)
        stats.update(pseudosel.select_reliable(probs[part], "threshold", tau=0.6), target[part])
    whole = selection_quality(
        pseudosel.select_reliable(probs, "threshold", tau=0.6), target, num_classes=5
    )
    result = stats.compute()
    for key in (
        "ratio",
        "mean_weight",
        "precision",
        "weighted_precision",
        "recall",
        "accuracy",
        "accepted",
        "acceptance",
    ):
        torch.testing.assert_close(result[key], whole[key], msg=key)
    assert abs(result["auroc"].item() - whole["auroc"].item()) < 1e-3  # binned AUROC
    stats.reset()
    assert stats.counts.sum() == 0 and stats.compute()["ratio"] == 0


def test_module_forward_returns_the_batch_and_state_is_checkpointable():
    sel, target = hand_selection()
    stats = SelectionStats(num_classes=3)
    batch = stats(sel, target)
    assert batch["precision"].item() == pytest.approx(0.5)
    fresh = SelectionStats(num_classes=3)
    fresh.load_state_dict(stats.state_dict())
    assert fresh.compute()["recall"].item() == pytest.approx(1 / 3)


def test_as_log_dict_flattens():
    sel, target = hand_selection()
    logged = as_log_dict(selection_quality(sel, target, num_classes=3), prefix="u/")
    assert logged["u/precision"].dim() == 0 and "u/acceptance/2" in logged
    assert all(v.dtype == torch.float32 for v in logged.values())


def test_metric_errors():
    sel, target = hand_selection()
    with pytest.raises(ValueError, match=r"target must have the selection's shape \(6,\)"):
        selection_quality(sel, target[:3])
    with pytest.raises(TypeError, match="target must be an integer tensor"):
        selection_quality(sel, target.float())
    with pytest.raises(TypeError, match="selection must be a pseudosel.Selection"):
        selection_quality(tuple(sel), target)
    assert np.isfinite([v.numpy() for v in selection_quality(sel, target).values()][0])
