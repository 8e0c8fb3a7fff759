"""How the tools build a registered stateful selector: one module, in training mode, with
its value checks off (the tools check or make the values themselves)."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from pseudosel.registry import SelectorSpec

__all__ = ["build_module", "takes_argument"]


def build_module(
    spec: SelectorSpec, num_classes: int, num_unlabeled: int | None, options: dict[str, Any]
) -> nn.Module:
    """A fresh module of ``spec`` (:meth:`~pseudosel.registry.SelectorSpec.build`) in
    training mode, built with ``validate=False`` when its constructor takes ``validate``.

    ``num_classes`` and ``num_unlabeled`` reach a constructor that takes them (by name);
    ``options`` may set ``num_unlabeled`` (None: the module's default, e.g. FlexMatch's
    class-wise form).

    Example:
        >>> from pseudosel.registry import selector_spec
        >>> build_module(selector_spec("freematch"), 10, None, {"momentum": 0.99})
        FreeMatchSelector(num_classes=10, momentum=0.99, use_quantile=False, clip_thresh=False)
    """
    options = dict(options)
    num_unlabeled = options.pop("num_unlabeled", num_unlabeled)  # None: left out by build
    if takes_argument(spec.module, "validate"):
        options.setdefault("validate", False)
    return spec.build(num_classes, num_unlabeled=num_unlabeled, **options).train()


def takes_argument(cls: type | None, argument: str, *, by_name: bool = False) -> bool:
    """Whether the constructor of ``cls`` accepts ``argument``: by name, or through
    ``**kwargs`` unless ``by_name``."""
    parameters = inspect.signature(cls).parameters.values()
    return any(
        p.name == argument or (p.kind is inspect.Parameter.VAR_KEYWORD and not by_name)
        for p in parameters
    )
