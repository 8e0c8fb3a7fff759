"""Every selector of pseudosel, functional and module, behind one calling convention.

Each :class:`Case` builds a fresh selector for K classes and a ``step(probs, valid)`` that
runs one training step the way a loop would: modules in training mode, functional
stateful cores with their explicit state carried from step to step. Tests that must cover
"every selector" (no autograd graph, non-finite values at ignored positions, host syncs,
``torch.compile``, fuzzing) iterate over :data:`CASES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import pseudosel
import pseudosel.functional as F
from pseudosel.select import SELECTORS, STATEFUL

NUM_UNLABELED = 64


@dataclass(frozen=True)
class Case:
    """One selector: ``build(k, validate=True)`` returns ``(module_or_None, step)``.

    The builders also take ``activation=`` ("softmax" or "sigmoid": the step then takes
    sigmoid outputs) and ``weighting=`` ("soft" or "hard"): set on a module like
    ``validate``, passed to the functional selectors (``Selection.hard`` for them).

    ``dense``: accepts (N, K, *spatial) input. ``convex``: needs cvxpy (slow; skipped by
    the fuzz test). ``state(module_or_step)`` is taken from the module's buffers, or from
    the functional state the step carries (exposed as ``step.state``).
    """

    name: str
    build: Callable[..., tuple[nn.Module | None, Callable[[Tensor, Tensor], Any]]]
    dense: bool = True
    convex: bool = False


def labeled_batch(k: int, dtype: torch.dtype) -> Tensor:
    """A fixed labelled weak batch for AdaMatch and target='model' alignment.

    Binary: k = 1 is a sigmoid column p and k = 2 exactly its two classes (1 − p, p), so a
    selector given the sigmoid form and one given the two-class form see the same batch."""
    gen = torch.Generator().manual_seed(1234)
    if k <= 2:
        p = torch.rand(6, 1, generator=gen, dtype=torch.float64).to(dtype)
        return p if k == 1 else torch.cat((1 - p, p), 1)
    return (torch.randn(6, k, generator=gen, dtype=torch.float64) * 2).softmax(1).to(dtype)


def _module(factory: Callable[[int], nn.Module], **call_kwargs: Callable[..., Any]):
    """A case built from a module; ``call_kwargs`` give per-call inputs from (probs, valid)."""

    def build(k: int, validate: bool = True, activation="softmax", weighting="soft"):
        module = factory(k).train()
        module.validate = validate
        if activation != "softmax":
            module.activation = activation
        if weighting != "soft":
            module.weighting = weighting

        def step(probs: Tensor, valid: Tensor):
            extra = {name: make(probs, valid) for name, make in call_kwargs.items()}
            return module(probs, valid=valid, **extra)

        return module, step

    return build


def _named(name: str, **options: Any):
    """A stateless selector by its name in ``SELECTORS``, called as a function."""

    def build(k: int, validate: bool = True, activation="softmax", weighting="soft"):
        extra = {} if activation == "softmax" else {"activation": activation}

        def step(probs: Tensor, valid: Tensor):
            selection = SELECTORS[name](probs, valid=valid, validate=validate, **options, **extra)
            return selection.hard() if weighting == "hard" else selection

        return None, step

    return build


class _FunctionalState:
    """Carries the explicit state of a functional stateful core from step to step."""

    def __init__(self, init: Any, advance: Callable, select: Callable) -> None:
        self.state = init
        self.advance, self.select = advance, select
        self.options: dict[str, Any] = {}  # activation=, passed to both steps
        self.weighting = "soft"

    def __call__(self, probs: Tensor, valid: Tensor):
        self.state = self.advance(self.state, probs, valid, **self.options)
        result = self.select(probs, self.state, valid, **self.options)
        if self.weighting == "hard" and isinstance(result, pseudosel.Selection):
            return result.hard()
        return result


def _functional(make: Callable[[int], _FunctionalState]):
    # the explicit-state cores do not validate
    def build(k: int, validate: bool = True, activation="softmax", weighting="soft"):
        carried = make(k)
        if activation != "softmax":
            carried.options["activation"] = activation
        carried.weighting = weighting
        return None, carried

    return build


def _index(probs: Tensor, valid: Tensor) -> Tensor:
    return torch.arange(probs.shape[0], device=probs.device) % NUM_UNLABELED


def _labeled(probs: Tensor, valid: Tensor) -> Tensor:
    return labeled_batch(probs.shape[1], probs.dtype)


def _adsh_epoch(k: int, validate: bool = True, activation="softmax", weighting="soft"):
    """Adsh with its epoch-end recomputation every step: select, record, recompute."""
    module = pseudosel.AdshSelector(
        k, NUM_UNLABELED, tau_1=0.6, activation=activation, weighting=weighting
    ).train()
    module.validate = validate

    def step(probs: Tensor, valid: Tensor):
        selection = module(probs, valid=valid)
        module.record(probs, _index(probs, valid), valid=valid)
        module.recompute()
        return selection

    return module, step


def _adsh_pass(state: Any, probs: Tensor, valid: Tensor, activation="softmax") -> Any:
    """Adsh's recomputation from one batch of any layout (ignored positions: label -1)."""
    confidence, labels = F.class_probs(probs, activation).max(1)
    labels = torch.where(valid, labels, -1)
    return F.adsh_recompute(state, confidence.flatten(), labels.flatten(), tau_1=0.6)


