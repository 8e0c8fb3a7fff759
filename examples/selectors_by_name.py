"""Selectors by name for the example trainers — every one goes through pseudosel only.

``build(name, ...)`` returns a function ``(probs, index=None, probs_labeled=None,
ignore_mask=None) -> Selection`` (or None for the supervised-only baseline), calling
``pseudosel.select_reliable`` with a selector module, so swapping selectors is one word.
The function also carries what a few selectors add to a training step:
``observe_labelled(labels, valid=None)`` (the class-prior thresholds learn the labelled
class distribution), ``warmup_step(predict_unlabelled)`` (CGMatch records every unlabelled
sample's prediction after each warm-up step), ``extra_loss(logits_strong, logits_weak,
progress)`` (ShrinkMatch's loss on the shrunk class space of the uncertain samples;
CGMatch's robust loss on the ambiguous ones) and ``trains_weak_view`` (CGMatch's loss also
trains the weak view's logits, so the trainer keeps their graph).
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
    "class_prior",
    "cgmatch",
    "shrinkmatch",
    "s4mc",
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
    total_steps: int | None = None,
    steps_per_epoch: int | None = None,
) -> Select | None:
    """A selection function for ``name``; ``num_unlabeled`` enables FlexMatch's per-sample
    curriculum (classification), else FlexMatch is class-wise (segmentation). ``dense``
    drops SoftMatch's distribution alignment: aligning to a uniform class prior is meant for
    balanced classification and, on segmentation dominated by background, it collapses the
    predictions (measured: mIoU 0.05 on the mosaics). ``tau`` is the fixed threshold's τ
    (default 0.95, FixMatch's; the threshold sweep varies it). ``total_steps``: the
    semi-supervised steps of the run, for S4MC's schedule of the kept share, which moves
    once every ``steps_per_epoch`` steps (the authors': once per epoch)."""
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
    elif name == "class_prior":
        module = pseudosel.ClassPriorSelector(num_classes)
    elif name == "cgmatch":
        if num_unlabeled is None:
            raise ValueError("cgmatch counts per unlabelled sample: pass num_unlabeled")
        # the authors align the weak predictions to a uniform prior first (USB's
        # DistAlignEMAHook, dist_uniform=True)
        align = pseudosel.DistributionAlignment(num_classes)
        module = pseudosel.CGMatchSelector(num_classes, num_unlabeled)
    elif name == "shrinkmatch":
        module = pseudosel.ShrinkMatchSelector(tau)
    elif name == "s4mc":
        if total_steps is None:
            raise ValueError("s4mc schedules its kept share over training: pass total_steps")
        # the authors move the kept share once per epoch
        module = pseudosel.S4MCSelector(total_steps, steps_per_epoch=steps_per_epoch or 1)
    elif name == "csl":
        module = pseudosel.CSLSelector()
    else:
        module = pseudosel.CSLSelector(boundary="max_margin")
    last: dict = {}  # this step's selection and what an extra loss needs from it

    def select(probs, index=None, probs_labeled=None, ignore_mask=None):
        inputs = {}
        if isinstance(module, pseudosel.FlexMatchSelector) and num_unlabeled is not None:
            inputs["index"] = index
        if isinstance(module, pseudosel.CGMatchSelector):
            inputs["index"] = index
        if isinstance(module, pseudosel.AdaMatchSelector):
            inputs["probs_labeled"] = probs_labeled
        valid = None if ignore_mask is None else ignore_mask != 255
        if align is not None:
            probs = align(probs, valid=valid)
        selection = pseudosel.select_reliable(probs, module, ignore_mask=ignore_mask, **inputs)
        if isinstance(module, pseudosel.ShrinkMatchSelector):
            last["shrunk"] = module.shrink(probs, valid=valid)
        last["selection"] = selection
        return selection

    def observe_labelled(labels: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Before training: the class-prior thresholds take the labelled class counts as
        their prior; the other selectors need nothing."""
        if isinstance(module, pseudosel.ClassPriorSelector):
            module.update_labeled(labels, valid=valid)

    def warmup_step(predict_unlabelled: Callable[[], torch.Tensor]) -> None:
        """After each supervised warm-up step: CGMatch records the model's eval-mode
        prediction of every unlabelled sample (the authors' ``warm_up_evaluate``, run after
        every warm-up iteration), so its count gaps start from a history; the other
        selectors need nothing."""
        if isinstance(module, pseudosel.CGMatchSelector):
            probs = predict_unlabelled()
            module.record(probs, torch.arange(len(probs), device=probs.device))

    def extra_loss(
        logits_strong: torch.Tensor, logits_weak: torch.Tensor, progress: float
    ) -> torch.Tensor | float:
        """What the selector adds to the unlabelled loss of the step just selected:
        ShrinkMatch's cross-entropy over each uncertain sample's shrunk class space (the
        authors train it on an auxiliary head; here on the same head), weighted as the
        authors; CGMatch's generalised cross-entropy on the ambiguous samples, on the weak
        and the strong logits, times λ_h · progress² (the authors' schedule, λ_h = 1).
        ``progress`` runs from 0 to 1 over the semi-supervised steps."""
        if isinstance(module, pseudosel.ShrinkMatchSelector):
            return pseudosel.shrunk_cross_entropy(logits_strong, last["shrunk"])
        if isinstance(module, pseudosel.CGMatchSelector):
            selection = last["selection"]
            ambiguous = module.ambiguous(selection)
            loss = pseudosel.generalized_cross_entropy(logits_weak, selection, ambiguous)
            loss = loss + pseudosel.generalized_cross_entropy(logits_strong, selection, ambiguous)
            return progress**2 * loss
        return 0.0

    def start_epoch(
        predict_unlabelled: Callable[[], torch.Tensor],
        heldout: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        """Once per semi-supervised epoch, before its first step: Adsh records the model's
        eval-mode predictions on the whole unlabelled set and recomputes its scores (USB's
        per-epoch pass); the precision-targeted selector forgets the previous epoch's
        held-out predictions (the model changed), observes the current ones — ``heldout()``
        gives (probs, labels) of labelled data the model is not trained on — and
        recalibrates; ShrinkMatch restarts its running share of certain samples (the
        authors' CIFAR code); the other selectors need nothing."""
        if isinstance(module, pseudosel.ShrinkMatchSelector):
            # the authors' CIFAR code restarts the share of certain samples every epoch
            module.reset_ratio()
        elif isinstance(module, pseudosel.AdshSelector):
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
    select.observe_labelled = observe_labelled  # type: ignore[attr-defined]
    select.warmup_step = warmup_step  # type: ignore[attr-defined]
    select.extra_loss = extra_loss  # type: ignore[attr-defined]
    select.trains_weak_view = isinstance(module, pseudosel.CGMatchSelector)  # type: ignore[attr-defined]
    return select
