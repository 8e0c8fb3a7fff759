"""`select_reliable`: the one call a training loop needs, with the selector chosen by name."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from pseudosel._deprecation import warn_once
from pseudosel.detection import DetectionBatch
from pseudosel.functional.separation import load_variants
from pseudosel.inputs import prepare
from pseudosel.registry import (
    FRONT_DOOR_OPTIONS,
    NEEDS_INPUTS,
    SelectorSpec,
    check_selection,
    selector_spec,
)
from pseudosel.selection import WEIGHTINGS, Selection
from pseudosel.selectors._base import Alignment, Selector
from pseudosel.validation import check_activation, check_choice

__all__ = ["select_reliable"]


def select_reliable(
    probs: Tensor | DetectionBatch,
    method: str | nn.Module = "csl",
    *,
    valid: Tensor | None = None,
    ignore_mask: Tensor | None = None,
    ignore_index: int = 255,
    from_logits: bool = False,
    validate: bool = True,
    activation: str | None = None,
    multilabel: bool | None = None,
    num_classes: int | None = None,
    weighting: str | None = None,
    **options: Any,
) -> Selection:
    """Choose reliable pseudo-labels from (weak-view) predictions.

    A drop-in replacement for ``mask = probs.max(1).values >= 0.95``.

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities (or logits with ``from_logits``);
            detached inside, so passing a tensor that requires grad is fine. The class axis
            is dim 1; channels-last input needs ``probs.movedim(-1, 1)``. Or a
            :class:`~pseudosel.detection.DetectionBatch` of teacher detections: its
            ``scores`` (N, K, M) with its ``valid`` padding mask, and for a named method
            no value check (box scores are not a distribution; a module keeps its own
            ``validate``: build it with ``validate=False``). docs/detection.md.
        method: a stateless selector's name — ``"csl"`` (default; the authors' ICCV
            code), ``"csl_covar"`` (CSL as the CoVar code configures it),
            ``"csl_max_margin"`` (experimental), ``"threshold"``, ``"adamatch"`` (pass
            ``probs_labeled=``), ``"entropy_split"`` or any registered plug-in
            (:func:`pseudosel.available_selectors`) — or a selector module instance such as
            :class:`~pseudosel.CSLSelector` or :class:`~pseudosel.FlexMatchSelector`; a
            module brings its own options, state and ``validate`` setting.
        valid: optional bool (N, *spatial); False marks ignored positions.
        ignore_mask: optional integer (N, *spatial) map, UniMatch's convention: positions
            equal to ``ignore_index`` are ignored. Exclusive with ``valid``.
        ignore_index: the ignored value of ``ignore_mask``. Default 255.
        from_logits: apply the activation first — softmax over dim 1, or the element-wise
            sigmoid with ``activation="sigmoid"`` (in float32 for half inputs).
        validate: for a named method, check that valid positions hold probabilities.
        activation: ``"softmax"`` (``probs`` holds K class probabilities at dim 1) or
            ``"sigmoid"``: (N, 1, *spatial) is a binary output p, read as the two classes
            (1 − p, p) (label 1 = positive), and (N, L, *spatial) with L > 1 holds L
            independent labels, selected per (sample, label): ``valid``/``ignore_mask`` and
            every field are then (N, L, *spatial). Which selectors support multi-label:
            docs/binary.md. Default None: ``"softmax"`` for a named method, the module's own
            ``activation`` for a module (an explicit value must match it).
        multilabel: for ``"sigmoid"``: True when dim 1 holds L labels, False for one binary
            channel; None (default) reads it from the shape, except that a 3-D (N, X, Y)
            sigmoid output is refused until it is told (a binary map without its channel
            dim — pass ``probs.unsqueeze(1)`` — or X labels over Y positions).
        num_classes: the class count K expected at dim 1 (default None: not checked). With
            it, channels-last input — K in the last dim — is refused even as logits, whose
            values cannot show the layout. When dim 1 and the last dim both equal K the
            input is read as channels-first.
        weighting: ``"soft"`` (the selector's own weights) or ``"hard"`` (weight = mask as
            0/1, :meth:`~pseudosel.Selection.hard`). Default None: ``"soft"`` for a named
            method, the module's own ``weighting`` for a module; ``"hard"`` hardens any
            module's output, ``"soft"`` with a hard module is an error.
        **options: keyword options of the named method, e.g. ``tau=0.9`` for
            ``"threshold"`` or ``alpha=8.0`` for ``"csl"``; for a module instance, per-call
            inputs of its ``forward`` such as ``index=`` (FlexMatch) or ``probs_labeled=``
            (AdaMatch).

    Returns:
        :class:`~pseudosel.Selection` of shape (N, *spatial) per field ((N, L, *spatial) for
        a multi-label sigmoid output).

    Example:
        >>> import torch
        >>> from pseudosel import select_reliable
        >>> logits = torch.randn(4, 10)
        >>> sel = select_reliable(logits, "threshold", from_logits=True, tau=0.5)
        >>> sel.labels.shape, sel.weight.dtype
        (torch.Size([4]), torch.float32)
        >>> masks = torch.randn(2, 1, 8, 8)          # one sigmoid channel: binary
        >>> select_reliable(masks, "threshold", from_logits=True, activation="sigmoid").mask.shape
        torch.Size([2, 8, 8])
    """
    if isinstance(probs, DetectionBatch):
        if valid is not None or ignore_mask is not None:
            raise ValueError(
                "probs is a DetectionBatch, which carries its own valid mask (its padding): "
                "pass neither valid nor ignore_mask"
            )
        # box scores, not a distribution over the classes: nothing for the value check
        probs, valid, validate = probs.scores, probs.valid, False
    activation, weighting = _output_options(method, activation, weighting)
    if isinstance(method, nn.Module):
        selection = _select_with_module(
            method,
            probs,
            options,
            valid=valid,
            ignore_mask=ignore_mask,
            ignore_index=ignore_index,
            from_logits=from_logits,
            validate=validate,
            activation=activation,
            multilabel=multilabel,
            num_classes=num_classes,
        )
    else:
        spec = selector_spec(method)
        if spec.stateful:
            cls = spec.module
            where = f"pseudosel.{cls.__name__}" if spec.builtin else cls.__qualname__
            raise ValueError(
                f"{method!r} keeps state across training steps: create {where}(...) once "
                f"(or pseudosel.registry.build_selector({method!r}, K)) and pass the "
                "instance as method="
            )
        inputs = prepare(
            probs,
            valid,
            ignore_mask=ignore_mask,
            ignore_index=ignore_index,
            from_logits=from_logits,
            activation=activation,
            multilabel=multilabel,
            num_classes=num_classes,
            validate=False,
            to_classes=False,
        )
        _check_option_names(spec, options)
        load_variants(options)
        with torch.no_grad():
            selection = spec.function(
                inputs.probs,
                valid=None if inputs.all_valid else inputs.valid,
                validate=validate,
                activation=activation,
                multilabel=multilabel,
                **options,
            )
    return selection.hard() if weighting == "hard" else selection


def _check_option_names(spec: SelectorSpec, options: dict[str, Any]) -> None:
    """A misspelt option (``threshold=`` for ``tau=``) is refused with the accepted names,
    not left to the function's own bare "unexpected keyword" message."""
    accepted = spec.option_names()
    if accepted is None:  # the function takes any keyword and answers for itself
        return
    per_call = NEEDS_INPUTS if spec.needs else frozenset()  # e.g. AdaMatch's probs_labeled
    unknown = sorted(set(options) - accepted - per_call)
    if unknown:
        raise TypeError(
            f"select_reliable({spec.name!r}): unknown option(s) {', '.join(unknown)}; "
            f"{spec.name!r} takes {', '.join(sorted(accepted - FRONT_DOOR_OPTIONS)) or 'none'}"
        )


