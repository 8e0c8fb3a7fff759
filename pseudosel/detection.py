"""Teacher detections as positions: one padded batch that every selector takes.

A detector returns a list with one entry per image, each with its own number of boxes
M_i. :func:`pad_detections` turns that list into

- ``scores`` (N, K, M): per-class scores of M box slots per image, so a box is a position
  and every selector of the registry applies unchanged (``select_reliable(batch.scores,
  "gmm", valid=batch.valid)``). A detector that gives one (score, label) per box after NMS
  (mmdet, detectron2, torchvision) is spread here, in one place: the box's label column
  holds its score, the others 0 — so max over dim 1 is the score and the arg-max the label
  (a box of score exactly 0 reads as class 0). Per-class scores (a sigmoid
  detector's (M_i, K) before NMS) are kept as they are.
- ``valid`` (N, M): False at the padding; ``boxes`` (N, M, 4) when given (0 at padding).

The scores are not a probability distribution over the classes: ``select_reliable`` takes
a :class:`DetectionBatch` itself without the value check; called on its ``scores``, or as
modules, the selectors need ``validate=False`` (the value check would refuse them).
:func:`unpad` gives the per-image results back. The ``from_*`` readers take the three
detector libraries' outputs without importing them (duck-typed on their attribute names);
docs/detection.md has the recipes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from pseudosel.selection import Selection
from pseudosel.validation import check_float_matrix, check_long

__all__ = [
    "DetectionBatch",
    "from_detectron2",
    "from_mmdet",
    "from_padded",
    "from_torchvision",
    "pad_detections",
    "unpad",
]


class DetectionBatch(NamedTuple):
    """A padded batch of detections (see the module docstring).

    Attributes:
        scores: (N, K, M) per-class box scores, 0 at padding.
        valid: bool (N, M), False at padding.
        boxes: (N, M, 4) box coordinates (0 at padding), or None when none were given.
    """

    scores: Tensor
    valid: Tensor
    boxes: Tensor | None


def _as_list(name: str, value: object) -> list:
    if isinstance(value, Tensor) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a list with one entry per image, got {type(value).__name__}"
        )
    return list(value)


def pad_detections(
    scores: Sequence[Tensor],
    labels: Sequence[Tensor] | None = None,
    boxes: Sequence[Tensor] | None = None,
    *,
    num_classes: int,
    max_boxes: int | None = None,
) -> DetectionBatch:
    """One padded :class:`DetectionBatch` from per-image detections.

    Args:
        scores: one tensor per image: (M_i,) box scores with ``labels``, or (M_i, K)
            per-class scores without them.
        labels: one long (M_i,) tensor of classes in [0, K) per image, or None.
        boxes: one (M_i, 4) tensor per image, or None.
        num_classes: K.
        max_boxes: M, the padded box count (default: the largest M_i). Give it under
            torch.distributed, where every rank must pass the same shape (e.g. the
            detector's ``max_per_img``); an image with more boxes is an error.

    Returns:
        :class:`DetectionBatch` on the device of the first image's scores (CPU for an
        empty list), scores in their dtype.

    Example:
        >>> import torch
        >>> from pseudosel.detection import pad_detections
        >>> batch = pad_detections([torch.tensor([0.9, 0.3]), torch.tensor([])],
        ...                        [torch.tensor([2, 0]), torch.tensor([], dtype=torch.long)],
        ...                        num_classes=3)
        >>> batch.scores.shape, batch.valid
        (torch.Size([2, 3, 2]), tensor([[ True,  True],
                [False, False]]))
        >>> batch.scores[0]
        tensor([[0.0000, 0.3000],
                [0.0000, 0.0000],
                [0.9000, 0.0000]])
    """
    scores = _as_list("scores", scores)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    labels = None if labels is None else _as_list("labels", labels)
    boxes = None if boxes is None else _as_list("boxes", boxes)
    for name, other in (("labels", labels), ("boxes", boxes)):
        if other is not None and len(other) != len(scores):
            raise ValueError(
                f"{name} must have one entry per image: {len(scores)} images of scores, "
                f"got {len(other)}"
            )
    counts = []
    for i, image in enumerate(scores):
        if not isinstance(image, Tensor) or not image.is_floating_point():
            got = image.dtype if isinstance(image, Tensor) else type(image).__name__
            raise TypeError(f"scores[{i}] must be a floating tensor, got {got}")
        per_class = labels is None
        expected = "(M, K) per-class scores (no labels given)" if per_class else "(M,) scores"
        if (per_class and (image.dim() != 2 or image.shape[1] != num_classes)) or (
            not per_class and image.dim() != 1
        ):
            raise ValueError(
                f"scores[{i}] must be {expected} with K={num_classes}, got shape "
                f"{tuple(image.shape)}"
            )
        counts.append(image.shape[0])
        if labels is not None:
            label = labels[i]
            check_long(f"labels[{i}]", label)
            if label.shape != image.shape:
                raise ValueError(
                    f"labels[{i}] must have the shape of scores[{i}] {tuple(image.shape)}, "
                    f"got {tuple(label.shape)}"
                )
            if len(label) and not bool(((label >= 0) & (label < num_classes)).all()):
                raise ValueError(f"labels[{i}] must hold classes in [0, {num_classes})")
        if boxes is not None and (boxes[i].dim() != 2 or tuple(boxes[i].shape) != (counts[-1], 4)):
            raise ValueError(
                f"boxes[{i}] must have shape ({counts[-1]}, 4), got {tuple(boxes[i].shape)}"
            )
    width = max(counts, default=0) if max_boxes is None else max_boxes
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"max_boxes must be an int >= 0, got {max_boxes!r}")
    for i, count in enumerate(counts):
        if count > width:
            raise ValueError(f"scores[{i}] has {count} boxes, more than max_boxes={width}")
    device = scores[0].device if scores else torch.device("cpu")
    dtype = scores[0].dtype if scores else torch.float32
    valid = torch.arange(width, device=device) < torch.tensor(counts, device=device).view(-1, 1)
    padded_boxes = None
    if boxes is not None:
        box_dtype = boxes[0].dtype if boxes else torch.float32
        padded_boxes = torch.zeros(len(scores), width, 4, dtype=box_dtype, device=device)
        for i, count in enumerate(counts):
            padded_boxes[i, :count] = boxes[i].to(device, box_dtype)
    if labels is None:  # per-class scores: kept as they are
        out = torch.zeros(len(scores), num_classes, width, dtype=dtype, device=device)
        for i, (image, count) in enumerate(zip(scores, counts, strict=True)):
            out[i, :, :count] = image.T.to(device, dtype)
        return DetectionBatch(out, valid.reshape(len(scores), width), padded_boxes)
    flat_scores = torch.zeros(len(scores), width, dtype=dtype, device=device)
    flat_labels = torch.zeros(len(scores), width, dtype=torch.long, device=device)
    for i, count in enumerate(counts):
        flat_scores[i, :count] = scores[i].to(device, dtype)
        flat_labels[i, :count] = labels[i].to(device)
    return from_padded(
        flat_scores, flat_labels, valid.reshape(len(scores), width), padded_boxes,
        num_classes=num_classes,
    )  # fmt: skip


def from_padded(
    scores: Tensor,
    labels: Tensor,
    valid: Tensor | None = None,
    boxes: Tensor | None = None,
    *,
    num_classes: int,
) -> DetectionBatch:
    """A :class:`DetectionBatch` from detections already padded to (N, M): one (score,
    label) per box slot, spread into (N, K, M) — the box's score in its label's column, 0
    in the others (the one place this conversion is made; :func:`pad_detections` uses it).

    Args:
        scores: floating (N, M) box scores.
        labels: long (N, M) classes in [0, K) at valid slots (any value at padding).
        valid: optional bool (N, M), False at padding (default: every slot).
        boxes: optional (N, M, 4).
        num_classes: K.

    Example:
        >>> import torch
        >>> from pseudosel.detection import from_padded
        >>> batch = from_padded(torch.tensor([[0.9, 0.4]]), torch.tensor([[1, 0]]),
        ...                     torch.tensor([[True, False]]), num_classes=2)
        >>> batch.scores
        tensor([[[0.0000, 0.0000],
                 [0.9000, 0.0000]]])
    """
    check_float_matrix("scores", scores, "(N, M) tensor")
    check_long("labels", labels)
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    if labels.shape != scores.shape or valid.shape != scores.shape:
        raise ValueError(
            f"labels and valid must have the shape of scores {tuple(scores.shape)}, got "
            f"{tuple(labels.shape)} and {tuple(valid.shape)}"
        )
    if boxes is not None and tuple(boxes.shape) != (*scores.shape, 4):
        raise ValueError(f"boxes must have shape {(*scores.shape, 4)}, got {tuple(boxes.shape)}")
    in_range = (labels >= 0) & (labels < num_classes)
    hint = f"labels must hold classes in [0, {num_classes}) at valid slots"
    if scores.device.type == "cpu":
        if not bool((in_range | ~valid).all()):
            raise ValueError(hint)
    else:  # a device-side assertion: no host synchronisation
        torch._assert_async((in_range | ~valid).all(), hint)
    label = torch.where(valid & in_range, labels, 0)
    value = torch.where(valid, scores, 0)
    spread = torch.zeros(
        scores.shape[0], num_classes, scores.shape[1], dtype=scores.dtype, device=scores.device
    )
    spread.scatter_(1, label.unsqueeze(1), value.unsqueeze(1))
    if boxes is not None:
        boxes = torch.where(valid.unsqueeze(-1), boxes, 0)
    return DetectionBatch(spread, valid, boxes)


def unpad(selection: Selection, batch: DetectionBatch) -> list[dict[str, Tensor]]:
    """Per-image results of a selection over a padded batch: for image i, its boxes'
    ``mask``, ``weight``, ``labels`` and ``score`` (the Selection's fields at the image's
    valid slots, in slot order), and the kept boxes' ``boxes`` (k, 4) when the batch has
    boxes.

    Indexes with the valid mask, so it reads it on the host (building per-image targets
    does anyway).

    Example:
        >>> import torch, pseudosel
        >>> from pseudosel.detection import pad_detections, unpad
        >>> batch = pad_detections([torch.tensor([0.9, 0.3]), torch.tensor([0.8])],
        ...                        [torch.tensor([1, 0]), torch.tensor([0])], num_classes=2)
        >>> sel = pseudosel.select_reliable(batch.scores, "threshold", tau=0.5,
        ...                                 valid=batch.valid, validate=False)
        >>> [int(image["mask"].sum()) for image in unpad(sel, batch)]  # kept per image
        [1, 1]
    """
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a pseudosel.Selection, got {type(selection).__name__}")
    if tuple(selection.mask.shape) != tuple(batch.valid.shape):
        raise ValueError(
            f"selection must be over the batch's boxes {tuple(batch.valid.shape)}, got "
            f"{tuple(selection.mask.shape)}"
        )
    images = []
    for i, slots in enumerate(batch.valid):  # padding anywhere in the row, not only at its end
        image = {
            field: getattr(selection, field)[i][slots]
            for field in ("mask", "weight", "labels", "score")
        }
        if batch.boxes is not None:
            image["boxes"] = batch.boxes[i][slots][image["mask"]]
        images.append(image)
    return images


def _column(items: list, name: str, what: str) -> list:
    """Field ``name`` of every image's result: a dict key or an attribute."""
    found = []
    for index, item in enumerate(items):
        if isinstance(item, Mapping) and name in item:
            found.append(item[name])
        elif not isinstance(item, Mapping) and hasattr(item, name):
            found.append(getattr(item, name))
        else:
            raise TypeError(f"{what}[{index}] has none of {name}")
    return found


