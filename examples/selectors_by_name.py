"""Selectors by name for the example trainers — every one goes through pseudosel only.

``build(name, ...)`` returns a function ``(probs, index=None, probs_labeled=None,
ignore_mask=None) -> Selection`` (or None for the supervised-only baseline), calling
``pseudosel.select_reliable`` with a selector module, so swapping selectors is one word.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import pseudosel

SELECTORS = (
    "supervised",
    "threshold",
    "flexmatch",
    "freematch",
    "softmatch",
    "adamatch",
    "corrmatch",
    "adsh",
    "precision_target",
    "csl",
    "csl_max_margin",
)

Select = Callable[..., pseudosel.Selection]
#: the precision-targeted selector's target (precision >= 1 - ε with probability 1 - δ)
PRECISION_EPSILON, PRECISION_DELTA = 0.2, 0.1


def build(
    name: str,
    num_classes: int,
    *,
    num_unlabeled: int | None = None,
    dense: bool = False,
    tau: float = 0.95,
) -> Select | None:
    """A selection function for ``name``; ``num_unlabeled`` enables FlexMatch's per-sample
    curriculum (classification), else FlexMatch is class-wise (segmentation). ``dense``
    drops SoftMatch's distribution alignment: aligning to a uniform class prior is meant for
    balanced classification and, on segmentation dominated by background, it collapses the
    predictions (measured: mIoU 0.05 on the mosaics). ``tau`` is the fixed threshold's τ
    (default 0.95, FixMatch's; the threshold sweep varies it)."""
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; choose from {', '.join(SELECTORS)}")
    if name == "supervised":
        return None
    align = None
    if name == "threshold":
        module: torch.nn.Module = pseudosel.ThresholdSelector(tau)
    elif name == "flexmatch":
        module = pseudosel.FlexMatchSelector(num_classes, num_unlabeled)
    elif name == "freematch":
        module = pseudosel.FreeMatchSelector(num_classes)
    elif name == "softmatch":
        if not dense:  # USB's SoftMatch aligns the distribution first
            align = pseudosel.DistributionAlignment(num_classes)
        module = pseudosel.SoftMatchSelector(num_classes)
    elif name == "adamatch":
        module = pseudosel.AdaMatchSelector()
    elif name == "corrmatch":
        module = pseudosel.CorrMatchSelector(num_classes)
    elif name == "adsh":
        if num_unlabeled is None:
            raise ValueError("adsh records per unlabelled sample: pass num_unlabeled")
        module = pseudosel.AdshSelector(num_classes, num_unlabeled)
    elif name == "precision_target":
        # what a held-out set of 2 digits per class can certify: precision >= 0.8 with
        # probability 0.9 (11 points all correct are the fewest that can pass)
        module = pseudosel.PrecisionTargetSelector(
            num_classes, epsilon=PRECISION_EPSILON, delta=PRECISION_DELTA, min_count=11
        )
    elif name == "csl":
        module = pseudosel.CSLSelector()
    else:
        module = pseudosel.CSLSelector(boundary="max_margin")

    def select(probs, index=None, probs_labeled=None, ignore_mask=None):
        inputs = {}
        if isinstance(module, pseudosel.FlexMatchSelector) and num_unlabeled is not None:
            inputs["index"] = index
        if isinstance(module, pseudosel.AdaMatchSelector):
            inputs["probs_labeled"] = probs_labeled
        if align is not None:
            valid = None if ignore_mask is None else ignore_mask != 255
            probs = align(probs, valid=valid)
        return pseudosel.select_reliable(probs, module, ignore_mask=ignore_mask, **inputs)

    def start_epoch(
        predict_unlabelled: Callable[[], torch.Tensor],
        heldout: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        """Once per semi-supervised epoch, before its first step: Adsh records the model's
        eval-mode predictions on the whole unlabelled set and recomputes its scores (USB's
        per-epoch pass); the precision-targeted selector forgets the previous epoch's
        held-out predictions (the model changed), observes the current ones — ``heldout()``
        gives (probs, labels) of labelled data the model is not trained on — and
        recalibrates; the other selectors need nothing."""
        if isinstance(module, pseudosel.AdshSelector):
            probs = predict_unlabelled()
            module.update(probs, torch.arange(len(probs), device=probs.device))
            module.calibrate()
        elif isinstance(module, pseudosel.PrecisionTargetSelector):
            if heldout is None:
                raise ValueError("precision_target needs held-out labelled predictions")
            probs, labels = heldout()
            module.reset_running_stats()
            module.update_heldout(probs, labels)
            module.calibrate()

    select.modules = [m for m in (align, module) if m is not None]  # type: ignore[attr-defined]
    select.start_epoch = start_epoch  # type: ignore[attr-defined]
    return select