def heldout_labels(probs: Tensor, valid: Tensor, k: int, activation: str = "softmax") -> Tensor:
    """Synthetic true labels for held-out data: the arg-max class, except at every fifth
    position (a wrong class there), so about 80% of the predictions are right."""
    predicted = F.class_probs(probs, activation).argmax(1)
    position = torch.arange(valid.numel(), device=valid.device).reshape(valid.shape)
    return torch.where(position % 5 == 0, (predicted + 1) % k, predicted)


def _precision_heldout(k: int, validate: bool = True, activation="softmax", weighting="soft"):
    """PrecisionTargetSelector fed held-out data: every step selects and observes the batch as
    held-out data (synthetic labels); every other step (the 1st, 3rd, ...) also calibrates,
    as a loop calibrates every few steps or once per epoch (a calibration issues a fixed
    number of ops, O(√window), more than a selection step) — per class, with a small window
    and grid."""
    module = pseudosel.PrecisionTargetSelector(
        k, epsilon=0.3, delta=0.2, window=64, candidates=50, per_class=True, min_count=0,
        activation=activation, weighting=weighting,
    ).train()  # fmt: skip
    module.validate = validate
    steps = [0]

    def step(probs: Tensor, valid: Tensor):
        selection = module(probs, valid=valid)
        module.observe_heldout(probs, heldout_labels(probs, valid, k, activation), valid=valid)
        if steps[0] % 2 == 0:
            module.calibrate()
        steps[0] += 1
        return selection

    return module, step


def _adamatch(k: int, validate: bool = True, activation="softmax", weighting="soft"):
    """AdaMatch as a function, with the fixed labelled batch in the layout of ``probs``."""

    def step(probs: Tensor, valid: Tensor):
        labeled = labeled_batch(probs.shape[1], probs.dtype)
        selection = F.adamatch(
            probs, labeled, valid=valid, tau=0.7, validate=validate, activation=activation
        )
        return selection.hard() if weighting == "hard" else selection

    return None, step


