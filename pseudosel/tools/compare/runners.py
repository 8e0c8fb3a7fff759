"""A selector spec turned into a runner: a callable ``(probs, valid, index) → Selection`` over
the batches of a predictions file, plus the warm-up passes of a stateful selector.

The rules come from the selector's :class:`~pseudosel.registry.SelectorSpec`, never from its
name:

- stateless: ``spec.function(probs, valid=valid, validate=False, **options)`` (the file's
  reader has checked the values);
- stateful: one module, ``spec.build(num_classes, num_unlabeled=..., **options)`` in training
  mode, stepped by ``spec.step(module, probs, valid, **inputs)`` over the batches in file
  order, as during training;
- ``"index"`` in ``spec.needs``: the batch's sample positions in the file are the unlabelled
  set's positions (``index=``), and the module is built with ``num_unlabeled`` = the file's
  size — for classification files; on a dense file such a selector runs without positions
  (``num_unlabeled=None``) when it takes dense input (FlexMatch's class-wise form), and is
  refused otherwise;
- ``"heldout"`` in ``spec.needs``: two-fold cross-fitting on the file's own labels
  (:class:`HeldOutRunner`);
- ``"labeled"`` in ``spec.needs``: refused (a predictions file has no labelled batch).

Warm-up passes: a stateful runner first advances its state over the file ``passes - 1``
times. A module with a float attribute ``momentum`` (an EMA's weight of the old value, as in
FreeMatch, SoftMatch and CorrMatch) is warmed up with the cumulative average's momentum
``1 - 1/step``, capped at its own — BatchNorm's ``momentum=None`` — so that one pass brings
the state to the file's average statistics, where a 0.999 EMA would need thousands of
batches; the measured pass uses its own momentum. A module with an ``in_warmup()`` method
reports whether it is still in its own warm-up when measured.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pseudosel.registry import SelectorSpec
from pseudosel.selection import Selection
from pseudosel.tools.compare.specs import check_selector
from pseudosel.tools.modules import build_module, takes_argument

__all__ = [
    "HELDOUT_WINDOW",
    "HeldOutRunner",
    "Runner",
    "StatefulRunner",
    "StatelessRunner",
    "make_runner",
    "runner_for",
]

#: largest held-out window per fold (when the module takes ``window``; a dense file keeps its
#: last positions)
HELDOUT_WINDOW = 1 << 20


class Runner(Protocol):
    """What :func:`pseudosel.tools.compare.compare` drives: ``stateful`` runners get the
    warm-up passes (:meth:`warm_up` on every batch), then every runner is called on every
    batch of the measured pass."""

    stateful: bool

    def __call__(self, probs: Tensor, valid: Tensor | None, index: Tensor) -> Selection: ...

    def warm_up(
        self,
        probs: Tensor,
        valid: Tensor | None,
        index: Tensor,
        labels: Tensor,
        known: Tensor,
        step: int,
    ) -> None: ...

    def in_warmup(self) -> bool: ...


class StatelessRunner:
    """A stateless selector: ``spec.function`` with the spec's options on every batch."""

    stateful = False

    def __init__(self, spec: SelectorSpec, options: dict[str, Any]) -> None:
        from pseudosel.functional.separation import load_variants

        load_variants(options)  # an option such as solver="cvxpy" imports its module
        self.spec, self.options = spec, options

    def __call__(self, probs: Tensor, valid: Tensor | None, index: Tensor) -> Selection:
        return self.spec.function(probs, valid=valid, validate=False, **self.options)

    def warm_up(self, *batch: Any) -> None:
        """Nothing to advance."""

    def in_warmup(self) -> bool:
        return False


class StatefulRunner:
    """One module of a stateful selector, stepped in training mode over the file.

    ``per_sample``: pass the batch's sample positions as ``index=`` (the module was built
    with ``num_unlabeled``)."""

    stateful = True

    def __init__(self, spec: SelectorSpec, module: nn.Module, *, per_sample: bool) -> None:
        self.spec, self.module, self.per_sample = spec, module, per_sample

    def __call__(self, probs: Tensor, valid: Tensor | None, index: Tensor) -> Selection:
        inputs = {"index": index} if self.per_sample else {}
        return self.spec.step(self.module, probs, valid, **inputs)

    def warm_up(
        self,
        probs: Tensor,
        valid: Tensor | None,
        index: Tensor,
        labels: Tensor,
        known: Tensor,
        step: int,
    ) -> None:
        """Advance the state on the ``step``-th warm-up batch (counted from 1); an EMA
        (a float ``momentum``) with momentum ``min(momentum, 1 - 1/step)``."""
        published = getattr(self.module, "momentum", None)
        if not isinstance(published, float):
            self(probs, valid, index)
            return
        self.module.momentum = min(published, 1.0 - 1.0 / step)
        try:
            self(probs, valid, index)
        finally:
            self.module.momentum = published

    def in_warmup(self) -> bool:
        return _in_warmup(self.module)


