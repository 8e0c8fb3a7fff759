"""The selector registry: every selector is declared once, by name, and found here.

A :class:`SelectorSpec` says what a selector is and what it needs: its functional selector
(stateless) or module class (stateful), the per-call inputs it needs besides the
probabilities, the outputs it takes (softmax, binary sigmoid, multi-label), the layouts,
how USB's algorithms configure it, how the benchmark runs it and the option sets the tests
use. :func:`~pseudosel.select_reliable`, ``pseudosel compare``, ``pseudosel bench``, the USB
hook, the documentation's selector table and the test zoo all read it.

The built-in selectors are declared in :mod:`pseudosel.registry.builtin`. A user's own
selector joins them with :func:`register_selector` (also as a decorator), from an installed
package through the ``pseudosel.selectors`` entry-point group, or on the command line with
``--plugin MODULE``; see docs/plugins.md.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from pseudosel.inputs import prepare
from pseudosel.selection import Selection

__all__ = [
    "ENTRY_POINT_GROUP",
    "INPUTS",
    "MISSING",
    "NEEDS",
    "BenchCase",
    "SelectorSpec",
    "StatefulCores",
    "UsbMapping",
    "available_selectors",
    "build_selector",
    "check_selection",
    "load_plugin",
    "register_selector",
    "selector_spec",
    "spec_of_function",
    "unregister_selector",
]

#: entry-point group through which an installed package adds selectors
ENTRY_POINT_GROUP = "pseudosel.selectors"
#: per-call inputs a selector may need besides the probabilities: the batch's positions in
#: the unlabelled set (``index``), the labelled weak batch (``probs_labeled``), labelled
#: held-out predictions (fed through the module's ``update_heldout``)
NEEDS = ("index", "labeled", "heldout")
#: the per-call arguments those needs arrive as (not options of the selector)
NEEDS_INPUTS = frozenset({"index", "probs_labeled", "valid_labeled"})
#: the options select_reliable's front door gives every selector function
FRONT_DOOR_OPTIONS = frozenset({"validate", "activation", "multilabel"})
#: the outputs a selector may take: softmax class probabilities, a binary sigmoid output
#: (N, 1, *spatial), a multi-label sigmoid output (N, L, *spatial)
INPUTS = ("softmax", "sigmoid", "multilabel")


def _no_options() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class UsbMapping:
    """How a USB (semilearn) algorithm configures a selector, and where its state lives.

    Attributes:
        settings: selector keyword → USB setting name (read from the algorithm, else from
            ``algorithm.args``), or a function of the algorithm returning the value (or
            :data:`MISSING` for "keep the selector's default").
        state: USB masking-hook attribute that USB's checkpoint code reads (``p_model``,
            ``classwise_acc`` ...) → the module buffer that holds it.
        initial: USB attribute → ``f(num_classes, num_unlabeled)``, what USB's own hook
            holds before its first call.
        hook: the class name of USB's own masking hook this selector replaces (under
            ``semilearn.algorithms``), or "": ``pseudosel bench --peers`` times the two side
            by side (:mod:`pseudosel.tools.bench.peers`).

    Example:
        >>> from pseudosel.registry import selector_spec
        >>> selector_spec("freematch").usb.settings["momentum"]  # USB's ema_p
        'ema_p'
    """

    settings: Mapping[str, str | Callable[[Any], Any]] = field(default_factory=_no_options)
    state: Mapping[str, str] = field(default_factory=_no_options)
    initial: Mapping[str, Callable[[int, int], Any]] = field(default_factory=_no_options)
    hook: str = ""


#: a USB settings reader's answer for "the algorithm has no such setting"
MISSING: Any = object()


@dataclass(frozen=True)
class BenchCase:
    """A row of ``pseudosel bench``: ``label`` (the row name), the selector's ``options``,
    the layouts it runs on (``dense``: True dense only, False classification only, None
    both), and for a stateless selector the extra rows ``"<label>, validate=True"``
    (``validate``) and ``"<label>, compiled"`` (``compiled``; with ``validate`` also
    ``"<label>, compiled, validate=True"``). Timed rows run with ``validate=False``.

    Example:
        >>> from pseudosel.registry import selector_spec
        >>> [case.label for case in selector_spec("freematch").bench]
        ['freematch step', 'freematch step (quantile)']
    """

    label: str
    options: Mapping[str, Any] = field(default_factory=_no_options)
    dense: bool | None = None
    validate: bool = False
    compiled: bool = False


@dataclass(frozen=True)
class StatefulCores:
    """A stateful selector's explicit-state functional stages, called alike:
    ``init(num_classes)`` → state; ``update(probs, state, *, valid, **options)`` → state;
    ``select(probs, state, *, valid, **options)`` → Selection.

    Example:
        >>> import torch
        >>> from pseudosel.registry import selector_spec
        >>> cores = selector_spec("freematch").cores
        >>> probs = torch.tensor([[0.9, 0.1], [0.55, 0.45]])
        >>> state = cores.update(probs, cores.init(2), momentum=0.5)
        >>> cores.select(probs, state).mask
        tensor([ True, False])
    """

    init: Callable[[int], Any]
    update: Callable[..., Any]
    select: Callable[..., Selection]


@dataclass(frozen=True)
class SelectorSpec:
    """Everything pseudosel knows about one selector. Built by :func:`register_selector`.

    Attributes:
        name: the name it is called by (``select_reliable(probs, name)``, the CLI, USB).
        function: the functional selector of a stateless one:
            ``function(probs, *, valid=None, validate=True, activation="softmax",
            multilabel=None, **options) -> Selection`` (a plug-in's own function is wrapped
            into this form: it receives checked class probabilities and ``valid``).
        module: the module class (required for a stateful selector; optional otherwise).
        stateful: keeps state across steps (one module instance must live through training).
        needs: per-call inputs besides the probabilities, from :data:`NEEDS`.
        inputs: the outputs it takes, from :data:`INPUTS`.
        dense: takes dense input (N, K, *spatial). classification: takes (N, K).
        process_group: its statistics are all-reduced under DDP (it takes ``process_group=``).
        cores: the explicit-state functional stages of a stateful selector, if it has them.
        usb: how USB's algorithms configure it (:class:`UsbMapping`).
        bench: the rows ``pseudosel bench`` times (:class:`BenchCase`).
        examples: named option sets ("default" first) the tests and docs run it with.
        train_step: how one training step runs when a module's ``forward`` alone is not it:
            ``train_step(module, probs, valid, **inputs) -> Selection``.
        value_option: the option that ``name:VALUE`` sets on the command line (threshold: tau).
        requires: optional packages it imports when used.
        summary: one line for the documentation's table. source: the paper or code.
        builtin: declared by pseudosel itself.

    Example:
        >>> from pseudosel.registry import selector_spec
        >>> spec = selector_spec("flexmatch")
        >>> spec.stateful, sorted(spec.needs), spec.module.__name__
        (True, ['index'], 'FlexMatchSelector')
        >>> spec.build(10, num_unlabeled=50_000).num_unlabeled
        50000
    """

    name: str
    function: Callable[..., Selection] | None = None
    module: type[nn.Module] | None = None
    stateful: bool = False
    needs: frozenset[str] = frozenset()
    inputs: frozenset[str] = frozenset({"softmax", "sigmoid"})
    dense: bool = True
    classification: bool = True
    process_group: bool = False
    cores: StatefulCores | None = None
    usb: UsbMapping | None = None
    bench: tuple[BenchCase, ...] = ()
    examples: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({"default": {}})
    )
    train_step: Callable[..., Selection] | None = None
    value_option: str | None = None
    requires: tuple[str, ...] = ()
    summary: str = ""
    source: str = ""
    builtin: bool = False

    def build(
        self, num_classes: int | None = None, *, num_unlabeled: int | None = None, **options: Any
    ) -> nn.Module:
        """A fresh module: ``num_classes`` and ``num_unlabeled`` go to the constructor when
        it takes them (by name), ``options`` as given. See :func:`build_selector`."""
        if self.module is None:
            raise ValueError(f"selector {self.name!r} has no module class; call its function")
        accepted = inspect.signature(self.module).parameters
        context = {"num_classes": num_classes, "num_unlabeled": num_unlabeled}
        arguments = {
            key: value
            for key, value in context.items()
            if key in accepted and key not in options and value is not None
        }
        return self.module(**arguments, **options)

    def option_names(self) -> frozenset[str] | None:
        """The keyword options this selector takes (the module's constructor for a stateful
        one, else the function), or None when it takes any keyword (``**options``) and
        answers for itself. The per-call inputs (``probs``, ``valid``, :attr:`needs`) are
        not options.

        Example:
            >>> from pseudosel.registry import selector_spec
            >>> sorted(selector_spec("threshold").option_names())
            ['activation', 'backend', 'multilabel', 'tau', 'validate']
        """
        if self.stateful:
            names = _constructor_options(self.module)
        else:
            names = _keyword_options(getattr(self.function, "plugin_function", self.function))
            if names is not None and hasattr(self.function, "plugin_function"):
                names |= FRONT_DOOR_OPTIONS
        return None if names is None else frozenset(names - {"probs", "valid"} - NEEDS_INPUTS)

    def step(self, module: nn.Module, probs: Tensor, valid: Tensor | None, **inputs: Any):
        """One training step of a built module (``train_step``, else ``forward``), its
        output checked the first time (:func:`check_selection`)."""
        if self.train_step is not None:
            result = self.train_step(module, probs, valid, **inputs)
        else:
            result = module(probs, valid=valid, **inputs)
        _check_once(self, result, probs, valid)
        return result


_REGISTRY: dict[str, SelectorSpec] = {}
_BY_FUNCTION: dict[int, str] = {}
_CHECKED: set[str] = set()
_ENTRY_POINTS_LOADED = False
_DECLARATION_KEYS = frozenset(
    {
        "stateful",
        "needs",
        "inputs",
        "dense",
        "classification",
        "process_group",
        "cores",
        "usb",
        "bench",
        "examples",
        "train_step",
        "value_option",
        "requires",
        "summary",
        "source",
        "module",
    }
)


def register_selector(
    name: str,
    selector: Callable[..., Any] | type[nn.Module] | None = None,
    *,
    overwrite: bool = False,
    builtin: bool = False,
    **declaration: Any,
) -> Any:
    """Register a selector under ``name``; usable as a decorator.

    Args:
        name: the selector's name: letters, digits and ``_``, starting with a letter.
        selector: a functional selector ``fn(probs, *, valid, **options) -> Selection`` —
            it receives checked, detached class probabilities (N, K, *spatial) and the bool
            ``valid`` (N, *spatial) from pseudosel's front door, so shapes, ``valid`` /
            ``ignore_mask``, ``from_logits``, ``activation``, ``weighting`` and the value
            checks come for free — or a module class (stateful selectors: ``forward(probs,
            valid=None, **inputs) -> Selection``; subclass :class:`pseudosel.Selector` to
            get the front door and the shared options). Omitted: returns a decorator.
        overwrite: replace a selector already registered under ``name``.
        builtin: for pseudosel's own declarations.
        **declaration: the :class:`SelectorSpec` fields: ``stateful`` (default: True for a
            module class), ``needs``, ``inputs``, ``dense``, ``classification``,
            ``process_group``, ``cores``, ``usb``, ``bench``, ``examples``, ``train_step``,
            ``value_option``, ``requires``, ``summary``, ``source``; ``module=`` gives a
            stateless function's module class.

    Returns:
        ``selector`` (so the decorator leaves the name bound to the user's object).

    Raises:
        ValueError: the name is taken (without ``overwrite``) or malformed, a declaration
            value is out of its domain, or a stateful selector has no module class.
        TypeError: an unknown declaration key, or a selector without a ``probs`` (or
            ``valid``) argument.

    Example:
        >>> import torch, pseudosel
        >>> @pseudosel.register_selector("top_half", summary="keeps the upper half")
        ... def top_half(probs, *, valid):
        ...     confidence, labels = probs.max(1)
        ...     mask = valid & (confidence > confidence.median())
        ...     return pseudosel.Selection(labels, mask.float(), mask, confidence, valid)
        >>> pseudosel.select_reliable(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), "top_half").mask
        tensor([ True, False])
        >>> pseudosel.registry.unregister_selector("top_half")
    """
    if selector is None:
        return functools.partial(
            register_selector, name, overwrite=overwrite, builtin=builtin, **declaration
        )
    spec = _make_spec(name, selector, builtin, declaration)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {overwrite!r}")
    if name in _REGISTRY and not overwrite:
        taken = _REGISTRY[name]
        where = "a built-in selector" if taken.builtin else "already registered"
        raise ValueError(
            f"selector name {name!r} is {where}; pick another name, or pass overwrite=True "
            "to replace it deliberately"
        )
    unregister_selector(name, missing_ok=True)
    _REGISTRY[name] = spec
    if spec.function is not None:
        _BY_FUNCTION[id(spec.function)] = name
    return selector


def unregister_selector(name: str, *, missing_ok: bool = False) -> None:
    """Remove ``name`` from the registry (a plug-in's tests clean up with it).

    Example:
        >>> import pseudosel
        >>> pseudosel.register_selector("tmp", lambda probs, *, valid: None)  # doctest: +ELLIPSIS
        <function <lambda> at ...>
        >>> pseudosel.registry.unregister_selector("tmp")
        >>> "tmp" in pseudosel.available_selectors()
        False
    """
    spec = _REGISTRY.pop(name, None)
    if spec is None:
        if not missing_ok:
            raise ValueError(f"no selector named {name!r} is registered")
        return
    if spec.function is not None:
        _BY_FUNCTION.pop(id(spec.function), None)
    _CHECKED.discard(name)


def available_selectors(*, stateful: bool | None = None) -> list[str]:
    """The registered names (built-in, then plug-ins, each in registration order), loading
    the ``pseudosel.selectors`` entry points first. ``stateful``: only those (True) or only
    the stateless ones (False).

    Example:
        >>> import pseudosel
        >>> {"csl", "threshold", "flexmatch"} <= set(pseudosel.available_selectors())
        True
    """
    load_entry_points()
    return [
        name for name, spec in _REGISTRY.items() if stateful is None or spec.stateful == stateful
    ]


def selector_spec(name: str) -> SelectorSpec:
    """The :class:`SelectorSpec` registered under ``name``.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: no such selector (the message lists the registered names).

    Example:
        >>> from pseudosel.registry import selector_spec
        >>> selector_spec("threshold").value_option
        'tau'
    """
    if not isinstance(name, str):
        raise TypeError(f"a selector name must be a string, got {type(name).__name__}")
    if name not in _REGISTRY:
        load_entry_points()
    if name not in _REGISTRY:
        names = ", ".join(repr(n) for n in _REGISTRY)
        raise ValueError(
            f"unknown selector {name!r}; registered: {names} (a plug-in registers with "
            "pseudosel.register_selector, see docs/plugins.md)"
        )
    return _REGISTRY[name]


def spec_of_function(function: Callable[..., Any]) -> SelectorSpec | None:
    """The spec whose functional selector is ``function`` (None when unregistered).

    Example:
        >>> from pseudosel import functional as F
        >>> from pseudosel.registry import spec_of_function
        >>> spec_of_function(F.csl).name, spec_of_function(len)
        ('csl', None)
    """
    name = _BY_FUNCTION.get(id(function))
    return None if name is None else _REGISTRY.get(name)


def build_selector(
    name: str,
    num_classes: int | None = None,
    *,
    num_unlabeled: int | None = None,
    **options: Any,
) -> nn.Module:
    """A fresh module of the selector ``name`` (:meth:`SelectorSpec.build`).

    Example:
        >>> from pseudosel.registry import build_selector
        >>> build_selector("freematch", 10, momentum=0.99)
        FreeMatchSelector(num_classes=10, momentum=0.99, use_quantile=False, clip_thresh=False)
    """
    return selector_spec(name).build(num_classes, num_unlabeled=num_unlabeled, **options)


def load_plugin(module: str) -> None:
    """Import ``module`` (a dotted name on ``sys.path``), which registers selectors when
    imported — the ``--plugin`` option of ``pseudosel compare`` and ``pseudosel bench``.

    Raises:
        ValueError: the module cannot be imported (the message says why).

    Example:
        >>> from pseudosel.registry import load_plugin
        >>> load_plugin("no_such_plugin_module")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --plugin no_such_plugin_module: the module could not be imported ...
    """
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ValueError(
            f"--plugin {module}: the module could not be imported ({error}); give a dotted "
            "module name on sys.path (e.g. set PYTHONPATH to its folder)"
        ) from error


def load_entry_points() -> None:
    """Load the installed ``pseudosel.selectors`` entry points, once per process.

    An entry point names a module (imported for its registrations) or a callable that
    registers (called without arguments). One that fails to load is reported with a
    ``RuntimeWarning`` naming it, and the others still load.
    """
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
            if callable(loaded) and not isinstance(loaded, type):
                loaded()
        except Exception as error:  # a broken plug-in must not break pseudosel
            warnings.warn(
                f"the {ENTRY_POINT_GROUP} entry point {point.name!r} ({point.value}) failed "
                f"to load: {error!r}",
                RuntimeWarning,
                stacklevel=2,
            )


def check_selection(name: str, result: object, probs: Tensor, valid: Tensor | None) -> None:
    """Check a selector's output against its input: a :class:`~pseudosel.Selection` whose
    fields have the positions' shape, the documented dtypes and the input's device.

    Raises:
        TypeError: not a Selection, or a field of the wrong dtype (naming selector, field).
        ValueError: a field of the wrong shape or device.

    Example:
        >>> import torch
        >>> from pseudosel import Selection
        >>> from pseudosel.registry import check_selection
        >>> probs, valid = torch.full((3, 2), 0.5), torch.ones(3, dtype=torch.bool)
        >>> bad = Selection(torch.zeros(3), torch.ones(3), valid, torch.ones(3), valid)
        >>> check_selection("mine", bad, probs, valid)
        Traceback (most recent call last):
        ...
        TypeError: selector 'mine': Selection.labels must be torch.int64, got torch.float32
    """
    if not isinstance(result, Selection):
        raise TypeError(
            f"selector {name!r} returned {type(result).__name__}, not a pseudosel.Selection"
        )
    shape = tuple(valid.shape) if valid is not None else (probs.shape[0], *probs.shape[2:])
    for field_name, value in zip(result._fields, result, strict=True):
        if not isinstance(value, Tensor):
            raise TypeError(
                f"selector {name!r}: Selection.{field_name} must be a tensor, got "
                f"{type(value).__name__}"
            )
        if tuple(value.shape) != shape:
            raise ValueError(
                f"selector {name!r}: Selection.{field_name} has shape {tuple(value.shape)}, "
                f"expected the positions' shape {shape}"
            )
        if value.device != probs.device:
            raise ValueError(
                f"selector {name!r}: Selection.{field_name} is on {value.device}, expected "
                f"the input's device {probs.device}"
            )
    expected = {"labels": "long", "mask": "bool", "valid": "bool"}
    for field_name, kind in expected.items():
        value = getattr(result, field_name)
        dtype = torch.long if kind == "long" else torch.bool
        if value.dtype != dtype:
            raise TypeError(
                f"selector {name!r}: Selection.{field_name} must be {dtype}, got {value.dtype}"
            )
    for field_name in ("weight", "score"):
        value = getattr(result, field_name)
        if not value.is_floating_point():
            raise TypeError(
                f"selector {name!r}: Selection.{field_name} must be a float tensor, got "
                f"{value.dtype}"
            )


def _check_once(spec: SelectorSpec, result: object, probs: Tensor, valid: Tensor | None) -> None:
    """:func:`check_selection` on a selector's first output (metadata only, cheap, but a
    training step's every microsecond counts: once per name and process)."""
    if spec.name in _CHECKED:
        return
    check_selection(spec.name, result, probs, valid)
    _CHECKED.add(spec.name)


def _make_spec(
    name: object, selector: object, builtin: bool, declaration: dict[str, Any]
) -> SelectorSpec:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ValueError(
            f"a selector name must be an identifier such as 'my_selector', got {name!r}"
        )
    unknown = sorted(set(declaration) - _DECLARATION_KEYS)
    if unknown:
        raise TypeError(
            f"register_selector({name!r}): unknown declaration {unknown}; the keys are "
            f"{sorted(_DECLARATION_KEYS)}"
        )
    is_class = isinstance(selector, type)
    if is_class and not issubclass(selector, nn.Module):
        raise TypeError(
            f"register_selector({name!r}): a class must be an nn.Module selector, got "
            f"{selector.__name__}"
        )
    if not is_class and not callable(selector):
        raise TypeError(
            f"register_selector({name!r}): selector must be a function or a module class, "
            f"got {type(selector).__name__}"
        )
    target = selector.forward if is_class else selector
    _check_arguments(name, target, skip_self=is_class)
    stateful = declaration.pop("stateful", is_class)
    module = selector if is_class else declaration.pop("module", None)
    if module is not None and not (isinstance(module, type) and issubclass(module, nn.Module)):
        raise TypeError(f"register_selector({name!r}): module must be an nn.Module class")
    function = None
    if not is_class:
        function = selector if builtin else _front_door(name, selector, declaration)
    if stateful and module is None:
        raise ValueError(
            f"register_selector({name!r}): a stateful selector needs its module class (the "
            "state must live in one instance through training)"
        )
    fields = _checked_declaration(name, declaration)
    return SelectorSpec(
        name=name,
        function=function,
        module=module,
        stateful=bool(stateful),
        builtin=builtin,
        **fields,
    )


def _keyword_options(function: Callable[..., Any]) -> set[str] | None:
    """The named parameters of ``function``; a ``**front`` adds the front door's options
    (``validate``, ``activation``: :func:`pseudosel.inputs.per_class_inputs`); any other
    ``**kwargs`` makes the set open (None)."""
    names: set[str] = set()
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            if parameter.name != "front":
                return None
            names |= {"validate", "activation"}
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            names.add(parameter.name)
    return names


def _constructor_options(module: type[nn.Module]) -> set[str] | None:
    """The keywords a module's constructor takes, following ``**shared`` up its bases to the
    first constructor without ``**kwargs`` (pseudosel's base classes end the chain: their
    ``**unexpected`` only names what it refuses)."""
    from pseudosel.selectors._base import CheckedModule

    names: set[str] = set()
    for cls in module.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = list(inspect.signature(vars(cls)["__init__"]).parameters.values())[1:]
        open_ended = False
        for parameter in parameters:
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                open_ended = True
            elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
                names.add(parameter.name)
        if not open_ended or cls is CheckedModule:
            return names
    return None


def _check_arguments(name: str, target: Callable[..., Any], *, skip_self: bool) -> None:
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError) as error:
        raise TypeError(f"register_selector({name!r}): cannot read its signature") from error
    if skip_self and parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    names = [p.name for p in parameters]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    if not names or names[0] != "probs":
        raise TypeError(
            f"register_selector({name!r}): the selector's first argument must be probs "
            f"(the (N, K, *spatial) class probabilities), got {names[:1] or 'none'}"
        )
    if "valid" not in names and not takes_any:
        raise TypeError(
            f"register_selector({name!r}): the selector must take valid= (the bool "
            "(N, *spatial) mask of the positions that take part)"
        )


