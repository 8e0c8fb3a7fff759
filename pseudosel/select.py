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
from pseudosel.functional.csl import CSL_PRESETS
from pseudosel.functional.separation import VARIANT_MODULES
from pseudosel.selection import Selection
from pseudosel.validation import check_probs, compute_dtype, resolve_valid

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
        from_logits: apply softmax over dim 1 first (in float32 for half inputs).
        validate: for a named method, check that valid positions hold probabilities.
        **options: keyword options of the named method, e.g. ``tau=0.9`` for
            ``"threshold"`` or ``alpha=8.0`` for ``"csl"``; for a module instance, per-call
            inputs of its ``forward`` such as ``index=`` (FlexMatch) or ``probs_labeled=``
            (AdaMatch).

    Returns:
        :class:`~pseudosel.Selection` of shape (N, *spatial) per field.

    Example:
        >>> import torch
        >>> from pseudosel import select_reliable
        >>> logits = torch.randn(4, 10)
        >>> sel = select_reliable(logits, "threshold", from_logits=True, tau=0.5)
        >>> sel.labels.shape, sel.weight.dtype
        (torch.Size([4]), torch.float32)
    """
    check_probs(probs, name="logits" if from_logits else "probs")
    probs = probs.detach()
    if from_logits:
        probs = probs.softmax(1, dtype=compute_dtype(probs.dtype))
    valid = resolve_valid(probs, valid, ignore_mask=ignore_mask, ignore_index=ignore_index)
    if isinstance(method, nn.Module):
        inputs = set(inspect.signature(method.forward).parameters) - {"probs", "valid"}
        unknown = sorted(set(options) - inputs)
        if unknown:
            raise TypeError(
                f"{unknown} are not per-call inputs of {type(method).__name__}.forward "
                f"(those are {sorted(inputs) or 'none'}); hyper-parameters are constructor "
                "arguments of a selector module"
            )
        return method(probs, valid=valid, **options)
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
        return SELECTORS[method](probs, valid=valid, validate=validate, **options)
