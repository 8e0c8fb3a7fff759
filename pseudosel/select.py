"""`select_reliable`: the one call a training loop needs, with the selector chosen by name."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.activation import apply_activation
from pseudosel.functional.csl import CSL_PRESETS
from pseudosel.functional.separation import VARIANT_MODULES
from pseudosel.selection import WEIGHTINGS, Selection
from pseudosel.validation import check_activation, check_choice, check_probs, resolve_valid

__all__ = ["SELECTORS", "STATEFUL", "select_reliable"]


def load_csl_variants(options: dict[str, Any]) -> None:
    """Import the optional module behind a CSL ``solver=``/``boundary=`` option (e.g.
    ``solver="cvxpy"`` → :mod:`pseudosel.convex`), which registers it with the split step:
    functional code never imports the convex layer itself."""
    for key in ("solver", "boundary"):
        module = VARIANT_MODULES.get(options.get(key))
        if module is not None:
            importlib.import_module(module)


def _csl_max_margin(probs: Tensor, **options: Any) -> Selection:
    """CSL with the experimental max-margin boundary (loads pseudosel.max_margin)."""
    load_csl_variants({"boundary": "max_margin"})
    return F.csl(probs, **{"boundary": "max_margin", **options})


# Name → stateless functional selector.
SELECTORS: dict[str, Callable[..., Selection]] = {
    # CSL as the authors' ICCV 2025 code runs it (CSL_PRESETS["csl"]: F.csl's defaults)
    "csl": F.csl,
    # experimental, beyond the paper (needs cvxpy at call time)
    "csl_max_margin": _csl_max_margin,
    "threshold": F.threshold,
    "adamatch": F.adamatch,
    "entropy_split": F.entropy_split,
    # CSL as the CoVar code runs it: linear cluster rule (λ = 0.25), g_scale 0.5; options
    # passed to select_reliable override these
    "csl_covar": functools.partial(F.csl, **CSL_PRESETS["csl_covar"]),
}
# Selectors that keep state across steps: one instance must live through training.
STATEFUL = {
    "flexmatch": "FlexMatchSelector",
    "freematch": "FreeMatchSelector",
    "softmatch": "SoftMatchSelector",
    "dash": "DashSelector",
    "u2pl": "EntropySplitSelector",
    "corrmatch": "CorrMatchSelector",
    "adsh": "AdshSelector",
    # experimental: thresholds certified on held-out labels (observe_heldout, calibrate)
    "precision_target": "PrecisionTargetSelector",
}


def select_reliable(
    probs: Tensor,
    method: str | nn.Module = "csl",
    *,
    valid: Tensor | None = None,
    ignore_mask: Tensor | None = None,
    ignore_index: int = 255,
    from_logits: bool = False,
    validate: bool = True,
    activation: str | None = None,
    weighting: str | None = None,
    **options: Any,
) -> Selection:
    """Choose reliable pseudo-labels from (weak-view) predictions.

    A drop-in replacement for ``mask = probs.max(1).values >= 0.95``.

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities (or logits with ``from_logits``);
            detached inside, so passing a tensor that requires grad is fine.
        method: a stateless selector's name — ``"csl"`` (default; the authors' ICCV
            code), ``"csl_covar"`` (CSL as the CoVar code configures it),
            ``"csl_max_margin"`` (experimental), ``"threshold"``, ``"adamatch"`` (pass
            ``probs_labeled=``) or ``"entropy_split"`` — or a selector
            module instance such as :class:`~pseudosel.CSLSelector` or
            :class:`~pseudosel.FlexMatchSelector`; a module brings its own options, state
            and ``validate`` setting.
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
    activation, weighting = _output_options(method, activation, weighting)
    sigmoid = activation == "sigmoid"
    check_probs(probs, name="logits" if from_logits else "probs", min_classes=1 if sigmoid else 2)
    probs = probs.detach()
    if from_logits:
        probs = apply_activation(probs, activation)
    valid = resolve_valid(
        probs, valid, ignore_mask=ignore_mask, ignore_index=ignore_index, activation=activation
    )
    if weighting == "hard":
        return _select(probs, method, valid, validate, activation, options).hard()
    return _select(probs, method, valid, validate, activation, options)


def _output_options(
    method: str | nn.Module, activation: str | None, weighting: str | None
) -> tuple[str, str]:
    """``activation`` and ``weighting`` resolved against a module's own settings."""
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


def _select(
    probs: Tensor,
    method: str | nn.Module,
    valid: Tensor,
    validate: bool,
    activation: str,
    options: dict[str, Any],
) -> Selection:
    if isinstance(method, nn.Module):
        _refuse_alignment(method)
        inputs = set(inspect.signature(method.forward).parameters) - {"probs", "valid"}
        unknown = sorted(set(options) - inputs)
        if unknown:
            raise TypeError(
                f"{unknown} are not per-call inputs of {type(method).__name__}.forward "
                f"(those are {sorted(inputs) or 'none'}); hyper-parameters are constructor "
                "arguments of a selector module"
            )
        selection = method(probs, valid=valid, **options)
        if not isinstance(selection, Selection):
            raise TypeError(
                f"method={type(method).__name__} returned {type(selection).__name__}, not a "
                "pseudosel.Selection: select_reliable takes selector modules only"
            )
        return selection
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a selector name or an nn.Module selector, got {type(method).__name__}"
        )
    if method in STATEFUL:
        raise ValueError(
            f"{method!r} keeps state across training steps: create "
            f"pseudosel.{STATEFUL[method]}(...) once and pass the instance as method="
        )
    if method not in SELECTORS:
        names = ", ".join(repr(name) for name in SELECTORS)
        raise ValueError(f"method must be one of {names} or a selector module, got {method!r}")
    load_csl_variants(options)
    with torch.no_grad():
        return SELECTORS[method](
            probs, valid=valid, validate=validate, activation=activation, **options
        )


def _refuse_alignment(method: nn.Module) -> None:
    """Distribution alignment transforms probabilities; it selects nothing."""
    from pseudosel.selectors import DistributionAlignment, DistributionAlignmentQueue

    if isinstance(method, (DistributionAlignment, DistributionAlignmentQueue)):
        name = type(method).__name__
        raise TypeError(
            f"method={name} is not a selector: it returns aligned probabilities, not a "
            f"Selection. Apply it first and select on its output, e.g. "
            f"select_reliable({name.lower()}(probs), FreeMatchSelector(K)) (docs/choosing.md: "
            "distribution alignment is used before a selector)"
        )