class HeldOutRunner:
    """A selector calibrated on held-out labels (``"heldout"`` in its needs), fed the file's
    own labels by two-fold cross-fitting.

    During the first warm-up pass the samples with an even index go to one module's
    ``update_heldout(probs, labels, valid)`` and the odd ones to another's; the first
    measured call runs ``calibrate()`` on both, and each sample is then selected by the
    module that did not see its label."""

    stateful = True

    def __init__(self, spec: SelectorSpec, folds: list[nn.Module], num_samples: int) -> None:
        for fold in folds:
            missing = [m for m in ("update_heldout", "calibrate") if not hasattr(fold, m)]
            if missing:
                raise ValueError(
                    f"{spec.name} needs held-out labels, but its module "
                    f"{type(fold).__name__} has no {' or '.join(missing)} method: pseudosel "
                    "compare feeds held-out labels through update_heldout(probs, labels, "
                    "valid) and then calls calibrate()"
                )
        self.spec, self.folds, self.num_samples = spec, folds, num_samples
        self.observed = 0
        self.calibrated = False

    @staticmethod
    def _even(index: Tensor, like: Tensor) -> Tensor:
        return (index % 2 == 0).view(-1, *([1] * (like.dim() - 1)))

    def warm_up(
        self,
        probs: Tensor,
        valid: Tensor | None,
        index: Tensor,
        labels: Tensor,
        known: Tensor,
        step: int,
    ) -> None:
        """Push a batch's known labels into the two folds (during the first pass only)."""
        if self.observed >= self.num_samples:
            return
        self.observed += probs.shape[0]
        even = self._even(index, known)
        for fold, part in zip(self.folds, (even, ~even), strict=True):
            held = known & part
            fold.update_heldout(probs, torch.where(held, labels, 0), held)

    def __call__(self, probs: Tensor, valid: Tensor | None, index: Tensor) -> Selection:
        if not self.calibrated:
            for fold in self.folds:
                fold.calibrate()
            self.calibrated = True
        on_even, on_odd = (self.spec.step(fold, probs, valid) for fold in self.folds)
        even = self._even(index, on_even.mask)
        # a sample is selected by the fold calibrated on the other half
        return type(on_even)(
            *(torch.where(even, b, a) for a, b in zip(on_even, on_odd, strict=True))
        )

    def in_warmup(self) -> bool:
        return any(_in_warmup(fold) for fold in self.folds)


def make_runner(text: str, num_classes: int, num_samples: int, dense: bool) -> Runner:
    """The runner of the selector spec ``text`` (``name``, ``name:VALUE`` or
    ``name:key=value,...``) on a predictions file of ``num_samples`` samples and
    ``num_classes`` classes, dense (N, K, *spatial) or not (N, K).

    Raises:
        ValueError: a bad spec (:func:`~pseudosel.tools.compare.specs.check_selector`), or a
            selector that does not take the file's layout or cannot run on a file.

    Example:
        >>> import torch
        >>> run = make_runner("threshold:0.8", 3, 100, dense=False)
        >>> probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]])
        >>> run(probs, None, torch.arange(2)).mask
        tensor([ True, False])
    """
    spec, options = check_selector(text)
    return runner_for(text, spec, options, num_classes, num_samples, dense)


def runner_for(
    text: str,
    spec: SelectorSpec,
    options: dict[str, Any],
    num_classes: int,
    num_samples: int,
    dense: bool,
) -> Runner:
    """:func:`make_runner` for a spec already checked (:func:`check_selector` gave ``spec``
    and ``options``); ``text`` names it in messages."""
    _check_layout(spec, dense)
    if not spec.stateful:
        return StatelessRunner(spec, options)
    # the file's samples are the unlabelled set: index = their positions in the file
    num_unlabeled = num_samples if "index" in spec.needs and not dense else None
    per_sample = "index" in spec.needs and options.get("num_unlabeled", num_unlabeled) is not None
    try:
        if "heldout" not in spec.needs:
            module = build_module(spec, num_classes, num_unlabeled, options)
            return StatefulRunner(spec, module, per_sample=per_sample)
        if "window" not in options and takes_argument(spec.module, "window", by_name=True):
            # each fold holds its half of the file (a dense file: its last positions)
            half = HELDOUT_WINDOW if dense else min(HELDOUT_WINDOW, (num_samples + 1) // 2)
            options = {**options, "window": half}
        folds = [build_module(spec, num_classes, num_unlabeled, options) for _ in range(2)]
    except (TypeError, ValueError) as error:  # the constructor refused the options
        raise ValueError(f"{text!r}: {spec.name} cannot be built: {error}") from error
    return HeldOutRunner(spec, folds, num_samples)


def _check_layout(spec: SelectorSpec, dense: bool) -> None:
    if dense and not spec.dense:
        why = (
            "keeps one record per sample (it needs the samples' index)"
            if "index" in spec.needs
            else "takes one row per sample"
        )
        raise ValueError(
            f"{spec.name} {why}: classification (N, K) files only, and this file is dense "
            "(N, K, *spatial)"
        )
    if not dense and not spec.classification:
        raise ValueError(
            f"{spec.name} takes dense (N, K, *spatial) input only, and this file holds one "
            "row per sample (N, K)"
        )


def _in_warmup(module: nn.Module) -> bool:
    """Whether a module reports its own warm-up as unfinished (its ``in_warmup()``)."""
    in_warmup = getattr(module, "in_warmup", None)
    return bool(in_warmup()) if callable(in_warmup) else False