def _checked_declaration(name: str, declaration: dict[str, Any]) -> dict[str, Any]:
    """The declaration's values, checked, as SelectorSpec fields."""
    fields = dict(declaration)
    for key, allowed in (("needs", NEEDS), ("inputs", INPUTS)):
        if key in fields:
            values = fields[key]
            if isinstance(values, str) or not isinstance(values, Iterable):
                raise TypeError(
                    f"register_selector({name!r}): {key} must be a collection of names from "
                    f"{allowed}, got {values!r}"
                )
            values = frozenset(values)
            if not values <= set(allowed):
                raise ValueError(
                    f"register_selector({name!r}): {key} must be drawn from {allowed}, got "
                    f"{sorted(values)}"
                )
            fields[key] = values
    if "inputs" in fields and "softmax" not in fields["inputs"]:
        raise ValueError(f"register_selector({name!r}): inputs must include 'softmax'")
    for key in ("dense", "classification", "process_group"):
        if key in fields and not isinstance(fields[key], bool):
            raise TypeError(f"register_selector({name!r}): {key} must be a bool")
    if "bench" in fields:
        fields["bench"] = tuple(fields["bench"])
        if not all(isinstance(case, BenchCase) for case in fields["bench"]):
            raise TypeError(f"register_selector({name!r}): bench must hold BenchCase entries")
    if "usb" in fields and not isinstance(fields["usb"], UsbMapping | None):
        raise TypeError(f"register_selector({name!r}): usb must be a UsbMapping")
    if "cores" in fields and not isinstance(fields["cores"], StatefulCores | None):
        raise TypeError(f"register_selector({name!r}): cores must be a StatefulCores")
    if "examples" in fields:
        examples = fields["examples"]
        if not isinstance(examples, Mapping) or not examples:
            raise TypeError(f"register_selector({name!r}): examples must map names to option dicts")
        fields["examples"] = MappingProxyType({k: dict(v) for k, v in examples.items()})
    if "requires" in fields:
        fields["requires"] = tuple(fields["requires"])
    return fields


