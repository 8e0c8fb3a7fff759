"""Selector specs on the command line: ``name``, ``name:VALUE`` or ``name:key=value,...``.

The name is any registered selector (:func:`pseudosel.available_selectors`: the built-in
ones and those of loaded plug-ins). ``name:VALUE`` sets the selector's declared value option
(:attr:`~pseudosel.registry.SelectorSpec.value_option`, e.g. ``threshold:0.9`` → ``tau=0.9``)
and takes a number; ``name:key=value,key2=value2`` sets any of its options, each value read
as an int, a float, ``True``/``False``, ``None`` or else a string.

:func:`check_selector` also tries the options on the selector itself (a stateless one runs
once on a tiny input, a stateful one is built), so that a value the selector refuses stops
the command before the predictions file is read, with the selector's own message.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from pseudosel.registry import SelectorSpec, selector_spec
from pseudosel.tools.modules import build_module

__all__ = [
    "RESERVED_OPTIONS",
    "check_selector",
    "parse_selector",
    "parse_value",
]

#: arguments that ``pseudosel compare`` passes itself: never selector options
RESERVED_OPTIONS = frozenset(
    {
        "probs",
        "valid",
        "validate",
        "index",
        "probs_labeled",
        "num_classes",
        "activation",
        "multilabel",
        "from_logits",
        "ignore_mask",
        "ignore_index",
    }
)


def parse_value(text: str) -> Any:
    """An option value from the command line: int, float, bool, None, or the string itself.

    Example:
        >>> [parse_value(t) for t in ("3", "0.5", "1e-3", "True", "none", "convex")]
        [3, 0.5, 0.001, True, None, 'convex']
    """
    words = {"true": True, "false": False, "none": None}
    if text.lower() in words:
        return words[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_selector(text: object) -> tuple[str, dict[str, Any]]:
    """Split a selector spec into ``(name, options)``; raise if malformed.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: an unregistered name (the message lists the registered ones), a bare
            value on a selector without a value option or one that is not a number, an
            option that is not ``key=value`` or that ``pseudosel compare`` sets itself.

    Example:
        >>> parse_selector("threshold:0.9")
        ('threshold', {'tau': 0.9})
        >>> parse_selector("freematch:momentum=0.99,use_quantile=True")
        ('freematch', {'momentum': 0.99, 'use_quantile': True})
        >>> parse_selector("csl")
        ('csl', {})
    """
    if not isinstance(text, str):
        raise TypeError(f"a selector spec must be a string like 'threshold:0.9', got {text!r}")
    name, colon, rest = text.partition(":")
    try:
        spec = selector_spec(name)
    except ValueError as error:
        raise ValueError(
            f"{error}; write a registered name, e.g. threshold:0.9 (--plugin MODULE loads a "
            "plug-in's selectors first)"
        ) from None
    if not colon:
        return name, {}
    if "=" not in rest:
        return name, {_value_option(spec, text): _number(spec, text, rest)}
    options: dict[str, Any] = {}
    for item in rest.split(","):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier():
            raise ValueError(
                f"{text!r}: {item!r} is not key=value; write e.g. {name}:key=value,key2=value2"
            )
        if key in RESERVED_OPTIONS:
            raise ValueError(
                f"{text!r}: {key}= is set by pseudosel compare itself; the options after "
                f"{name}: are the selector's hyper-parameters (e.g. {_example(spec)})"
            )
        if key in options:
            raise ValueError(f"{text!r}: {key}= is given twice")
        options[key] = parse_value(value.strip())
    return name, options


def check_selector(text: object) -> tuple[SelectorSpec, dict[str, Any]]:
    """:func:`parse_selector`, then the options tried on the selector itself.

    Returns:
        The selector's :class:`~pseudosel.registry.SelectorSpec` and its options.

    Raises:
        TypeError, ValueError: as :func:`parse_selector`; ``ValueError`` when the selector
            refuses its options (its own message, after the spec) or is one that ``pseudosel
            compare`` cannot run (it needs the labelled batch, which a predictions file
            does not hold).

    Example:
        >>> check_selector("threshold:1.5")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: 'threshold:1.5': tau '1.5' is refused by threshold: tau must be in [0, 1], ...
    """
    name, options = parse_selector(text)
    spec = selector_spec(name)
    if "labeled" in spec.needs:
        raise ValueError(
            f"{name} needs the labelled batch's predictions at every step (probs_labeled=), "
            "and a predictions file holds the unlabelled predictions only: it cannot run in "
            "pseudosel compare; compare it in a training loop (select_reliable(probs, "
            f"{name!r}, probs_labeled=...))"
        )
    try:
        _probe(spec, options)
    except (TypeError, ValueError) as error:
        raise ValueError(_refusal(spec, text, options, error)) from error
    return spec, options


def _probe(spec: SelectorSpec, options: dict[str, Any]) -> None:
    """Run a stateless selector once on a tiny input, or build a stateful one: the
    selector's own checks judge the options."""
    from pseudosel.functional.separation import load_variants

    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    if not spec.classification:  # the same rows as a 2 x 2 image
        probs = probs.T.reshape(1, 2, 2, 2)
    if spec.stateful:
        per_sample = "index" in spec.needs and probs.dim() == 2
        build_module(spec, 2, probs.shape[0] if per_sample else None, options)
    else:
        load_variants(options)
        spec.function(probs, valid=None, validate=False, **options)


def _value_option(spec: SelectorSpec, text: str) -> str:
    if spec.value_option is None:
        raise ValueError(
            f"{text!r}: {spec.name} takes no bare value (name:VALUE sets a selector's value "
            f"option, and {spec.name} declares none); set its options by name, e.g. "
            f"{_example(spec)}"
        )
    return spec.value_option


def _number(spec: SelectorSpec, text: str, value: str) -> float | int:
    parsed = parse_value(value)
    if isinstance(parsed, bool) or not isinstance(parsed, int | float):
        raise ValueError(
            f"{text!r}: {spec.value_option} {value!r} is not a number; write e.g. {_example(spec)}"
        )
    return parsed


def _refusal(spec: SelectorSpec, text: object, options: dict[str, Any], error: Exception) -> str:
    """The message for options the selector refused: the spec, what it set, the reason."""
    _, _, rest = str(text).partition(":")
    if rest and "=" not in rest:
        what = f"{spec.value_option} {rest!r} is refused by {spec.name}"
    elif options:
        what = f"{spec.name} refuses its options"
    else:
        what = f"{spec.name} cannot run with its default options"
    return f"{text!r}: {what}: {error}; write e.g. {_example(spec)}"


def _example(spec: SelectorSpec) -> str:
    """A spec that the selector takes: its value option at its default, else its first
    non-empty example option set, else its first option at its default, else its name."""
    target = spec.module if spec.stateful else spec.function
    parameters = inspect.signature(target).parameters
    if spec.value_option in parameters:
        default = parameters[spec.value_option].default
        if _shown(default) and not isinstance(default, str):
            return f"{spec.name}:{default}"
    for example in spec.examples.values():
        shown = ",".join(f"{key}={value}" for key, value in example.items() if _shown(value))
        if shown:
            return f"{spec.name}:{shown}"
    for parameter in parameters.values():
        hidden = RESERVED_OPTIONS | {"num_unlabeled", "process_group", "weighting"}
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.name not in hidden:
            if _shown(parameter.default):
                return f"{spec.name}:{parameter.name}={parameter.default}"
    return spec.name


def _shown(value: object) -> bool:
    """Whether ``value`` can be written back on the command line (parse_value reads it)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, bool | int | str)