def _output_options(
    method: str | nn.Module, activation: str | None, weighting: str | None
) -> tuple[str, str]:
    """``activation`` and ``weighting`` resolved against a module's own settings."""
    if not isinstance(method, str | nn.Module):
        raise TypeError(
            f"method must be a selector name or an nn.Module selector, got {type(method).__name__}"
        )
    own_activation = getattr(method, "activation", "softmax")
    own_weighting = getattr(method, "weighting", "soft")
    if activation is None:
        activation = own_activation if isinstance(method, nn.Module) else "softmax"
    activation = check_activation(activation)
    if weighting is None:
        weighting = own_weighting if isinstance(method, nn.Module) else "soft"
    weighting = check_choice("weighting", weighting, WEIGHTINGS)
    if isinstance(method, nn.Module):
        name = type(method).__name__
        if activation != own_activation and not hasattr(method, "activation"):
            raise ValueError(
                f"activation={activation!r} was passed, but {name} has no activation "
                "setting; pass it class probabilities, e.g. "
                "pseudosel.functional.class_probs(p, 'sigmoid') for a binary output"
            )
        if activation != own_activation:
            raise ValueError(
                f"activation={activation!r} was passed, but the {name} module was built "
                f"with activation={own_activation!r}: a module brings its own activation; "
                f"build it with activation={activation!r}"
            )
        if weighting == "soft" and own_weighting == "hard":
            raise ValueError(
                f"weighting='soft' was passed, but the {name} module was built with "
                "weighting='hard'; build it with weighting='soft'"
            )
    return activation, weighting


