"""Teacher–student semi-supervised detection on digit mosaics, with any pseudosel selector.

Data: 40x40 canvases with 1-4 real scikit-learn digits at scales 1.5-2.5 (12-20 pixels),
one box per digit, ten classes (``detection_data``). The labelled budget is
``labels_per_class`` digits per class (default 10: with 4 the supervised detector reaches
mAP@0.5 of only about 0.3, its scores too low for any fixed threshold to keep much): the
``labelled`` canvases (64) hold only those 100 digits, the ``unlabelled`` ones (384) the
other training digits (boxes hidden from training, used only to measure the pseudo-boxes),
the ``test`` ones (192) held-out digits.

Detector: a small anchor-free CenterNet (stride 4: a 10x10 map of per-class center
heatmaps, box sizes and center offsets), focal loss on the heatmap and L1 on size and
offset at the centers. Decoding keeps each class's local maxima (3x3), the 20 best per
image, and drops scores below 0.05 — the teacher's detections after NMS, one (score,
label, box) each, as mmdet, detectron2 and torchvision give them.

Each semi-supervised step (Unbiased / Soft / Consistent Teacher): the teacher — an EMA of
the student (decay ``ema``, 0.99), started from the student at the end of the supervised
``warmup_epochs`` — detects on the unlabelled canvases; the detections go through
:func:`pseudosel.detection.pad_detections` and the selector; the kept boxes become the
student's targets on a strong photometric view of the same canvases (geometry unchanged),
each box's heatmap peak and regression weighted by its selection weight. With
``"dual_threshold"`` the uncertain boxes train the heatmap only, toward the teacher's score
(Efficient Teacher's objectness-only boxes). Loss = L_sup + ``unsup_weight`` · L_unsup
(2.0, Consistent Teacher's). Test mAP@0.5 and mAP@[0.5:0.95] of the teacher by pycocotools'
COCOeval, every epoch.

    python examples/train_teacher_detection.py --selector gmm --seed 0 \\
        --out results/teacher_detection
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detection_data import CANVAS, NUM_CLASSES, Detections, detection_data  # noqa: E402
from run_reports import write_run  # noqa: E402
from views import strong_mosaic  # noqa: E402

import pseudosel  # noqa: E402
from pseudosel.detection import pad_detections  # noqa: E402
from pseudosel.functional import uncertain_positions  # noqa: E402
from pseudosel.registry import build_selector, selector_spec  # noqa: E402

STRIDE = 4
TOP_K, SCORE_FLOOR = 20, 0.05  # detections kept per image, as a detector's test config
EPOCHS, WARMUP_EPOCHS = 36, 12
#: the selectors of the detection comparison and their options (the run name is the key)
RUNS = {
    "supervised": (None, {}),
    "threshold@0.5": ("threshold", {"tau": 0.5}),
    "threshold@0.7": ("threshold", {"tau": 0.7}),
    "threshold@0.9": ("threshold", {"tau": 0.9}),
    "gmm": ("gmm", {}),
    # Dense Teacher's share, set here to the share of real objects among the 20 kept boxes
    # per image (about 2.5 digits of 20)
    "top_ratio": ("top_ratio", {"ratio": 0.125}),
    "dual_threshold": ("dual_threshold", {"low": 0.1, "high": 0.6}),
    "freematch": ("freematch", {}),
    "csl": ("csl", {}),
}


def _block(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(),
    )


class CenterNet(nn.Module):
    """(n, 1, S, S) → heatmap logits (n, K, S/4, S/4), sizes and offsets (n, 2, S/4, S/4)
    in cells (sizes: box width and height / 4; offsets: the center's position in its cell)."""

    def __init__(self, width: int = 32, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _block(1, width // 2),
            _block(width // 2, width, stride=2),
            _block(width, width),
            _block(width, 2 * width, stride=2),
            _block(2 * width, 2 * width),
            _block(2 * width, 2 * width),
        )
        self.heat = nn.Sequential(_block(2 * width, width), nn.Conv2d(width, num_classes, 1))
        self.size = nn.Sequential(_block(2 * width, width), nn.Conv2d(width, 2, 1))
        self.offset = nn.Sequential(_block(2 * width, width), nn.Conv2d(width, 2, 1))
        nn.init.constant_(self.heat[-1].bias, -2.19)  # CenterNet: initial score 0.1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.heat(features), self.size(features), self.offset(features)


def encode(
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    weights: list[torch.Tensor] | None = None,
    peaks: list[torch.Tensor] | None = None,
    cells: int = CANVAS // STRIDE,
) -> dict[str, torch.Tensor]:
    """CenterNet targets of a batch: per box a Gaussian on its class's heatmap centred on
    its cell (peak 1, or ``peaks`` — a soft target that is no positive), its size and
    offset at that cell; ``weights`` scale each box's positive and regression terms."""
    n = len(boxes)
    heat = torch.zeros(n, NUM_CLASSES, cells, cells)
    positive = torch.zeros(n, NUM_CLASSES, cells, cells)
    size = torch.zeros(n, 2, cells, cells)
    offset = torch.zeros(n, 2, cells, cells)
    regress = torch.zeros(n, 1, cells, cells)
    grid = torch.arange(cells, dtype=torch.float32)
    for i in range(n):
        for j in range(len(boxes[i])):
            x1, y1, x2, y2 = boxes[i][j].tolist()
            label = int(labels[i][j])
            weight = 1.0 if weights is None else float(weights[i][j])
            peak = 1.0 if peaks is None else float(peaks[i][j])
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            col, row = min(int(cx), cells - 1), min(int(cy), cells - 1)
            w, h = (x2 - x1) / STRIDE, (y2 - y1) / STRIDE
            sigma = max(w, h) / 6 + 0.25
            blob = torch.exp(
                -((grid.view(1, -1) - col) ** 2 + (grid.view(-1, 1) - row) ** 2) / (2 * sigma**2)
            )
            heat[i, label] = torch.maximum(heat[i, label], peak * blob)
            if peak == 1.0:
                positive[i, label, row, col] = max(float(positive[i, label, row, col]), weight)
                size[i, :, row, col] = torch.tensor([w, h])
                offset[i, :, row, col] = torch.tensor([cx - col, cy - row])
                regress[i, 0, row, col] = weight
    return {"heat": heat, "positive": positive, "size": size, "offset": offset, "regress": regress}


def detection_loss(outputs, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on the heatmap, normalised by the positives'
    weight (at least one per image), plus L1 on sizes (×0.1) and offsets at the centres."""
    heat_logits, size, offset = outputs
    device = heat_logits.device
    t = {key: value.to(device) for key, value in targets.items()}
    p = heat_logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    is_positive = t["positive"] > 0
    positive = -(p.log() * (1 - p) ** 2 * t["positive"]).sum()
    negative = (1 - p).log() * p**2 * (1 - t["heat"]) ** 4 * ~is_positive
    if "background" in t:  # Soft Teacher: background trusted as much as the teacher does
        negative = negative * t["background"]
    negative = -negative.sum()
    # CenterNet divides by the positives; at least one per image, so that a batch of
    # pseudo-labels with few boxes kept does not blow up its negatives
    count = t["positive"].sum().clamp_min(float(len(heat_logits)))
    regress = t["regress"]
    l1 = (regress * ((size - t["size"]).abs() * 0.1 + (offset - t["offset"]).abs())).sum()
    return (positive + negative) / count + l1 / regress.sum().clamp_min(1.0)


@torch.no_grad()
def decode(outputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``TOP_K`` best local maxima per image: scores, labels (n, TOP_K) and boxes
    (n, TOP_K, 4) in pixels."""
    heat_logits, size, offset = outputs
    heat = heat_logits.sigmoid()
    peaks = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
    heat = heat * peaks
    n, _, cells, _ = heat.shape
    scores, index = heat.flatten(1).topk(TOP_K, dim=1)
    labels = index // (cells * cells)
    cell = index % (cells * cells)
    row, col = cell // cells, cell % cells
    w = size[:, 0].flatten(1).gather(1, cell).clamp_min(0) * STRIDE
    h = size[:, 1].flatten(1).gather(1, cell).clamp_min(0) * STRIDE
    cx = (col + offset[:, 0].flatten(1).gather(1, cell)) * STRIDE
    cy = (row + offset[:, 1].flatten(1).gather(1, cell)) * STRIDE
    boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)
    return scores, labels, boxes


def teacher_detections(outputs):
    """Per-image lists of the teacher's detections above the score floor (a detector's
    test-time output, from its raw ``outputs``), padded into one batch by pseudosel."""
    scores, labels, boxes = decode(outputs)
    keep = scores >= SCORE_FLOOR
    per_image = [
        (s[k], lab[k], b[k]) for s, lab, b, k in zip(scores, labels, boxes, keep, strict=True)
    ]
    return pad_detections(
        [s for s, _, _ in per_image],
        [lab for _, lab, _ in per_image],
        [b for _, _, b in per_image],
        num_classes=NUM_CLASSES,
        max_boxes=TOP_K,
    )


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(m, n) IoU of xyxy boxes."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp_min(0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp_min(1e-9)


class BoxQuality:
    """The kept pseudo-boxes against the hidden true boxes over an epoch: a kept box is
    right when a true box of its class has IoU >= 0.5 with it (each true box matched
    once, best score first)."""

    def __init__(self) -> None:
        self.kept = self.right = self.found = self.truths = self.valid = 0
        self.weight = 0.0

    def update(self, batch, selection, truths: Detections) -> None:
        for i, (true_boxes, true_labels) in enumerate(
            zip(truths.boxes, truths.labels, strict=True)
        ):
            valid = batch.valid[i]
            mask = selection.mask[i] & valid
            self.valid += int(valid.sum())
            self.weight += float(selection.weight[i][valid].sum())
            self.truths += len(true_boxes)
            kept = int(mask.sum())
            self.kept += kept
            if kept == 0 or len(true_boxes) == 0:
                continue
            boxes = batch.boxes[i][mask]
            labels, scores = selection.labels[i][mask], batch.scores[i].amax(0)[mask]
            iou = box_iou(boxes, true_boxes) * (labels[:, None] == true_labels[None, :])
            used = torch.zeros(len(true_boxes), dtype=torch.bool)
            for j in scores.argsort(descending=True).tolist():
                candidates = torch.where(used, 0.0, iou[j])
                best = int(candidates.argmax())
                if candidates[best] >= 0.5:
                    used[best] = True
                    self.right += 1
            self.found += int(used.sum())

    def record(self) -> dict:
        return {
            "precision": self.right / self.kept if self.kept else None,
            "recall": self.found / self.truths if self.truths else None,
            "ratio": self.kept / self.valid if self.valid else 0.0,
            "mean_weight": self.weight / self.valid if self.valid else 0.0,
        }


def coco_map(model: nn.Module, test: Detections, device: str) -> tuple[float, float]:
    """(mAP@[0.5:0.95], mAP@0.5) of ``model`` on ``test`` by pycocotools' COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    was_training = model.training
    model.eval()
    with torch.no_grad():
        scores, labels, boxes = decode(model(test.images.to(device)))
    model.train(was_training)
    images, annotations, detections = [], [], []
    for i, (true_boxes, true_labels) in enumerate(zip(test.boxes, test.labels, strict=True)):
        images.append({"id": i, "width": CANVAS, "height": CANVAS})
        for box, label in zip(true_boxes.tolist(), true_labels.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": label,
                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0,
            })  # fmt: skip
        for s, lab, box in zip(
            scores[i].tolist(), labels[i].tolist(), boxes[i].tolist(), strict=True
        ):
            if s >= SCORE_FLOOR:
                detections.append({
                    "image_id": i, "category_id": lab, "score": s,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                })  # fmt: skip
    if not detections:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k, "name": str(k)} for k in range(NUM_CLASSES)],
        }
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0]), float(evaluation.stats[1])


def box_selector(name: str | None, options: dict, device: str):
    """``select(batch) -> (Selection, uncertain or None)`` for a registered selector by
    name, on box scores (not a distribution: ``validate=False``), or None (supervised)."""
    if name is None:
        return None
    spec = selector_spec(name)
    if spec.stateful:
        module = build_selector(name, NUM_CLASSES, validate=False, **options).to(device)

        def select(batch):
            return spec.step(module, batch.scores, batch.valid), None

        return select

    def select_stateless(batch):
        selection = pseudosel.select_reliable(
            batch.scores, name, valid=batch.valid, validate=False, **options
        )
        if name == "dual_threshold":
            return selection, uncertain_positions(selection, options.get("low", 0.1))
        return selection, None

    return select_stateless


def pseudo_targets(batch, selection, uncertain) -> dict[str, torch.Tensor]:
    """The student's targets from the kept boxes (weight = selection weight) and, for dual
    thresholds, the uncertain boxes as soft heatmap peaks (their score)."""
    boxes, labels, weights, peaks = [], [], [], []
    for i in range(len(batch.valid)):
        keep = selection.mask[i] | (selection.weight[i] > 0)
        soft = torch.zeros_like(keep) if uncertain is None else uncertain[i] & ~keep
        chosen = keep | soft
        boxes.append(batch.boxes[i][chosen].cpu())
        labels.append(selection.labels[i][chosen].cpu())
        weights.append(selection.weight[i][chosen].cpu())
        score = batch.scores[i].amax(0)[chosen].cpu()
        peaks.append(torch.where(soft[chosen].cpu(), score, 1.0))
    return encode(boxes, labels, weights, peaks)


def train(
    selector: str = "gmm",
    *,
    seed: int = 0,
    epochs: int = EPOCHS,
    warmup_epochs: int = WARMUP_EPOCHS,
    labels_per_class: int = 10,
    labelled: int = 64,
    unlabelled: int = 384,
    test: int = 192,
    batch: int = 32,
    labelled_batch: int = 16,
    lr: float = 2e-3,
    ema: float = 0.99,
    unsup_weight: float = 2.0,
    soft_background: bool = True,
    device: str = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train one run (``selector``: a key of :data:`RUNS`); return the per-epoch records
    (test mAP of the teacher, and after the warm-up the pseudo-boxes' precision, recall,
    share kept and mean weight against the hidden boxes)."""
    if selector not in RUNS:
        raise ValueError(f"unknown run {selector!r}; choose from {', '.join(RUNS)}")
    torch.manual_seed(seed)
    order_gen = torch.Generator().manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    data_l, data_u, data_t = detection_data(seed, labels_per_class, labelled, unlabelled, test)
    model = CenterNet().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    name, options = RUNS[selector]
    select = box_selector(name, options, device)
    steps = max(1, len(data_u) // batch)
    history = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=epochs * steps, desc=f"detection/{selector}/seed{seed}", leave=False)
    for epoch in range(epochs):
        if epoch == warmup_epochs:  # Unbiased Teacher: the teacher starts from the student
            teacher.load_state_dict(model.state_dict())
        semi = select is not None and epoch >= warmup_epochs
        quality = BoxQuality()
        order = torch.randperm(len(data_u), generator=order_gen)
        losses = []
        for step in range(steps):
            pick = torch.randint(0, len(data_l), (labelled_batch,), generator=order_gen)
            labelled_part = data_l.subset(pick)
            images_l = strong_mosaic(labelled_part.images, gen).to(device)
            loss = detection_loss(
                model(images_l), encode(labelled_part.boxes, labelled_part.labels)
            )
            if semi:
                part = data_u.subset(order[step * batch : (step + 1) * batch])
                with torch.no_grad():
                    teacher_out = teacher(part.images.to(device))
                detections = teacher_detections(teacher_out)
                selection, uncertain = select(detections)
                quality.update(detections, selection, part)
                strong = strong_mosaic(part.images, gen).to(device)
                targets = pseudo_targets(detections, selection, uncertain)
                if soft_background:
                    targets["background"] = 1 - teacher_out[0].sigmoid()
                loss = loss + unsup_weight * detection_loss(model(strong), targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if epoch >= warmup_epochs:
                update_teacher(teacher, model, ema)
            losses.append(loss.item())
            if bar is not None:
                bar.update()
        evaluated = teacher if epoch >= warmup_epochs else model
        map_all, map_50 = coco_map(evaluated, data_t, device)
        record = {
            "epoch": epoch + 1,
            "test_map50": map_50,
            "test_map": map_all,
            "loss": sum(losses) / len(losses),
        }
        if semi:
            record.update(quality.record())
        history.append(record)
    if bar is not None:
        bar.close()
    if out is not None:
        setting = {
            "task": "teacher_detection",
            "selector": selector,
            "seed": seed,
            "epochs": epochs,
            "warmup_epochs": warmup_epochs,
            "labelled": labelled,
            "unlabelled": unlabelled,
            "test": test,
            "canvas": CANVAS,
            "labels_per_class": labels_per_class,
            "ema": ema,
            "unsup_weight": unsup_weight,
            "soft_background": soft_background,
            "options": options,
        }
        write_run(out, setting, history, "test_map50")
    return history


@torch.no_grad()
def update_teacher(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher ← decay · teacher + (1 − decay) · student, batch-norm statistics likewise."""
    for kept, new in zip(teacher.parameters(), student.parameters(), strict=True):
        kept.lerp_(new, 1 - decay)
    for kept, new in zip(teacher.buffers(), student.buffers(), strict=True):
        if kept.is_floating_point():
            kept.lerp_(new, 1 - decay)
        else:
            kept.copy_(new)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--selector", default="gmm", choices=list(RUNS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--warmup-epochs", type=int, default=WARMUP_EPOCHS)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("results/teacher_detection"))
    args = parser.parse_args(argv)
    history = train(
        args.selector,
        seed=args.seed,
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        labels_per_class=args.labels_per_class,
        device=args.device,
        out=args.out / args.selector / f"seed{args.seed}",
    )
    print(json.dumps(history[-1], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