CASES: list[Case] = [
    # stateless, by name (every entry of SELECTORS)
    *[
        Case(f"F.{name}", _named(name), convex=name == "csl_max_margin")
        for name in SELECTORS
        if name != "adamatch"
    ],
    Case("F.adamatch", _adamatch),
    # functional stateful cores, state carried explicitly
    Case(
        "F.freematch",
        _functional(
            lambda k: _FunctionalState(
                F.freematch_init(k),
                lambda s, p, v, **o: F.freematch_update(s, p, v, momentum=0.9, **o),
                F.freematch_select,
            )
        ),
    ),
    Case(
        "F.softmatch",
        _functional(
            lambda k: _FunctionalState(
                F.softmatch_init(k),
                lambda s, p, v, **o: F.softmatch_update(s, p, v, momentum=0.9, **o),
                F.softmatch_select,
            )
        ),
    ),
    Case(
        "F.corrmatch",
        _functional(
            lambda k: _FunctionalState(
                F.corrmatch_init(),
                lambda s, p, v, **o: F.corrmatch_update(s, p, v, momentum=0.9, **o),
                F.corrmatch_select,
            )
        ),
    ),
    Case(
        "F.adsh",
        _functional(
            lambda k: _FunctionalState(F.adsh_init(k, tau_1=0.6), _adsh_pass, F.adsh_select)
        ),
    ),
    Case(
        "F.alignment_queue",
        _functional(
            lambda k: _FunctionalState(
                F.alignment_queue_init(k, queue_length=3),
                F.alignment_queue_update,
                lambda p, s, v, **o: F.align_queue(p, s, **o),
            )
        ),
    ),
    Case(
        "F.alignment",
        _functional(
            lambda k: _FunctionalState(
                F.AlignmentState(
                    torch.full((k,), 1.0 / k), torch.full((k,), 1.0 / k), torch.tensor(False)
                ),
                lambda s, p, v, **o: F.alignment_update(s, p, v, momentum=0.9, **o),
                lambda p, s, v, **o: F.align(p, s, **o),
            )
        ),
    ),
    # modules (every class in STATEFUL, the stateless modules, and DistributionAlignment)
    Case("ThresholdSelector", _module(lambda k: pseudosel.ThresholdSelector(0.6))),
    Case("CSLSelector", _module(lambda k: pseudosel.CSLSelector())),
    Case(
        "FlexMatchSelector/per-sample",
        _module(lambda k: pseudosel.FlexMatchSelector(k, NUM_UNLABELED, tau=0.6), index=_index),
        dense=False,
    ),
    Case(
        "FlexMatchSelector/class-wise", _module(lambda k: pseudosel.FlexMatchSelector(k, tau=0.6))
    ),
    Case("FreeMatchSelector", _module(lambda k: pseudosel.FreeMatchSelector(k, momentum=0.9))),
    Case(
        "FreeMatchSelector/quantile",
        _module(lambda k: pseudosel.FreeMatchSelector(k, use_quantile=True, clip_thresh=True)),
    ),
    Case("SoftMatchSelector", _module(lambda k: pseudosel.SoftMatchSelector(k, momentum=0.9))),
    Case(
        "SoftMatchSelector/per-class",
        _module(lambda k: pseudosel.SoftMatchSelector(k, momentum=0.9, per_class=True)),
    ),
    Case(
        "AdaMatchSelector",
        _module(lambda k: pseudosel.AdaMatchSelector(0.7), probs_labeled=_labeled),
    ),
    Case("AdshSelector", _module(lambda k: pseudosel.AdshSelector(k, NUM_UNLABELED))),
    Case("AdshSelector/epoch", _adsh_epoch, dense=False),
    Case("CorrMatchSelector", _module(lambda k: pseudosel.CorrMatchSelector(k, momentum=0.9))),
    Case(
        "PrecisionTargetSelector",  # no held-out data: the fallback threshold
        _module(lambda k: pseudosel.PrecisionTargetSelector(k, fallback_tau=0.6)),
    ),
    Case("PrecisionTargetSelector/heldout", _precision_heldout),
    Case("DashSelector", _module(lambda k: pseudosel.DashSelector(0.8, update_every=2))),
    Case("EntropySplitSelector", _module(lambda k: pseudosel.EntropySplitSelector(5))),
    Case(
        "DistributionAlignment", _module(lambda k: pseudosel.DistributionAlignment(k, momentum=0.9))
    ),
    Case(
        "DistributionAlignmentQueue",
        _module(lambda k: pseudosel.DistributionAlignmentQueue(k, queue_length=3)),
    ),
    Case(
        "DistributionAlignmentQueue/target=model",
        _module(
            lambda k: pseudosel.DistributionAlignmentQueue(k, queue_length=3, target="model"),
            probs_labeled=_labeled,
        ),
    ),
    Case(
        "DistributionAlignment/target=model",
        _module(
            lambda k: pseudosel.DistributionAlignment(k, momentum=0.9, target="model"),
            probs_labeled=_labeled,
        ),
    ),
]

# every stateful name of select_reliable has a module case
assert {getattr(pseudosel, cls).__name__ for cls in STATEFUL.values()} <= {
    case.name.split("/")[0] for case in CASES
}


def state_of(module: nn.Module | None, step: Callable) -> list[Tensor]:
    """The selector's state tensors: module buffers, or the functional state it carries."""
    if module is not None:
        return list(module.buffers())
    state = getattr(step, "state", None)
    return [] if state is None else list(state)


def outputs_of(result: Any) -> list[Tensor]:
    """The tensors a step returned (a Selection's fields, or aligned probabilities)."""
    return list(result) if isinstance(result, tuple) else [result]
