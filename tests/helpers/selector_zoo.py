"""Every selector of pseudosel, functional and module, behind one calling convention.

The cases are generated from the selector registry (:mod:`pseudosel.registry`): every
registered name's functional selector, module and explicit-state cores, with the option
sets its declaration gives for tests (``examples``) — so a selector added to the registry
joins every "every selector" test (no autograd graph, non-finite values at ignored
positions, host syncs, ``torch.compile``, fuzzing) without an edit here. The few extra
cases below are built from classes, not names: the transforms (distribution alignment) and
the call patterns a declaration does not describe (held-out data, explicit-state cores
driven by hand).

Each :class:`Case` builds a fresh selector for K classes and a ``step(probs, valid)`` that
runs one training step the way a loop would: modules in training mode, functional
stateful cores with their explicit state carried from step to step.

:func:`declared_options` and :class:`SteppedModule` also serve the other registry-driven
scenarios (the distributed and checkpoint tests).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import pseudosel
import pseudosel.functional as F
from helpers.probability_maps import classifier_outputs, smooth_maps
from pseudosel.registry import SelectorSpec, available_selectors, selector_spec

NUM_UNLABELED = 64


@dataclass(frozen=True)
class Case:
    """One selector: ``build(k, validate=True)`` returns ``(module_or_None, step)``.

    The builders also take ``activation=`` ("softmax" or "sigmoid": the step then takes
    sigmoid outputs), ``weighting=`` ("soft" or "hard"): set on a module like
    ``validate``, passed to the functional selectors (``Selection.hard`` for them), and
    ``device=``: where the module's buffers or the carried functional state live.

    ``dense``: accepts (N, K, *spatial) input. ``classification``: accepts (N, K) input
    (False for a selector that needs an image, such as S4MC's neighbours). ``convex``: needs
    cvxpy (slow; skipped by the fuzz test). ``checked``: the step runs pseudosel's front
    door (bad input raises). ``inputs(probs)``: the per-call inputs a module's ``forward``
    takes besides ``probs`` and ``valid``. ``state(module_or_step)`` is taken from the
    module's buffers, or from the functional state the step carries (exposed as
    ``step.state``).
    """

    name: str
    build: Callable[..., tuple[nn.Module | None, Callable[[Tensor, Tensor], Any]]]
    dense: bool = True
    classification: bool = True
    convex: bool = False
    checked: bool = True
    inputs: Callable[[Tensor], dict[str, Tensor]] = lambda probs: {}


def labeled_batch(k: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
    """A fixed labelled weak batch for AdaMatch and target='model' alignment.

    Binary: k = 1 is a sigmoid column p and k = 2 exactly its two classes (1 − p, p), so a
    selector given the sigmoid form and one given the two-class form see the same batch."""
    gen = torch.Generator().manual_seed(1234)
    if k <= 2:
        p = torch.rand(6, 1, generator=gen, dtype=torch.float64).to(device, dtype)
        return p if k == 1 else torch.cat((1 - p, p), 1)
    logits = torch.randn(6, k, generator=gen, dtype=torch.float64) * 2
    return logits.softmax(1).to(device, dtype)


def case_batch(
    case: Case,
    seed: int,
    *,
    k: int = 5,
    n: int = 12,
    size: tuple[int, int] = (6, 6),
    keep: float = 0.7,
    valid_seed: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """One batch for ``case``: two (k, *size) smooth maps where it takes dense input, else
    (n, k) classifier outputs; ``valid`` keeps about ``keep`` of the positions (drawn with
    ``valid_seed``, default ``seed``)."""
    if case.dense:
        probs = smooth_maps(2, k, *size, sharpness=3.0, seed=seed, dtype=dtype).to(device)
    else:
        probs = classifier_outputs(n, k, seed=seed, dtype=dtype).to(device)
    gen = torch.Generator().manual_seed(seed if valid_seed is None else valid_seed)
    valid = torch.rand((probs.shape[0], *probs.shape[2:]), generator=gen) < keep
    return probs, valid.to(device)


def sample_index(probs: Tensor) -> Tensor:
    """The batch's positions in an unlabelled set of NUM_UNLABELED samples."""
    return torch.arange(probs.shape[0], device=probs.device) % NUM_UNLABELED


