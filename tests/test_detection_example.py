"""The detection example: digit-mosaic detection data, the CenterNet targets and decoding,
the pseudo-box quality, COCO mAP through pycocotools, the teacher–student trainer with every
selector of its runs, and the detection comparison (examples/detection_comparison.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import detection_comparison  # noqa: E402
import train_teacher_detection as detection  # noqa: E402
from detection_data import CANVAS, INK, detection_data, make_detection_mosaics  # noqa: E402
from digits_data import digit_splits  # noqa: E402

import pseudosel  # noqa: E402

pytestmark = pytest.mark.slow

TINY = dict(epochs=2, warmup_epochs=1, labelled=8, unlabelled=32, test=8, batch=16)


def test_boxes_are_tight_around_each_digits_ink_and_never_overlap():
    pool = digit_splits(seed=0).unlabelled
    data = make_detection_mosaics(40, pool, seed=3)
    again = make_detection_mosaics(40, pool, seed=3)
    assert torch.equal(data.images, again.images)
    counted = 0
    for image, boxes, labels in zip(data.images, data.boxes, data.labels, strict=True):
        assert len(boxes) == len(labels) and 1 <= len(boxes) <= 4
        assert ((labels >= 0) & (labels < 10)).all()
        ink = torch.zeros(CANVAS, CANVAS, dtype=torch.bool)
        for x1, y1, x2, y2 in boxes.long().tolist():
            assert 0 <= x1 < x2 <= CANVAS and 0 <= y1 < y2 <= CANVAS
            inside = image[0, y1:y2, x1:x2] > INK
            # tight: ink on every edge row and column of the box
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
            assert not ink[y1:y2, x1:x2].any()  # boxes are disjoint
            ink[y1:y2, x1:x2] = True
            counted += 1
        assert not (image[0] > INK)[~ink].any()  # no ink outside the boxes
    assert counted > 60


def test_the_three_sets_come_from_disjoint_digit_pools():
    labelled, unlabelled, test = detection_data(1, 10, 8, 16, 8)
    assert (len(labelled), len(unlabelled), len(test)) == (8, 16, 8)
    splits = digit_splits(labels_per_class=10, seed=1)
    pools = [splits.labelled[0], splits.unlabelled[0], splits.test[0]]
    flat = [p.flatten(1) for p in pools]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not (torch.cdist(flat[i], flat[j]) == 0).any()


def perfect_outputs(targets: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network outputs that reproduce the targets exactly (heatmap logits from the peaks)."""
    heat = targets["heat"].clamp(1e-6, 1 - 1e-6)
    return heat.logit(), targets["size"], targets["offset"]


def test_decoding_perfect_outputs_gives_the_true_boxes_back():
    data = make_detection_mosaics(12, digit_splits(seed=0).test, seed=5)
    scores, labels, boxes = detection.decode(
        perfect_outputs(detection.encode(data.boxes, data.labels))
    )
    for i, (true_boxes, true_labels) in enumerate(zip(data.boxes, data.labels, strict=True)):
        top = scores[i] > 0.999
        assert int(top.sum()) == len(true_boxes)
        iou = detection.box_iou(boxes[i][top], true_boxes)
        best = iou.max(1)
        assert (best.values > 0.999).all()
        assert torch.equal(labels[i][top], true_labels[best.indices])


def test_coco_map_is_one_for_perfect_detections_and_lower_for_shifted_ones(monkeypatch):
    test = make_detection_mosaics(10, digit_splits(seed=0).test, seed=6)
    targets = detection.encode(test.boxes, test.labels)

    class Perfect(torch.nn.Module):
        def __init__(self, shift: float) -> None:
            super().__init__()
            self.shift = shift

        def forward(self, images):
            heat, size, offset = perfect_outputs(targets)
            return heat, size, offset + self.shift

    map_all, map_50 = detection.coco_map(Perfect(0.0), test, "cpu")
    assert map_all == pytest.approx(1.0, abs=1e-6) and map_50 == pytest.approx(1.0, abs=1e-6)
    shifted_all, _ = detection.coco_map(Perfect(0.6), test, "cpu")
    assert 0.0 < shifted_all < 0.9  # boxes off by 2.4 pixels miss the strict IoU levels


