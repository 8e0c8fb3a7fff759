"""pseudosel.detection: per-image detections to one padded batch and back, the three
detector libraries' output forms (duck-typed stand-ins of their documented attributes), and
every selector of the registry on boxes — empty images, all-padding batches, NaN at
padding and classes never predicted included."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.selector_zoo import CASES

import pseudosel
import pseudosel.detection
from pseudosel.detection import (
    from_detectron2,
    from_mmdet,
    from_torchvision,
    pad_detections,
    unpad,
)
from pseudosel.registry import selector_spec


def detections(counts, classes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scores = [torch.rand(n, generator=gen) for n in counts]
    labels = [torch.randint(0, classes, (n,), generator=gen) for n in counts]
    boxes = [torch.rand(n, 4, generator=gen) * 50 for n in counts]
    return scores, labels, boxes


def test_pad_spreads_each_box_into_its_label_column():
    scores, labels, boxes = detections([3, 0, 5], classes=4)
    batch = pad_detections(scores, labels, boxes, num_classes=4)
    assert batch.scores.shape == (3, 4, 5) and batch.valid.shape == (3, 5)
    assert batch.valid.sum(1).tolist() == [3, 0, 5]
    for i, (s, lab, b) in enumerate(zip(scores, labels, boxes, strict=True)):
        n = len(s)
        confidence, label = batch.scores[i, :, :n].max(0)
        assert torch.equal(confidence, s) and torch.equal(label, lab)
        assert (batch.scores[i, :, :n] > 0).sum(0).le(1).all()  # one non-zero per box
        assert torch.equal(batch.boxes[i, :n], b)
        assert not batch.scores[i, :, n:].any() and not batch.boxes[i, n:].any()


def test_per_class_scores_are_kept_as_they_are():
    per_class = [torch.rand(4, 3), torch.rand(2, 3)]
    batch = pad_detections(per_class, num_classes=3, max_boxes=6)
    assert batch.scores.shape == (2, 3, 6) and batch.boxes is None
    assert torch.equal(batch.scores[0, :, :4], per_class[0].T)
    assert torch.equal(batch.scores[1, :, :2], per_class[1].T)


def test_empty_lists_and_empty_images():
    batch = pad_detections([], [], num_classes=3)
    assert batch.scores.shape == (0, 3, 0) and batch.valid.shape == (0, 0)
    empty = pad_detections([torch.zeros(0)] * 2, [torch.zeros(0, dtype=torch.long)] * 2,
                           num_classes=3)  # fmt: skip
    assert empty.scores.shape == (2, 3, 0)
    padded = pad_detections([torch.zeros(0)], [torch.zeros(0, dtype=torch.long)],
                            num_classes=3, max_boxes=4)  # fmt: skip
    assert padded.valid.shape == (1, 4) and not padded.valid.any()


def test_unpad_returns_each_images_boxes():
    scores, labels, boxes = detections([4, 0, 2], classes=3, seed=1)
    batch = pad_detections(scores, labels, boxes, num_classes=3, max_boxes=6)
    sel = pseudosel.select_reliable(
        batch.scores, "threshold", tau=0.5, valid=batch.valid, validate=False
    )
    images = unpad(sel, batch)
    assert len(images) == 3
    for image, s, lab, b in zip(images, scores, labels, boxes, strict=True):
        assert torch.equal(image["mask"], s >= 0.5)
        assert torch.equal(image["labels"][image["mask"]], lab[s >= 0.5])
        assert torch.equal(image["boxes"], b[s >= 0.5])


def test_the_three_libraries_outputs_give_the_same_batch():
    scores, labels, boxes = detections([3, 1], classes=5, seed=2)
    want = pad_detections(scores, labels, boxes, num_classes=5)
    torchvision_out = [
        {"boxes": b, "scores": s, "labels": lab}
        for s, lab, b in zip(scores, labels, boxes, strict=True)
    ]
    mmdet_out = [
        SimpleNamespace(pred_instances=SimpleNamespace(scores=s, labels=lab, bboxes=b))
        for s, lab, b in zip(scores, labels, boxes, strict=True)
    ]
    mmdet_instances = [m.pred_instances for m in mmdet_out]
    detectron2_out = [
        {"instances": SimpleNamespace(scores=s, pred_classes=lab,
                                      pred_boxes=SimpleNamespace(tensor=b))}
        for s, lab, b in zip(scores, labels, boxes, strict=True)
    ]  # fmt: skip
    for got in (
        from_torchvision(torchvision_out, num_classes=5),
        from_mmdet(mmdet_out, num_classes=5),
        from_mmdet(mmdet_instances, num_classes=5),
        from_detectron2(detectron2_out, num_classes=5),
        from_detectron2([d["instances"] for d in detectron2_out], num_classes=5),
    ):
        for field in ("scores", "valid", "boxes"):
            assert torch.equal(getattr(got, field), getattr(want, field)), field


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: pad_detections(torch.rand(2, 3), num_classes=3), TypeError,
         "scores must be a list with one entry per image, got Tensor"),
        (lambda: pad_detections([torch.rand(3)], num_classes=3), ValueError,
         r"scores\[0\] must be \(M, K\) per-class scores \(no labels given\) with K=3, got "
         r"shape \(3,\)"),
        (lambda: pad_detections([torch.rand(3)], [torch.zeros(3)], num_classes=3), TypeError,
         r"labels\[0\] must be a long tensor, got torch.float32"),
        (lambda: pad_detections([torch.rand(3)], [torch.zeros(2, dtype=torch.long)],
                                num_classes=3), ValueError,
         r"labels\[0\] must have the shape of scores\[0\] \(3,\), got \(2,\)"),
        (lambda: pad_detections([torch.rand(3)], [torch.full((3,), 3)], num_classes=3),
         ValueError, r"labels\[0\] must hold classes in \[0, 3\)"),
        (lambda: pad_detections([torch.rand(3)], [torch.zeros(3, dtype=torch.long)],
                                num_classes=3, max_boxes=2), ValueError,
         r"scores\[0\] has 3 boxes, more than max_boxes=2"),
        (lambda: pad_detections([torch.rand(3)], [torch.zeros(3, dtype=torch.long)], [],
                                num_classes=3), ValueError,
         "boxes must have one entry per image: 1 images of scores, got 0"),
        (lambda: from_torchvision([{"scores": torch.rand(1)}], num_classes=2), TypeError,
         r"outputs\[0\] has none of labels"),
    ],
)  # fmt: skip
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------ every selector on boxes


def box_batch(classes: int, seed: int, dtype=torch.float32):
    """A softmax detector's class probabilities for 3 images (0, 7 and 12 boxes) padded to
    12, NaN at the padding; class 0 is never the top class (a background-like class)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, classes, 12, generator=gen, dtype=torch.float64) * 3
    logits[:, 0] -= 20
    probs = logits.softmax(1).to(dtype)
    valid = torch.arange(12) < torch.tensor([0, 7, 12]).unsqueeze(1)
    return torch.where(valid.unsqueeze(1), probs, float("nan")), valid


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.dense and not c.convex], ids=lambda c: c.name
)
def test_every_dense_selector_takes_a_padded_box_batch(case):
    module, step = case.build(5)
    for seed in range(3):
        probs, valid = box_batch(5, seed)
        result = step(probs, valid)
        if isinstance(result, pseudosel.Selection):
            assert result.mask.shape == valid.shape
            assert not (result.mask & ~valid).any() and not (result.weight[~valid] != 0).any()
            assert torch.isfinite(result.weight).all() and torch.isfinite(result.score).all()
        else:  # the alignment transforms: aligned probabilities
            assert torch.isfinite(result[valid.unsqueeze(1).expand_as(result)]).all()


