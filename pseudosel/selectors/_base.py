"""What every selector module shares: its common options, the front door, the result's
weighting — and the base of the selectors that update their statistics before selecting.

A selector module stores its own hyper-parameters and buffers; the options below are the
same for all of them, taken by every constructor as keywords (``**shared``, passed to this
base) and documented once here rather than in every class:

- ``validate``: check the input values on every call (default True; the value check is the
  one read of the data, :func:`pseudosel.inputs.prepare`);
- ``activation``: ``"softmax"`` (default: dim 1 holds K class probabilities) or
  ``"sigmoid"``: dim 1 holds positive-class probabilities p, read as the two classes
  (1 − p, p) — a binary output (N, 1, *spatial), or for the selectors that take it a
  multi-label output (N, L, *spatial) (docs/binary.md). Selectors with per-class state take
  binary outputs only (build them with ``num_classes=2``);
- ``multilabel``: for ``"sigmoid"``, whether dim 1 holds L labels (None: from the shape;
  needed for 3-D input, see :func:`~pseudosel.inputs.check_multilabel`);
- ``weighting``: ``"soft"`` (default: the selector's own weights) or ``"hard"`` (weight =
  mask as 0/1, :meth:`~pseudosel.Selection.hard`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.features import plain_confidence_and_labels
from pseudosel.functional.alignment import numerator as alignment_numerator
from pseudosel.inputs import Inputs, prepare
from pseudosel.kernels import BACKENDS
from pseudosel.kernels.shared import with_shared_features
from pseudosel.selection import WEIGHTINGS, Selection
from pseudosel.selectors._lane import all_positions, takes_lane
from pseudosel.validation import check_activation, check_choice, check_real

__all__ = ["Alignment", "CheckedModule", "Selector", "UpdateThenSelect", "check_positive_int"]


def check_num_classes(num_classes: object) -> int:
    """``num_classes``: an int >= 2 (a binary sigmoid output is two classes)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2, got {num_classes} (a binary sigmoid output is two "
            'classes: num_classes=2 with activation="sigmoid")'
        )
    return num_classes


def check_positive_int(name: str, value: object) -> int:
    """An int >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_backend(backend: object, compile: object = False) -> str:
    """A stateless selector module's ``backend=`` (:data:`pseudosel.kernels.BACKENDS`),
    consistent with its ``compile=``: ``compile=True`` allows ``"auto"`` and
    ``"compiled"`` only."""
    backend = check_choice("backend", backend, BACKENDS)
    if compile and backend not in ("auto", "compiled"):
        raise ValueError(
            f"compile=True runs the compiled path, but backend={backend!r} asks for another; "
            'pass one of them (backend="compiled" is compile=True)'
        )
    return backend


def check_momentum(momentum: object) -> float:
    """An EMA momentum in [0, 1] (the weight of the OLD value, as in the published code)."""
    return check_real("momentum", momentum, low=0.0, high=1.0)


class CheckedModule(nn.Module):
    """A module with the shared input options: ``validate``, ``activation``, ``multilabel``
    and, for per-class modules, ``num_classes`` (see the module docstring).

    ``per_class_state`` (class attribute): True for modules whose per-class state would mix
    the labels of a multi-label output — they take binary sigmoid outputs only.
    """

    per_class_state: ClassVar[bool] = False
    # the attributes extra_repr shows, in order
    shown: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        validate: bool = True,
        activation: str = "softmax",
        multilabel: bool | None = None,
        **unexpected: Any,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if unexpected:
            shared = ["validate", "activation", "multilabel"]
            if isinstance(self, Selector):
                shared.append("weighting")
            raise TypeError(
                f"{name}() got unexpected keyword arguments {sorted(unexpected)}; besides its "
                f"own options it takes the shared {', '.join(shared)}"
            )
        self.num_classes = None if num_classes is None else check_num_classes(num_classes)
        self.validate = bool(validate)
        self.activation = check_activation(activation)
        if self.activation == "sigmoid" and self.num_classes not in (None, 2):
            raise ValueError(
                'activation="sigmoid" reads a binary output (N, 1, *spatial) as two classes '
                f"(1 - p, p), so {name} needs num_classes=2, got num_classes={num_classes}; "
                f"multi-label outputs are not supported by {name} (docs/binary.md)"
            )
        if multilabel is not None and not isinstance(multilabel, bool):
            raise TypeError(f"multilabel must be None, True or False, got {multilabel!r}")
        if multilabel and self.per_class_state:
            raise ValueError(f"{name} does not support multi-label input (docs/binary.md)")
        self.multilabel = multilabel

    def prepare(self, probs: Tensor, valid: Tensor | None = None, name: str = "probs") -> Inputs:
        """This module's front door: :func:`pseudosel.inputs.prepare` with its options."""
        return prepare(
            probs,
            valid,
            activation=self.activation,
            multilabel=self.multilabel,
            num_classes=self.num_classes,
            validate=self.validate,
            per_class_state=type(self).__name__ if self.per_class_state else None,
            name=name,
        )

    def shared_options(self) -> dict[str, Any]:
        """The shared options that differ from their defaults (for ``extra_repr``)."""
        options: dict[str, Any] = {}
        if self.activation != "softmax":
            options["activation"] = self.activation
        if self.multilabel is not None:
            options["multilabel"] = self.multilabel
        return options

    def extra_repr(self) -> str:
        """The module's own options (the attributes named in ``shown``), then the shared
        options that differ from their defaults."""
        own = {name: getattr(self, name) for name in self.shown}
        items = {**own, **self.shared_options()}
        return ", ".join(f"{key}={value!r}" for key, value in items.items())