def test_box_quality_counts_right_boxes_once():
    from pseudosel.detection import pad_detections

    truths = make_detection_mosaics(1, digit_splits(seed=0).test, fill=(2, 2), seed=7)
    true_boxes, true_labels = truths.boxes[0], truths.labels[0]
    # the two true boxes, one of them twice (the second copy scores lower), and a wrong class
    boxes = torch.cat([true_boxes, true_boxes[:1], true_boxes[1:]])
    labels = torch.cat([true_labels, true_labels[:1], (true_labels[1:] + 1) % 10])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    batch = pad_detections([scores], [labels], [boxes], num_classes=10, max_boxes=6)
    selection = pseudosel.select_reliable(
        batch.scores, "threshold", tau=0.65, valid=batch.valid, validate=False
    )
    quality = detection.BoxQuality()
    quality.update(batch, selection, truths)
    record = quality.record()
    assert record["precision"] == pytest.approx(2 / 3)  # the copy finds its box taken
    assert record["recall"] == 1.0 and record["ratio"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("run", list(detection.RUNS))
def test_every_run_trains_and_is_reproducible(tmp_path, run):
    history = detection.train(run, out=tmp_path / run, progress=False, **TINY)
    assert len(history) == 2
    record = json.loads((tmp_path / run / "epochs.json").read_text())
    assert record["setting"]["selector"] == run
    for row in history:
        assert math.isfinite(row["loss"])
        assert 0 <= row["test_map"] <= row["test_map50"] <= 1
    if run != "supervised":
        last = history[-1]
        assert 0 <= last["ratio"] <= 1 and 0 <= last["recall"] <= 1
        assert last["precision"] is None or 0 <= last["precision"] <= 1
    assert detection.train(run, progress=False, **TINY) == history


def test_the_supervised_epochs_are_paired_across_runs():
    options = dict(TINY, epochs=1, seed=4)
    runs = [
        detection.train(name, progress=False, **options) for name in ("supervised", "gmm", "csl")
    ]
    assert runs[0] == runs[1] == runs[2]


def test_the_comparison_reports_paired_differences_and_resumes(tmp_path, monkeypatch):
    calls: list = []

    def fake_train(selector, *, seed, device, out, progress, **options):
        calls.append((selector, seed))
        value = {"supervised": 0.5, "threshold@0.7": 0.6, "gmm": 0.65}.get(selector, 0.55)
        return [{"epoch": 1, "test_map50": value + 0.01 * seed, "test_map": value / 2,
                 "precision": 0.9, "recall": 0.3, "ratio": 0.1, "loss": 1.0}]  # fmt: skip

    monkeypatch.setattr(detection, "train", fake_train)
    lines: list = []
    out = tmp_path / "detection"
    detection_comparison.run_comparison(3, out, False, "cpu", fresh=False, log=lines.append)
    assert len(calls) == 3 * len(detection.RUNS) and len(lines) == len(calls)
    summary = (out / "summary.md").read_text()
    assert "— complete" in summary
    assert "| gmm | 3 | +0.050 | [+0.050, +0.050] | better |" in summary
    assert "| supervised | 3 | -0.100 | [-0.100, -0.100] | worse |" in summary
    data = json.loads((out / "results.json").read_text())
    assert data["paired"]["test_map50"]["gmm"]["verdict"] == "better"
    calls.clear()
    detection_comparison.run_comparison(3, out, False, "cpu", fresh=False, log=lines.append)
    assert calls == []  # everything loaded


def test_the_comparison_quick_mode_runs_for_real(tmp_path):
    out = tmp_path / "quick"
    assert detection_comparison.main(["--quick", "--jobs", "1", "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    for name in detection_comparison.QUICK_RUNS:
        assert f"| {name} | 1 |" in summary