def test_an_all_padding_batch_selects_nothing():
    probs, valid = box_batch(4, 0)
    nothing = torch.zeros_like(valid)
    for method in pseudosel.available_selectors(stateful=False):
        if selector_spec(method).requires or selector_spec(method).needs:
            continue  # the convex solver; a selector that needs the labelled batch
        sel = pseudosel.select_reliable(probs, method, valid=nothing)
        assert not sel.mask.any() and not sel.weight.any(), method
    selector = pseudosel.GMMThresholdSelector(4, num_scores=10)
    assert not selector(probs, valid=nothing).mask.any()
    assert not selector.scores.any()


def test_the_detection_page_runs():
    """docs/detection.md's code blocks, run in order in one namespace."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "detection.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/detection.md", "exec"), namespace)
    assert namespace["objectness_loss"].isfinite()


def test_one_call_from_a_detectors_output_to_pseudo_boxes():
    scores, labels, boxes = detections([3, 0, 4], classes=4, seed=5)
    outputs = [
        {"boxes": b, "scores": s, "labels": lab}
        for s, lab, b in zip(scores, labels, boxes, strict=True)
    ]
    batch = from_torchvision(outputs, num_classes=4)
    sel = pseudosel.select_reliable(batch, "threshold", tau=0.5)
    assert torch.equal(sel.mask, batch.valid & (batch.scores.amax(1) >= 0.5))
    assert sel.valid.equal(batch.valid)
    gmm = pseudosel.GMMThresholdSelector(4, num_scores=10, validate=False)
    assert pseudosel.select_reliable(batch, gmm).mask.shape == batch.valid.shape
    with pytest.raises(ValueError, match="DetectionBatch, which carries its own valid mask"):
        pseudosel.select_reliable(batch, "threshold", valid=batch.valid)


def test_from_padded_is_the_one_spread_of_score_and_label():
    gen = torch.Generator().manual_seed(8)
    scores = torch.rand(3, 5, generator=gen)
    labels = torch.randint(0, 4, (3, 5), generator=gen)
    valid = torch.rand(3, 5, generator=gen) < 0.7
    batch = pseudosel.detection.from_padded(
        scores, torch.where(valid, labels, -1), valid, num_classes=4
    )
    confidence, label = batch.scores.max(1)
    assert torch.equal(confidence, torch.where(valid, scores, 0))
    assert torch.equal(label[valid], labels[valid])
    assert batch.valid.equal(valid) and batch.boxes is None
    lists = pad_detections(
        [s[v] for s, v in zip(scores, valid, strict=True)],
        [lab[v] for lab, v in zip(labels, valid, strict=True)],
        num_classes=4,
    )
    # the same boxes, packed to the front of each image
    for i in range(3):
        n = int(valid[i].sum())
        assert torch.equal(lists.scores[i, :, :n], batch.scores[i][:, valid[i]])
    with pytest.raises(ValueError, match=r"labels must hold classes in \[0, 4\) at valid"):
        pseudosel.detection.from_padded(scores, labels + 1, num_classes=4)
    with pytest.raises(TypeError, match="labels must be a long tensor, got torch.float32"):
        pseudosel.detection.from_padded(scores, labels.float(), num_classes=4)


def test_unpad_follows_the_valid_mask_wherever_the_padding_is():
    scores = torch.tensor([[0.0, 0.9, 0.8], [0.7, 0.0, 0.6]])
    labels = torch.tensor([[0, 1, 2], [2, 0, 1]])
    valid = torch.tensor([[False, True, True], [True, False, True]])
    boxes = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    batch = pseudosel.detection.from_padded(scores, labels, valid, boxes, num_classes=3)
    sel = pseudosel.select_reliable(batch, "threshold", tau=0.65)
    images = unpad(sel, batch)
    assert images[0]["score"].tolist() == pytest.approx([0.9, 0.8])
    assert images[0]["labels"].tolist() == [1, 2]
    assert images[0]["mask"].tolist() == [True, True]
    assert torch.equal(images[0]["boxes"], boxes[0, 1:])
    assert images[1]["mask"].tolist() == [True, False]
    assert torch.equal(images[1]["boxes"], boxes[1, :1])


def spread_box_batch(classes: int, seed: int):
    """(score, label) detections of 3 images (0, 5 and 9 boxes) padded to 9 slots — the
    form docs/detection.md gives post-NMS detections; class 0 never predicted."""
    gen = torch.Generator().manual_seed(seed)
    counts = (0, 5, 9)
    scores = [torch.rand(n, generator=gen) * 0.95 + 0.05 for n in counts]
    labels = [torch.randint(1, classes, (n,), generator=gen) for n in counts]
    return pad_detections(scores, labels, num_classes=classes, max_boxes=9)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.dense and not c.convex], ids=lambda c: c.name
)
def test_every_dense_selector_takes_score_and_label_boxes(case):
    module, step = case.build(5, validate=False)
    for seed in range(3):
        batch = spread_box_batch(5, seed)
        result = step(batch.scores, batch.valid)
        if isinstance(result, pseudosel.Selection):
            assert result.mask.shape == batch.valid.shape
            assert not (result.mask & ~batch.valid).any()
            assert not result.weight[~batch.valid].any()
            assert torch.isfinite(result.weight).all() and torch.isfinite(result.score).all()
            kept = result.mask & batch.valid
            assert torch.equal(result.labels[kept], batch.scores.argmax(1)[kept])
        else:  # the alignment transforms: aligned probabilities
            assert torch.isfinite(result[batch.valid.unsqueeze(1).expand_as(result)]).all()