class Selector(CheckedModule):
    """Base of the selector modules: the shared options (module docstring) and
    :meth:`finish`, which applies ``weighting`` to the result. Subclasses keep an explicit
    ``forward`` signature (:func:`~pseudosel.select_reliable` passes per-call inputs by
    name) and return a :class:`~pseudosel.Selection`.

    A user's own stateful selector subclasses it to get the front door
    (:meth:`~CheckedModule.prepare`) and the shared options (docs/plugins.md):

    Example:
        >>> import torch, pseudosel
        >>> class RunningMean(pseudosel.Selector):
        ...     def __init__(self, momentum=0.9, **shared):
        ...         super().__init__(**shared)
        ...         self.momentum = momentum
        ...         self.register_buffer("mean", torch.tensor(0.5))
        ...     def forward(self, probs, valid=None):
        ...         probs, valid, _ = self.prepare(probs, valid)
        ...         confidence, labels = probs.max(1)
        ...         if self.training:
        ...             batch = confidence[valid].mean()
        ...             self.mean.mul_(self.momentum).add_((1 - self.momentum) * batch)
        ...         mask = valid & (confidence >= self.mean)
        ...         return self.finish(pseudosel.Selection(
        ...             labels, mask.float(), mask, confidence - self.mean, valid))
        >>> RunningMean(momentum=0.5)(torch.tensor([[0.9, 0.1], [0.55, 0.45]])).mask
        tensor([ True, False])
    """

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        validate: bool = True,
        activation: str = "softmax",
        multilabel: bool | None = None,
        weighting: str = "soft",
        **unexpected: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            validate=validate,
            activation=activation,
            multilabel=multilabel,
            **unexpected,
        )
        self.weighting = check_choice("weighting", weighting, WEIGHTINGS)

    def finish(self, selection: Selection) -> Selection:
        """``selection`` as it is (``weighting="soft"``), or :meth:`~pseudosel.Selection.hard`."""
        return selection.hard() if self.weighting == "hard" else selection

    def shared_options(self) -> dict[str, Any]:
        options = super().shared_options()
        if self.weighting != "soft":
            options["weighting"] = self.weighting
        return options


