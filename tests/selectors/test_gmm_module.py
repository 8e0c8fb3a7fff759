"""GMMThresholdSelector against Consistent-Teacher's ``extract_teacher_info`` (per-image
cut, score queues, scikit-learn's GMM per class, the per-box filter) over several training
steps on the same detections; eval mode, the options, bad arguments."""

from __future__ import annotations

import pytest
import torch
from helpers.consistent_teacher import published_teacher_step

import pseudosel
from pseudosel.detection import pad_detections


def detection_steps(steps: int, classes: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        counts = torch.randint(0, 30, (4,), generator=gen).tolist()
        scores, labels = [], []
        for n in counts:
            high = torch.rand(n, generator=gen) < 0.4
            s = torch.where(
                high, 0.6 + 0.4 * torch.rand(n, generator=gen), 0.3 * torch.rand(n, generator=gen)
            )
            scores.append(s.clamp_min(1e-4))
            labels.append(torch.randint(0, classes, (n,), generator=gen))
        yield scores, labels


@pytest.mark.parametrize("policy", ["high", "middle"])
@pytest.mark.parametrize("dynamic_ratio", [1.0, 0.5])
def test_training_steps_equal_the_published_code(policy, dynamic_ratio):
    classes, length = 4, 40
    selector = pseudosel.GMMThresholdSelector(
        classes, num_scores=length, policy=policy, total_score_ratio=dynamic_ratio, validate=False
    )
    queue = torch.zeros(classes, length)
    for scores, labels in detection_steps(8, classes, seed=1):
        batch = pad_detections(scores, labels, num_classes=classes, max_boxes=30)
        sel = selector(batch.scores, valid=batch.valid)
        queue, want = published_teacher_step(
            queue, scores, labels, dynamic_ratio=dynamic_ratio, policy=policy
        )
        assert torch.equal(selector.scores, queue)
        for i, mask in enumerate(want):
            assert torch.equal(sel.mask[i, : len(mask)], mask), i
            assert not sel.mask[i, len(mask) :].any()


def test_eval_mode_selects_with_the_stored_thresholds():
    selector = pseudosel.GMMThresholdSelector(3, num_scores=30, validate=False)
    steps = list(detection_steps(3, 3, seed=2))
    for scores, labels in steps:
        batch = pad_detections(scores, labels, num_classes=3, max_boxes=30)
        selector(batch.scores, valid=batch.valid)
    queues, thresholds = selector.scores.clone(), selector.thresholds.clone()
    selector.eval()
    batch = pad_detections(*steps[0], num_classes=3, max_boxes=30)
    sel = selector(batch.scores, valid=batch.valid)
    assert torch.equal(selector.scores, queues) and torch.equal(selector.thresholds, thresholds)
    confidence, labels = batch.scores.max(1)
    assert not (sel.mask & ~(confidence > thresholds[labels])).any()


def test_without_the_cut_every_box_above_its_threshold_is_kept():
    selector = pseudosel.GMMThresholdSelector(
        2, num_scores=50, total_score_ratio=None, fallback=0.5, validate=False
    )
    scores, labels = next(detection_steps(1, 2, seed=3))
    batch = pad_detections(scores, labels, num_classes=2, max_boxes=30)
    sel = selector(batch.scores, valid=batch.valid)
    confidence, label = batch.scores.max(1)
    assert torch.equal(sel.mask, batch.valid & (confidence > selector.thresholds[label]))
    selector.reset_running_stats()
    assert not selector.scores.any() and (selector.thresholds == 0.5).all()


def test_classification_and_dense_inputs():
    selector = pseudosel.GMMThresholdSelector(5, num_scores=16)
    probs = torch.randn(32, 5).mul(3).softmax(1)
    assert selector(probs).mask.shape == (32,)
    assert selector(torch.randn(2, 5, 6, 6).softmax(1)).mask.shape == (2, 6, 6)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"num_scores": 0}, ValueError, "num_scores must be >= 1, got 0"),
        ({"policy": "low"}, ValueError, "policy must be one of 'high', 'middle', got 'low'"),
        ({"total_score_ratio": -1.0}, ValueError, r"total_score_ratio must be in \[0, inf\)"),
        ({"fallback": float("nan")}, ValueError, "fallback must be in"),
        ({"max_iter": 1.5}, TypeError, "max_iter must be an int"),
        ({"colour": "red"}, TypeError, r"unexpected keyword arguments \['colour'\]"),
    ],
)
def test_bad_arguments_are_named(options, error, match):
    with pytest.raises(error, match=match):
        pseudosel.GMMThresholdSelector(3, **options)