def _front_door(
    name: str, function: Callable[..., Selection], declaration: Mapping[str, Any]
) -> Callable[..., Selection]:
    """A plug-in's function behind pseudosel's front door, in the functional selectors'
    standard form (:attr:`SelectorSpec.function`)."""
    inputs = frozenset(declaration.get("inputs", ("softmax", "sigmoid")))

    @functools.wraps(function)
    def selector(
        probs: Tensor,
        *,
        valid: Tensor | None = None,
        validate: bool = True,
        activation: str = "softmax",
        multilabel: bool | None = None,
        **options: Any,
    ) -> Selection:
        if activation != "softmax" and "sigmoid" not in inputs:
            raise ValueError(f"selector {name!r} takes softmax class probabilities only")
        probs, valid, _ = prepare(
            probs,
            valid,
            activation=activation,
            multilabel=multilabel,
            validate=validate,
            per_class_state=None if "multilabel" in inputs else name,
        )
        with torch.no_grad():
            result = function(probs, valid=valid, **options)
        # checked on the first eager call (the check reads shapes and values: not traced)
        if name not in _CHECKED and not torch.compiler.is_compiling():
            check_selection(name, result, probs, valid)
            _CHECKED.add(name)
        return result

    del selector.__wrapped__  # inspect shows the wrapper's (standard) signature
    selector.plugin_function = function  # type: ignore[attr-defined]  (its own options)
    return selector