def from_torchvision(
    outputs: Sequence[Mapping[str, Tensor]], *, num_classes: int, max_boxes: int | None = None
) -> DetectionBatch:
    """A :class:`DetectionBatch` from a torchvision detector's eval output: one dict per
    image with ``boxes`` (M, 4), ``scores`` (M,) and ``labels`` (M,). torchvision counts
    the background as class 0 in ``num_classes``: pass that same count (class 0 is then
    never predicted).

    Example:
        >>> import torch
        >>> from pseudosel.detection import from_torchvision
        >>> out = [{"boxes": torch.tensor([[0.0, 0, 5, 5]]), "scores": torch.tensor([0.8]),
        ...         "labels": torch.tensor([3])}]
        >>> from_torchvision(out, num_classes=4).scores[0, :, 0]
        tensor([0.0000, 0.0000, 0.0000, 0.8000])
    """
    outputs = _as_list("outputs", outputs)
    return pad_detections(
        _column(outputs, "scores", "outputs"),
        _column(outputs, "labels", "outputs"),
        _column(outputs, "boxes", "outputs"),
        num_classes=num_classes,
        max_boxes=max_boxes,
    )


def from_mmdet(
    results: Sequence[Any], *, num_classes: int, max_boxes: int | None = None
) -> DetectionBatch:
    """A :class:`DetectionBatch` from mmdet 3.x results: ``DetDataSample``s (their
    ``pred_instances``) or ``InstanceData`` with ``scores``, ``labels`` and ``bboxes``.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> from pseudosel.detection import from_mmdet
        >>> instances = SimpleNamespace(scores=torch.tensor([0.7, 0.2]),
        ...     labels=torch.tensor([0, 1]), bboxes=torch.zeros(2, 4))
        >>> from_mmdet([SimpleNamespace(pred_instances=instances)], num_classes=2).valid
        tensor([[True, True]])
    """
    results = _as_list("results", results)
    found = [getattr(r, "pred_instances", r) for r in results]
    return pad_detections(
        _column(found, "scores", "results"),
        _column(found, "labels", "results"),
        _column(found, "bboxes", "results"),
        num_classes=num_classes,
        max_boxes=max_boxes,
    )


def from_detectron2(
    results: Sequence[Any], *, num_classes: int, max_boxes: int | None = None
) -> DetectionBatch:
    """A :class:`DetectionBatch` from detectron2's outputs: one dict per image with
    ``instances`` (or the ``Instances`` themselves), holding ``scores``, ``pred_classes``
    and ``pred_boxes`` (a ``Boxes``: its ``tensor`` is read).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> from pseudosel.detection import from_detectron2
        >>> instances = SimpleNamespace(scores=torch.tensor([0.9]),
        ...     pred_classes=torch.tensor([1]),
        ...     pred_boxes=SimpleNamespace(tensor=torch.zeros(1, 4)))
        >>> from_detectron2([{"instances": instances}], num_classes=2).scores[0, :, 0]
        tensor([0.0000, 0.9000])
    """
    results = _as_list("results", results)
    found = [r["instances"] if isinstance(r, Mapping) else r for r in results]
    return pad_detections(
        _column(found, "scores", "results"),
        _column(found, "pred_classes", "results"),
        [getattr(b, "tensor", b) for b in _column(found, "pred_boxes", "results")],
        num_classes=num_classes,
        max_boxes=max_boxes,
    )