def _per_call_inputs(spec: SelectorSpec, per_sample: bool) -> Callable[[Tensor], dict]:
    def inputs(probs: Tensor) -> dict[str, Tensor]:
        found = {}
        if "index" in spec.needs and per_sample:
            found["index"] = sample_index(probs)
        if "labeled" in spec.needs:
            found["probs_labeled"] = labeled_batch(probs.shape[1], probs.dtype, probs.device)
        return found

    return inputs


def declared_options(spec: SelectorSpec, num_unlabeled: int) -> Iterator[tuple[str, dict]]:
    """``(example, options)`` for each option set of ``spec``'s declaration, with
    ``num_unlabeled`` for a selector that needs sample positions (unless the example sets
    it: None there is FlexMatch's class-wise form). The options are per sample (the steps
    need ``index``) where ``options["num_unlabeled"]`` is not None."""
    for example, options in spec.examples.items():
        context = num_unlabeled if "index" in spec.needs else None
        yield example, {"num_unlabeled": context, **options}


class SteppedModule(nn.Module):
    """A registered selector's module (``spec.build(k, **options)``), stepped the way its
    declaration says (``spec.step``): ``forward(probs, valid=None, **inputs)``."""

    def __init__(self, spec: SelectorSpec, k: int, options: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.selector = spec.build(k, **options)

    def forward(self, probs: Tensor, valid: Tensor | None = None, **inputs: Any):
        return self.spec.step(self.selector, probs, valid, **inputs)


def _on(device: torch.device | str, state: Any) -> Any:
    """An explicit functional state (a NamedTuple of tensors) on ``device``."""
    return type(state)(*(v.to(device) if isinstance(v, Tensor) else v for v in state))


def _configure(
    module: nn.Module, validate: bool, activation: str, weighting: str, device="cpu"
) -> None:
    module.to(device).train()
    module.validate = validate
    if activation != "softmax":
        module.activation = activation
    if weighting != "soft":
        module.weighting = weighting


def _module_case(name: str, make: Callable[[int], nn.Module], **call_inputs: Callable) -> Case:
    """A case built from a module class (not from a registered name)."""

    def build(k: int, validate: bool = True, activation="softmax", weighting="soft", device="cpu"):
        module = make(k)
        _configure(module, validate, activation, weighting, device)

        def step(probs: Tensor, valid: Tensor):
            extra = {key: make_input(probs) for key, make_input in call_inputs.items()}
            return module(probs, valid=valid, **extra)

        return module, step

    def inputs(probs: Tensor) -> dict[str, Tensor]:
        return {key: make_input(probs) for key, make_input in call_inputs.items()}

    return Case(name, build, inputs=inputs)


def _registered_module_case(spec: SelectorSpec, example: str, options: dict) -> Case:
    """A registered selector's module, built and stepped the way its declaration says
    (``options`` from :func:`declared_options`)."""
    per_sample = options["num_unlabeled"] is not None
    inputs = _per_call_inputs(spec, per_sample)

    def build(k: int, validate: bool = True, activation="softmax", weighting="soft", device="cpu"):
        module = spec.build(k, **options)
        _configure(module, validate, activation, weighting, device)

        def step(probs: Tensor, valid: Tensor):
            return spec.step(module, probs, valid, **inputs(probs))

        return module, step

    label = spec.module.__name__ + ("" if example == "default" else f"/{example}")
    dense = spec.dense and not per_sample
    given = inputs if spec.train_step is None else _none
    return Case(label, build, dense=dense, classification=spec.classification, inputs=given)


def _none(probs: Tensor) -> dict:
    return {}


def _registered_function_case(spec: SelectorSpec, example: str, options: dict) -> Case:
    """A registered stateless selector called as a function, by its name."""
    inputs = _per_call_inputs(spec, per_sample=False)

    def build(k: int, validate: bool = True, activation="softmax", weighting="soft", device="cpu"):
        extra = {} if activation == "softmax" else {"activation": activation}

        def step(probs: Tensor, valid: Tensor):
            selection = selector_spec(spec.name).function(
                probs, valid=valid, validate=validate, **options, **inputs(probs), **extra
            )
            return selection.hard() if weighting == "hard" else selection

        return None, step

    label = f"F.{spec.name}" + ("" if example == "default" else f"/{example}")
    return Case(label, build, classification=spec.classification, convex=bool(spec.requires))


class _FunctionalState:
    """Carries the explicit state of a functional stateful core from step to step."""

    def __init__(self, init: Any, advance: Callable, select: Callable) -> None:
        self.state = init
        self.advance, self.select = advance, select
        self.options: dict[str, Any] = {}  # activation=, passed to both steps
        self.weighting = "soft"

    def __call__(self, probs: Tensor, valid: Tensor):
        self.state = self.advance(probs, self.state, valid=valid, **self.options)
        result = self.select(probs, self.state, valid=valid, **self.options)
        if self.weighting == "hard" and isinstance(result, pseudosel.Selection):
            return result.hard()
        return result


def _accepted(function: Callable, options: dict) -> dict:
    parameters = inspect.signature(function).parameters
    return {key: value for key, value in options.items() if key in parameters}


def _functional(make: Callable[[int], _FunctionalState], *, checked: bool = True):
    def build(k: int, validate: bool = True, activation="softmax", weighting="soft", device="cpu"):
        carried = make(k)
        carried.state = _on(device, carried.state)
        if activation != "softmax":
            carried.options["activation"] = activation
        if not validate:
            carried.options["validate"] = False
        carried.weighting = weighting
        return None, carried

    return build


def _cores_case(spec: SelectorSpec) -> Case:
    """A registered selector's explicit-state cores (init → update → select), state
    carried by hand, with its first example's options where each stage takes them."""
    cores = spec.cores
    options = next(iter(spec.examples.values()))
    update = _accepted(cores.update, options)
    select = _accepted(cores.select, options)

    def make(k: int) -> _FunctionalState:
        return _FunctionalState(
            cores.init(k),
            lambda p, s, **o: cores.update(p, s, **update, **o),
            lambda p, s, **o: cores.select(p, s, **select, **o),
        )

    return Case(f"F.{spec.name}", _functional(make))


def _registry_cases() -> list[Case]:
    cases: list[Case] = []
    modules_seen: set[type] = set()
    for name in available_selectors():
        spec = selector_spec(name)
        declared = list(declared_options(spec, NUM_UNLABELED))
        if spec.function is not None:
            for example, options in spec.examples.items():
                cases.append(_registered_function_case(spec, example, dict(options)))
            if spec.module is not None and spec.module not in modules_seen:
                modules_seen.add(spec.module)
                cases.append(_registered_module_case(spec, "default", declared[0][1]))
        else:
            for example, options in declared:
                cases.append(_registered_module_case(spec, example, options))
        if spec.cores is not None:
            cases.append(_cores_case(spec))
    return cases


def _adsh_pass(probs: Tensor, state: Any, *, valid: Tensor, activation="softmax", **_) -> Any:
    """Adsh's recomputation from one batch of any layout (ignored positions: label -1)."""
    confidence, labels = F.class_probs(probs, activation).max(1)
    labels = torch.where(valid, labels, -1)
    return F.adsh_calibrate(confidence.flatten(), labels.flatten(), state, tau_1=0.6)


def heldout_labels(probs: Tensor, valid: Tensor, k: int, activation: str = "softmax") -> Tensor:
    """Synthetic true labels for held-out data: the arg-max class, except at every fifth
    position (a wrong class there), so about 80% of the predictions are right."""
    predicted = F.class_probs(probs, activation).argmax(1)
    position = torch.arange(valid.numel(), device=valid.device).reshape(valid.shape)
    return torch.where(position % 5 == 0, (predicted + 1) % k, predicted)


def _precision_heldout(
    k: int, validate: bool = True, activation="softmax", weighting="soft", device="cpu"
):
    """PrecisionTargetSelector fed held-out data: every step selects and observes the batch as
    held-out data (synthetic labels); every other step (the 1st, 3rd, ...) also calibrates,
    as a loop calibrates every few steps or once per epoch (a calibration issues a fixed
    number of ops, O(√window), more than a selection step) — per class, with a small window
    and grid."""
    module = pseudosel.PrecisionTargetSelector(
        k, epsilon=0.3, delta=0.2, window=64, candidates=50, per_class=True, min_count=0,
        activation=activation, weighting=weighting,
    ).to(device).train()  # fmt: skip
    module.validate = validate
    steps = [0]

    def step(probs: Tensor, valid: Tensor):
        selection = module(probs, valid=valid)
        module.update_heldout(probs, heldout_labels(probs, valid, k, activation), valid=valid)
        if steps[0] % 2 == 0:
            module.calibrate()
        steps[0] += 1
        return selection

    return module, step


def _labeled(probs: Tensor) -> Tensor:
    return labeled_batch(probs.shape[1], probs.dtype, probs.device)


EXTRA_CASES: list[Case] = [
    # Adsh's forward alone, on any layout (its registered training step is per-sample)
    _module_case("AdshSelector/forward", lambda k: pseudosel.AdshSelector(k, NUM_UNLABELED)),
    Case("PrecisionTargetSelector/heldout", _precision_heldout),
    # explicit-state cores that the declarations do not describe
    Case(
        "F.adsh_calibrate",
        _functional(
            lambda k: _FunctionalState(F.adsh_init(k, tau_1=0.6), _adsh_pass, F.adsh_select),
            checked=False,
        ),
        checked=False,  # the recomputation reads class_probs directly
    ),
    Case(
        "F.alignment_queue",
        _functional(
            lambda k: _FunctionalState(
                F.alignment_queue_init(k, queue_length=3),
                F.alignment_queue_update,
                lambda p, s, valid, **o: F.align_queue(p, s, valid=valid, **o),
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
                lambda p, s, **o: F.alignment_update(p, s, momentum=0.9, **o),
                lambda p, s, valid, **o: F.align(p, s, valid=valid, **o),
            )
        ),
    ),
    # the transforms used before a selector
    _module_case(
        "DistributionAlignment", lambda k: pseudosel.DistributionAlignment(k, momentum=0.9)
    ),
    _module_case(
        "DistributionAlignmentQueue",
        lambda k: pseudosel.DistributionAlignmentQueue(k, queue_length=3),
    ),
    _module_case(
        "DistributionAlignmentQueue/target=model",
        lambda k: pseudosel.DistributionAlignmentQueue(k, queue_length=3, target="model"),
        probs_labeled=_labeled,
    ),
    _module_case(
        "DistributionAlignment/target=model",
        lambda k: pseudosel.DistributionAlignment(k, momentum=0.9, target="model"),
        probs_labeled=_labeled,
    ),
]

CASES: list[Case] = _registry_cases() + EXTRA_CASES
#: cases whose test steps read the mask they are given (held-out labels drawn from it;
#: Adsh's recomputation marking ignored positions by hand): they cannot run without one
NEEDS_A_MASK = ("PrecisionTargetSelector/heldout", "F.adsh_calibrate")


def state_of(module: nn.Module | None, step: Callable) -> list[Tensor]:
    """The selector's state tensors: module buffers, or the functional state it carries."""
    if module is not None:
        return list(module.buffers())
    state = getattr(step, "state", None)
    return [] if state is None else list(state)


def outputs_of(result: Any) -> list[Tensor]:
    """The tensors a step returned (a Selection's fields, or aligned probabilities)."""
    return list(result) if isinstance(result, tuple) else [result]