class Alignment(CheckedModule):
    """Base of the distribution-alignment modules: transforms used *before* a selector
    (they return aligned probabilities, not a Selection; :func:`~pseudosel.select_reliable`
    refuses them). Per-class state: binary sigmoid outputs only.

    Subclasses name their functional stages — ``update_stage`` (with the attributes in
    ``update_options``) and ``align_stage`` — and give ``state()``, ``process_group`` and
    ``learn_target`` (whether the target follows the labelled predictions), and the plain
    lane's forms of the two stages (:mod:`pseudosel.selectors._lane`): ``lane_update``,
    which writes the new state into the buffers, and ``lane_align``.

    Example:
        >>> import torch, pseudosel
        >>> align = pseudosel.DistributionAlignment(num_classes=2, momentum=0.9)
        >>> isinstance(align, pseudosel.Alignment)
        True
        >>> aligned = align(torch.tensor([[0.9, 0.1], [0.6, 0.4]]))  # then a selector
        >>> aligned
        tensor([[0.7500, 0.2500],
                [0.3333, 0.6667]])
        >>> pseudosel.select_reliable(aligned, "threshold", tau=0.7).mask
        tensor([ True, False])
    """

    per_class_state = True
    update_stage: ClassVar[Callable[..., tuple[Tensor, ...]]]
    align_stage: ClassVar[Callable[..., Tensor]]
    update_options: ClassVar[tuple[str, ...]] = ()
    process_group: ProcessGroup | None
    learn_target: bool

    def state(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    @no_grad
    def forward(
        self,
        probs: Tensor,
        probs_labeled: Tensor | None = None,
        valid: Tensor | None = None,
        valid_labeled: Tensor | None = None,
    ) -> Tensor:
        """Aligned probabilities (N, K, *spatial); updates first in training mode (with the
        labelled batch when the target is learned: ``target="model"``)."""
        state = self.state()  # the buffers, updated in place by _update / store
        if valid is None and not self.learn_target and takes_lane(self, probs, *state):
            if self.training:
                self.lane_update(probs, state)
            return self.lane_align(probs, state)
        inputs = self.prepare(probs, valid)
        if self.training:
            self._update(inputs, probs_labeled, valid_labeled, state)
        # the stages are handed the front door's result: they skip their own
        return type(self).align_stage(inputs.probs, state, valid=inputs.valid, prepared=inputs)

    def lane_update(self, probs: Tensor, state: tuple[Tensor, ...]) -> None:
        """The update stage on the plain lane (a fixed target): the new state written into
        the buffers ``state``, equal to what ``update_stage`` returns."""
        raise NotImplementedError

    def lane_align(self, probs: Tensor, state: tuple[Tensor, ...]) -> Tensor:
        """The align stage on the plain lane: equal to what ``align_stage`` returns."""
        raise NotImplementedError

    def target_vector(self, p_target: Tensor, work: torch.dtype) -> Tensor:
        """The (K,) target distribution of the buffer ``p_target`` in the compute dtype
        ``work``, as ``align_stage`` computes it."""
        raise NotImplementedError

    def lane_numerator(self, p_target: Tensor, work: torch.dtype) -> tuple[Tensor, Any]:
        """:func:`~pseudosel.functional.alignment.numerator` of the fixed target (the
        buffer ``p_target``, a plain CPU tensor on the lane) in ``work``, kept between
        calls: computed again when the buffer is another tensor, its memory has moved or its
        version counter has — any in-place write (``copy_``, indexing,
        ``load_state_dict``), a move, a new buffer or new memory under the same tensor
        (``.data =``, ``torch.utils.swap_tensors``). A fixed target costs the lane no op
        per call (the queue's is a mean over its rows). Writes that bypass the version
        counter — through ``.data``, the untyped storage, or an alias made by NumPy or
        DLPack — are not seen (docs/performance.md)."""
        if p_target.is_inference():  # no version counter to key on
            return alignment_numerator(self.target_vector(p_target, work))
        key = (p_target._version, p_target.data_ptr(), work)
        kept = self.__dict__.get("_lane_numerator")
        if kept is None or kept[0] is not p_target or kept[1] != key:
            numerator = alignment_numerator(self.target_vector(p_target, work))
            # the storage is held so that its address cannot be reused by another target
            # while the key names it; a plain attribute, not a buffer: not in the state dict
            storage = p_target.untyped_storage()
            kept = self.__dict__["_lane_numerator"] = (p_target, key, numerator, storage)
        return kept[2]

    @no_grad
    def update(
        self,
        probs: Tensor,
        probs_labeled: Tensor | None = None,
        valid: Tensor | None = None,
        valid_labeled: Tensor | None = None,
    ) -> None:
        """Advance the statistics with a batch, without aligning."""
        self._update(self.prepare(probs, valid), probs_labeled, valid_labeled, self.state())

    def _update(
        self,
        inputs: Inputs,
        probs_labeled: Tensor | None,
        valid_labeled: Tensor | None,
        state: tuple[Tensor, ...],
    ) -> None:
        if not self.learn_target:
            probs_labeled = valid_labeled = None  # a fixed target reads no labelled batch
        elif probs_labeled is None:
            raise ValueError("probs_labeled is required in training mode with target='model'")
        else:
            probs_labeled, valid_labeled, _ = self.prepare(
                probs_labeled, valid_labeled, "probs_labeled"
            )
        options = {name: getattr(self, name) for name in self.update_options}
        new = type(self).update_stage(
            inputs.probs,
            state,
            valid=inputs.valid,
            probs_labeled=probs_labeled,
            valid_labeled=valid_labeled,
            process_group=self.process_group,
            validate=False,
            prepared=inputs,
            **options,
        )
        store(new, state)


class UpdateThenSelect(Selector):
    """Selectors whose statistics absorb the batch before selecting (FreeMatch, SoftMatch,
    CorrMatch): in training mode ``forward`` updates, then selects; in eval mode it selects.

    Subclasses name their explicit-state functional stages and which of their attributes
    each stage takes — ``update_stage`` (e.g. ``F.freematch_update``) with
    ``update_options``, ``select_stage`` with ``select_options`` — and give ``state()``
    (their buffers as the stages' state NamedTuple) and ``process_group``. A subclass with
    a plain lane (:mod:`pseudosel.selectors._lane`) also says when a call takes it
    (``lane_open``) and gives the stages' formulas on the lane's arg-max (``lane_update``,
    ``lane_select``).
    """

    per_class_state = True
    update_stage: ClassVar[Callable[..., tuple[Tensor, ...]]]
    select_stage: ClassVar[Callable[..., Selection]]
    update_options: ClassVar[tuple[str, ...]] = ("momentum",)
    select_options: ClassVar[tuple[str, ...]] = ()
    process_group: ProcessGroup | None

    def state(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """In training mode update the statistics, then select; in eval mode select."""
        state = self.state()  # the buffers, updated in place by store
        if valid is None and self.lane_open(probs, state):
            confidence, labels = plain_confidence_and_labels(probs)  # read by both stages
            if self.training:
                store(self.lane_update(probs, confidence, labels, state), state)
            return self.finish(self.lane_select(confidence, labels, state, all_positions(probs)))
        # the update and the selection read one arg-max
        return with_shared_features(self._step, self.prepare(probs, valid), state)

    def lane_open(self, probs: Tensor, state: tuple[Tensor, ...]) -> bool:
        """Whether this call (no ``valid`` mask) takes the plain lane; never, unless a
        subclass says when."""
        return False

    def lane_update(
        self, probs: Tensor, confidence: Tensor, labels: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        """The new state on the lane, from ``probs`` (N, K) and its arg-max."""
        raise NotImplementedError

    def lane_select(
        self, confidence: Tensor, labels: Tensor, state: tuple[Tensor, ...], valid: Tensor
    ) -> Selection:
        """The selection on the lane, from the arg-max of ``probs`` and the state."""
        raise NotImplementedError

    def _step(self, inputs: Inputs, state: tuple[Tensor, ...]) -> Selection:
        if self.training:
            store(self._advance(inputs, state), state)
        options = {name: getattr(self, name) for name in self.select_options}
        # the stages are handed the front door's result: they skip their own
        selection = type(self).select_stage(
            inputs.probs, state, valid=inputs.valid, prepared=inputs, **options
        )
        return self.finish(selection)

    @no_grad
    def update(self, probs: Tensor, valid: Tensor | None = None) -> None:
        """Advance the statistics with a batch, without selecting."""
        state = self.state()
        store(self._advance(self.prepare(probs, valid), state), state)

    def _advance(self, inputs: Inputs, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        options = {name: getattr(self, name) for name in self.update_options}
        return type(self).update_stage(
            inputs.probs,
            state,
            valid=inputs.valid,
            process_group=self.process_group,
            prepared=inputs,
            **options,
        )


def buffers_of(module: nn.Module, *names: str) -> list[Tensor]:
    """The buffers ``names`` of ``module``, read from its buffer dict — where nn.Module keeps
    them, what its attribute lookup falls back to after a failed instance lookup; that
    detour costs about 0.6 µs a buffer, on the order of a small batch's op, and a stateful
    module reads its buffers on every call. A name that is no longer a plain buffer (a
    parametrised one, or one reassigned as a parameter) is read as an attribute."""
    buffers = module._buffers
    try:
        return [buffers[name] for name in names]
    except KeyError:
        return [getattr(module, name) for name in names]


def store(new: tuple[Tensor, ...], state: tuple[Tensor, ...]) -> None:
    """Copy a stage's new state into the module's buffers (``state``), in place (a value
    that is its buffer, which the stage left as it was, is not copied onto itself)."""
    for buffer, value in zip(state, new, strict=True):
        if value is not buffer:
            buffer.copy_(value)


def options_text(**options: Any) -> str:
    """``key=value, ...`` of a module's own hyper-parameters, for ``extra_repr``."""
    return ", ".join(f"{key}={value!r}" for key, value in options.items())