def _select_with_module(
    method: nn.Module, probs: Tensor, options: dict[str, Any], **front_door: Any
) -> Selection:
    """A module instance: a pseudosel :class:`~pseudosel.Selector` runs its own value check
    and conversion; any other module gets the whole front door here, and its output is
    checked."""
    name = type(method).__name__
    if isinstance(method, Alignment):
        raise TypeError(
            f"method={name} is not a selector: it returns aligned probabilities, not a "
            f"Selection. Apply it first and select on its output, e.g. "
            f"select_reliable({name.lower()}(probs), FreeMatchSelector(K)) (docs/choosing.md: "
            "distribution alignment is used before a selector)"
        )
    inputs = set(inspect.signature(method.forward).parameters) - {"probs", "valid"}
    unknown = sorted(set(options) - inputs)
    if unknown:
        raise TypeError(
            f"{unknown} are not per-call inputs of {name}.forward (those are "
            f"{sorted(inputs) or 'none'}); hyper-parameters are constructor arguments of a "
            "selector module"
        )
    own_check = isinstance(method, Selector)
    if own_check and front_door["num_classes"] is None:
        front_door["num_classes"] = method.num_classes
    if own_check:  # the module checks the values and converts a sigmoid output itself
        front_door["validate"] = False
    prepared = prepare(probs, **front_door, to_classes=not own_check)
    selection = method(prepared.probs, valid=prepared.valid, **options)
    if not isinstance(selection, Selection):
        raise TypeError(
            f"method={name} returned {type(selection).__name__}, not a pseudosel.Selection: "
            "select_reliable takes selector modules only"
        )
    if not own_check:
        check_selection(name, selection, prepared.probs, prepared.valid)
    return selection


def __getattr__(name: str) -> Any:
    """``SELECTORS`` and ``STATEFUL``: deprecated views of the registry (warn once)."""
    from pseudosel.registry import available_selectors

    if name == "SELECTORS":
        warn_once(
            "select.SELECTORS",
            "pseudosel.select.SELECTORS is deprecated and will be removed; use "
            "pseudosel.available_selectors(stateful=False) and pseudosel.registry.selector_spec",
        )
        return {n: selector_spec(n).function for n in available_selectors(stateful=False)}
    if name == "STATEFUL":
        warn_once(
            "select.STATEFUL",
            "pseudosel.select.STATEFUL is deprecated and will be removed; use "
            "pseudosel.available_selectors(stateful=True)",
        )
        return {n: selector_spec(n).module.__name__ for n in available_selectors(stateful=True)}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
