"""Run any pseudosel selector inside a USB (semilearn) algorithm, as its masking hook.

USB algorithms ask the hook registered as ``"MaskingHook"`` for the per-sample weights of the
unlabelled loss::

    mask = self.call_hook("masking", "MaskingHook", logits_x_ulb=..., idx_ulb=..., ...)

:class:`PseudoselMaskingHook` is a subclass of semilearn's ``MaskingHook`` that answers this
call with a pseudosel selection — the soft weight (CSL, SoftMatch) or the hard mask as
floats. Register it in place of the algorithm's own hook (USB keeps hooks by name)::

    from pseudosel.integrations.usb import PseudoselMaskingHook

    algorithm = get_algorithm(config, net_builder, tb_log, logger)  # fixmatch, flexmatch, ...
    algorithm.register_hook(PseudoselMaskingHook("csl"), "MaskingHook")

Every registered selector works by name, plug-ins included: what the hook needs to know about
one — stateless or stateful, the per-call inputs it needs, the USB settings it reads and the
USB attributes that hold its state — comes from its :class:`~pseudosel.registry.SelectorSpec`
(``spec.needs`` and ``spec.usb``, a :class:`~pseudosel.registry.UsbMapping`). This module
holds no list of selector names.

Importing this module imports semilearn (``import pseudosel`` does not). Settings come from
the algorithm unless given as options, the state of a stateful selector lives where the
algorithm's checkpoint code looks for it, and every checkpoint also carries the hook's own
state under :data:`CHECKPOINT_KEY`. See docs/usb.md.
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any

import torch
from torch import Tensor, nn

import pseudosel
from pseudosel._grad import no_grad
from pseudosel.registry import (
    MISSING,
    SelectorSpec,
    UsbMapping,
    available_selectors,
    selector_spec,
)
from pseudosel.selection import Selection

_INSTALL = (
    "pip install semilearn (USB; it brings torchvision and torchaudio: install those from the "
    "index that matches your torch, e.g. https://download.pytorch.org/whl/cpu for a CPU torch)"
)

try:
    from semilearn.algorithms.dash import Dash
    from semilearn.algorithms.freematch import FreeMatch
    from semilearn.algorithms.hooks import MaskingHook
except ImportError as error:
    raise ImportError(
        f"pseudosel.integrations.usb needs USB's semilearn package, which could not be "
        f"imported ({error}): {_INSTALL}"
    ) from error
except RuntimeError as error:  # torchvision built for another torch
    if "torchvision" not in str(error):
        raise
    raise ImportError(
        f"semilearn imports torchvision, which does not match the installed torch ({error}): "
        f"install the torchvision release built for torch {torch.__version__} from the same "
        "index as torch"
    ) from error

__all__ = ["CHECKPOINT_KEY", "PseudoselMaskingHook"]

#: Key of the hooks' state in the dictionary that ``algorithm.get_save_dict()`` returns.
CHECKPOINT_KEY = "pseudosel_masking_hook"

#: What USB's FreeMatch algorithm reads from itself in its fairness loss; its own masking
#: hook sets them after every masking call, and so does this one.
_FREEMATCH_LOSS_READS = ("p_model", "label_hist", "time_p")
#: Attributes of the hook itself (USB's register_hook sets name and priority): a selector's
#: USB mapping cannot claim them.
_OWN_ATTRIBUTES = frozenset(
    {"selector", "soft", "options", "module", "selection", "name", "priority"}
)


def _setting(algorithm: Any, name: str, default: Any = MISSING) -> Any:
    """A USB setting: the algorithm's attribute, else ``algorithm.args.<name>``."""
    value = getattr(algorithm, name, None)
    if value is None:
        value = getattr(getattr(algorithm, "args", None), name, None)
    return default if value is None else value


def _usb_settings(spec: SelectorSpec, algorithm: Any) -> dict[str, Any]:
    """The selector's keywords read from the algorithm as ``spec.usb.settings`` says; a
    setting the algorithm does not have is left out (the selector's default applies)."""
    settings: dict[str, Any] = {}
    for keyword, source in (spec.usb.settings if spec.usb is not None else {}).items():
        value = source(algorithm) if callable(source) else _setting(algorithm, source)
        if value is not MISSING:
            settings[keyword] = value
    return settings


def _usb_mappings() -> list[tuple[SelectorSpec, UsbMapping]]:
    """Every registered selector that declares a USB mapping, with it (registry order)."""
    specs = [selector_spec(name) for name in available_selectors()]
    return [(spec, spec.usb) for spec in specs if spec.usb is not None]


def _registered_mapping(module: nn.Module) -> UsbMapping | None:
    """The USB mapping of the first registered stateful selector whose module class
    ``module`` is an instance of (a module given to the hook as it is)."""
    for spec, usb in _usb_mappings():
        if spec.stateful and spec.module is not None and isinstance(module, spec.module):
            return usb
    return None


class PseudoselMaskingHook(MaskingHook):
    """A USB masking hook backed by a pseudosel selector.

    Args:
        selector: a registered selector's name (:func:`pseudosel.available_selectors`,
            plug-ins included) or a selector module instance.

            - a stateless name runs through :func:`pseudosel.select_reliable`;
            - a stateful name builds its module on the first call with
              :meth:`SelectorSpec.build <pseudosel.registry.SelectorSpec.build>`:
              ``num_classes`` from the algorithm, ``num_unlabeled`` from
              ``args.ulb_dest_len`` when it needs the batch's ``idx_ulb``, and steps it with
              :meth:`SelectorSpec.step <pseudosel.registry.SelectorSpec.step>`;
            - either way the keywords in the selector's USB mapping (``spec.usb.settings``)
              are read from the algorithm (its attribute, else ``algorithm.args``): e.g.
              τ ← ``p_cutoff`` for ``"threshold"``, ``"adamatch"`` and ``"flexmatch"``,
              ``momentum`` ← ``ema_p`` for ``"freematch"`` (docs/usb.md lists the built-in
              mappings). A setting the algorithm does not have keeps the selector's default;
            - a selector that needs the labelled predictions (``"labeled"`` in
              ``spec.needs``, e.g. ``"adamatch"``) gets those USB's AdaMatch passes; one that
              needs held-out data (``"heldout"``) is refused: USB passes none;
            - a module (e.g. ``pseudosel.FlexMatchSelector(10, 50_000)``) is used as given.
        soft: return ``selection.weight`` (True, default) or ``selection.mask`` as floats.
        **options: keyword options of a named selector; they override the settings read
            from the algorithm and reach the selector (its function or its constructor)
            unchanged. An option it does not take is a ``TypeError``.

    A selector that needs the batch's ``idx_ulb`` (FlexMatch's per-sample curriculum, Adsh)
    needs an algorithm that passes it (USB's FlexMatch does). Inside one that does not
    (FixMatch, ...), a :class:`~pseudosel.FlexMatchSelector` falls back to FlexMatch's
    class-wise form (counts of confident predictions per class) and warns once; others are
    refused.

    State. The hook exposes, as attributes, the USB names that the registered selectors'
    mappings declare (``spec.usb.state``: ``classwise_acc``, ``selected_label`` for
    FlexMatch; ``p_model``, ``time_p``, ``label_hist`` for FreeMatch; ...), which the
    algorithms' ``get_save_dict``/``load_model`` read and assign on their masking hook; they
    map to the selector's buffers, or hold what USB's own hook starts from
    (``spec.usb.initial``). Inside USB's FreeMatch it keeps FreeMatch's statistics for the
    fairness loss (``algorithm.p_model``/``label_hist``/``time_p``) whatever the selector;
    inside USB's Dash a Dash selector follows ``algorithm.it`` and sets
    ``algorithm.use_hard_label``. In every algorithm the checkpoint also holds
    :meth:`state_dict` under :data:`CHECKPOINT_KEY` (``get_save_dict``/``load_model`` are
    wrapped on the algorithm instance when the hook first sees it, or by :meth:`attach`). A
    run resumed with USB's ``resume``/``load_path`` settings is restored on the first call;
    call :meth:`attach` before ``load_model`` when you load by hand.

    Attributes:
        module: the selector module (None until the first call for a named selector that
            has one; stateless names run functionally and keep None).
        selection: the last :class:`~pseudosel.Selection` (for logging its precision, ...).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> from semilearn.algorithms.hooks import MaskingHook
        >>> hook = PseudoselMaskingHook("threshold")
        >>> isinstance(hook, MaskingHook)
        True
        >>> fixmatch = SimpleNamespace(num_classes=2, p_cutoff=0.6,  # as USB's FixMatch
        ...                            compute_prob=lambda logits: logits.softmax(-1))
        >>> hook.masking(fixmatch, logits_x_ulb=torch.tensor([[2.0, 0.0], [0.1, 0.0]]))
        tensor([1., 0.])
    """

    def __init__(self, selector: str | nn.Module = "csl", *, soft: bool = True, **options: Any):
        super().__init__()
        spec: SelectorSpec | None = None
        if isinstance(selector, nn.Module):
            if options:
                raise TypeError(
                    f"options {sorted(options)} are for a selector given by name; configure "
                    f"the {type(selector).__name__} instance itself"
                )
            usb = _registered_mapping(selector)
            needs = _needs_of_module(selector)
        elif isinstance(selector, str):
            spec = _usable_spec(selector)
            _check_options(spec, options)
            _check_usb_attributes(spec)
            usb, needs = spec.usb, spec.needs
        else:
            raise TypeError(
                f"selector must be a name or an nn.Module, got {type(selector).__name__}"
            )
        if not isinstance(soft, bool):
            raise TypeError(f"soft must be a bool, got {type(soft).__name__}")
        _define_usb_attributes()  # a plug-in registered since the import brings its own
        self.selector = selector
        self.soft = soft
        self.options = options
        self.module: nn.Module | None = selector if isinstance(selector, nn.Module) else None
        self.selection: Selection | None = None
        self._spec = spec  # None for a module instance
        self._usb = usb  # the selector's USB mapping, if it has one
        self._inputs_needed = needs  # per-call inputs besides probs (registry.NEEDS)
        self._algorithm: Any = None
        self._freematch_statistics: pseudosel.FreeMatchSelector | None = None
        self._statistics_usb: UsbMapping | None = None
        self._usb_values: dict[str, Any] = {}  # USB attributes no selector holds
        self._pending_usb: dict[str, Any] = {}  # assigned before the module existed
        self._pending_state: dict[str, Any] | None = None
        self._restored = False

    # ----------------------------------------------------------------------------- USB calls
    @no_grad
    def masking(
        self,
        algorithm: Any,
        logits_x_lb: Tensor | None = None,
        logits_x_ulb: Tensor | None = None,
        idx_lb: Tensor | None = None,
        idx_ulb: Tensor | None = None,
        softmax_x_lb: bool = True,
        softmax_x_ulb: bool = True,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        """USB's masking call: the per-sample loss weights, shape (N,) (or (N, *spatial))."""
        if logits_x_ulb is None:
            raise ValueError("logits_x_ulb is required: USB passes the unlabelled predictions")
        self._meet(algorithm)
        probs = _probabilities(algorithm, logits_x_ulb, softmax_x_ulb)
        if self.module is None and self._builds_module():
            self._build(algorithm, idx_ulb)
        if self._freematch_statistics is not None:
            self._freematch_statistics.to(probs.device).update(probs)
        selection = self._select(algorithm, probs, logits_x_lb, softmax_x_lb, idx_ulb)
        self._publish(algorithm)
        self.selection = selection
        return selection.weight if self.soft else selection.mask.to(selection.weight.dtype)

    def before_run(self, algorithm: Any) -> None:
        self._meet(algorithm)

    def before_train_epoch(self, algorithm: Any) -> None:
        self._meet(algorithm)

    def before_train_step(self, algorithm: Any) -> None:
        self._meet(algorithm)

    # ------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The selector's state (and FreeMatch's statistics kept for its loss), on the CPU."""
        state: dict[str, Any] = dict(self._pending_state or {})  # not yet handed over
        for key, module in (
            ("selector", self.module),
            ("freematch_statistics", self._freematch_statistics),
        ):
            if module is not None:
                state[key] = _cpu(module.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; parts whose module does not exist yet wait for it."""
        self._restored = True
        self._pending_state = {**(self._pending_state or {}), **state}
        self._apply_pending()

    def attach(self, algorithm: Any) -> PseudoselMaskingHook:
        """Save and restore this hook's state with ``algorithm``'s checkpoints.

        Wraps ``algorithm.get_save_dict`` (adds :data:`CHECKPOINT_KEY`) and
        ``algorithm.load_model`` (restores it) on the instance, once per algorithm, for every
        PseudoselMaskingHook registered on it. Done on the first call anyway; call it before
        ``algorithm.load_model(...)`` when you resume by hand. Returns the hook.
        """
        if getattr(algorithm, "_pseudosel_checkpoints", False):
            return self
        if not (hasattr(algorithm, "get_save_dict") and hasattr(algorithm, "load_model")):
            return self
        save, load = algorithm.get_save_dict, algorithm.load_model

        def get_save_dict() -> dict[str, Any]:
            save_dict = save()
            save_dict[CHECKPOINT_KEY] = {
                name: hook.state_dict() for name, hook in _our_hooks(algorithm).items()
            }
            return save_dict

        def load_model(load_path: str) -> Any:
            checkpoint = load(load_path)
            for name, hook in _our_hooks(algorithm).items():
                state = checkpoint.get(CHECKPOINT_KEY, {}).get(name)
                if state is not None:
                    hook.load_state_dict(state)
            return checkpoint

        algorithm.get_save_dict, algorithm.load_model = get_save_dict, load_model
        algorithm._pseudosel_checkpoints = True
        return self

    # --------------------------------------------------------------------- USB's attributes
    def _usb_get(self, name: str) -> Any:
        held = self._held(name)
        if held is not None:
            module, buffer = held
            return getattr(module, buffer).detach().clone()
        for values in (self._pending_usb, self._usb_values):
            if name in values:
                return values[name]
        if self._algorithm is None:
            raise AttributeError(
                f"{name} is not known before the hook's first call (it needs the algorithm)"
            )
        self._usb_values[name] = self._usb_initial(name)
        return self._usb_values[name]

    def _usb_set(self, name: str, value: Any) -> None:
        self._restored = True
        held = self._held(name)
        if held is None:
            # kept for the module built on the first call, or as the plain value USB saves
            settled = self._algorithm is not None and (
                self.module is not None or not self._builds_module()
            )
            (self._usb_values if settled else self._pending_usb)[name] = value
            return
        if value is None:
            return
        module, buffer_name = held
        buffer = getattr(module, buffer_name)
        buffer.copy_(torch.as_tensor(value).to(buffer.device, buffer.dtype))
        if isinstance(module, pseudosel.FlexMatchSelector) and module.num_unlabeled is not None:
            _recount(module)  # FlexMatch's counts follow from its per-sample store

    def _held(self, name: str) -> tuple[nn.Module, str] | None:
        """The module and buffer that hold USB's attribute ``name``, per the USB mapping of
        the selector (or of FreeMatch's statistics); None when neither holds it (FlexMatch's
        class-wise form, for one, has no per-sample store)."""
        for module, usb in (
            (self.module, self._usb),
            (self._freematch_statistics, self._statistics_usb),
        ):
            if module is None or usb is None or name not in usb.state:
                continue
            if isinstance(getattr(module, usb.state[name], None), Tensor):
                return module, usb.state[name]
        return None

    def _usb_initial(self, name: str) -> Any:
        """What USB's own masking hook holds under ``name`` before its first call: the
        selector's ``usb.initial`` first, else any registered selector's."""
        mappings = [usb for _, usb in _usb_mappings()]
        for usb in [self._usb, *mappings]:
            if usb is not None and name in usb.initial:
                num_unlabeled = _setting(self._algorithm, "ulb_dest_len", 0)
                return usb.initial[name](self._algorithm.num_classes, num_unlabeled)
        raise AttributeError(f"no registered selector declares an initial value of USB's {name}")

    # ------------------------------------------------------------------------------ helpers
    def _meet(self, algorithm: Any) -> None:
        """First sight of the algorithm: checkpoints, FreeMatch's statistics, resume."""
        if self._algorithm is algorithm:
            return
        self._algorithm = algorithm
        self.attach(algorithm)
        if isinstance(algorithm, FreeMatch) and not self._keeps_freematch_statistics():
            # FreeMatch's fairness loss reads p_model/label_hist that its hook keeps. The one
            # name looked up here: USB's FreeMatch algorithm's own selector.
            freematch = selector_spec("freematch")
            self._freematch_statistics = freematch.build(
                algorithm.num_classes, **_usb_settings(freematch, algorithm)
            )
            self._statistics_usb = freematch.usb
        self._apply_pending()
        if not self._restored and self._is_stateful():
            self._resume(algorithm)

    def _resume(self, algorithm: Any) -> None:
        args = getattr(algorithm, "args", None)
        path = getattr(args, "load_path", None) if getattr(algorithm, "resume", False) else None
        if path and os.path.exists(path):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            name = getattr(self, "name", "MaskingHook")
            state = checkpoint.get(CHECKPOINT_KEY, {}).get(name)
            if state is not None:
                self.load_state_dict(state)
                return
        if getattr(algorithm, "it", 0):
            warnings.warn(
                f"the algorithm is at iteration {algorithm.it} but the {self._describe()} "
                "selector starts from its initial state: no saved state was restored (call "
                "hook.attach(algorithm) before algorithm.load_model(path))",
                stacklevel=3,
            )

    def _builds_module(self) -> bool:
        """A stateful name: its module is built on the first call."""
        return self._spec is not None and self._spec.stateful

    def _keeps_freematch_statistics(self) -> bool:
        if self._spec is not None:
            module = self._spec.module
            return self._spec.stateful and issubclass(module, pseudosel.FreeMatchSelector)
        return isinstance(self.selector, pseudosel.FreeMatchSelector)

    def _is_stateful(self) -> bool:
        if isinstance(self.selector, nn.Module):
            return any(True for _ in self.selector.buffers())
        return self._builds_module()

    def _describe(self) -> str:
        return self.selector if isinstance(self.selector, str) else type(self.selector).__name__

    def _build(self, algorithm: Any, idx_ulb: Tensor | None) -> None:
        """Build the named selector's module from the algorithm's settings and the options."""
        spec = self._spec
        options = {**_usb_settings(spec, algorithm), **self.options}
        num_unlabeled = options.pop("num_unlabeled", None)
        if "index" in spec.needs and "num_unlabeled" not in self.options:
            if idx_ulb is None:
                self._fall_back_to_class_wise(algorithm)  # or refuse
                num_unlabeled = None
            else:
                if num_unlabeled is None:
                    num_unlabeled = _setting(algorithm, "ulb_dest_len", None)
                if num_unlabeled is None:
                    raise ValueError(
                        f"{spec.name!r} needs the size of the unlabelled set for its "
                        "per-sample state: set ulb_dest_len in the config (USB sets "
                        "args.ulb_dest_len when it builds the dataset) or pass num_unlabeled="
                    )
        given = {*options, "num_classes"}
        if num_unlabeled is not None:
            given.add("num_unlabeled")
        missing = _required_arguments(spec.module) - given
        if missing:
            first = sorted(missing)[0]
            sources = spec.usb.settings if spec.usb is not None else {}
            where = (
                f" (read from the algorithm's {sources[first]} setting)"
                if isinstance(sources.get(first), str)
                else ""
            )
            raise TypeError(
                f"{spec.name!r} needs {', '.join(sorted(missing))}{where}, which "
                f"{type(algorithm).__name__} does not provide: pass "
                f"PseudoselMaskingHook({spec.name!r}, {first}=...)"
            )
        self.module = spec.build(algorithm.num_classes, num_unlabeled=num_unlabeled, **options)
        self._apply_pending()

    def _fall_back_to_class_wise(self, algorithm: Any) -> None:
        """The algorithm passes no idx_ulb: a FlexMatch selector falls back to its class-wise
        form (built with ``num_unlabeled=None``) with a warning; any other is refused."""
        spec = self._spec
        if not issubclass(spec.module, pseudosel.FlexMatchSelector):
            raise ValueError(
                f"{spec.name!r} needs the batch's positions in the unlabelled set (idx_ulb), "
                f"and {type(algorithm).__name__} passes no idx_ulb to its masking hook: use an "
                "algorithm that passes it, such as USB's FlexMatch"
            )
        warnings.warn(
            f"{type(algorithm).__name__} passes no idx_ulb to its masking hook: "
            f"{spec.name!r} runs FlexMatch's class-wise form (cumulative counts of confident "
            "predictions per class) instead of the per-sample curriculum. For that, run "
            "USB's FlexMatch algorithm (it passes idx_ulb); to choose the class-wise form "
            "silently, pass num_unlabeled=None",
            stacklevel=5,
        )

    def _apply_pending(self) -> None:
        """Hand state assigned before its module existed to the modules that exist now."""
        pending = self._pending_state or {}
        for key, module in (
            ("selector", self.module),
            ("freematch_statistics", self._freematch_statistics),
        ):
            if key in pending and module is not None:
                module.load_state_dict(pending.pop(key))
        waiting, self._pending_usb = self._pending_usb, {}
        for name, value in waiting.items():
            self._usb_set(name, value)

    def _select(
        self,
        algorithm: Any,
        probs: Tensor,
        logits_x_lb: Tensor | None,
        softmax_x_lb: bool,
        idx_ulb: Tensor | None,
    ) -> Selection:
        inputs: dict[str, Any] = {}
        if "labeled" in self._inputs_needed:
            if logits_x_lb is None:
                raise ValueError(
                    f"{self._describe()!r} needs the labelled predictions, and "
                    f"{type(algorithm).__name__} passes no logits_x_lb to its masking hook: "
                    "use USB's AdaMatch algorithm"
                )
            inputs["probs_labeled"] = _probabilities(algorithm, logits_x_lb, softmax_x_lb)
        module = self.module
        if module is None:  # a stateless name
            options = {**_usb_settings(self._spec, algorithm), **self.options}
            return pseudosel.select_reliable(probs, self._spec.name, **inputs, **options)
        if next(iter(module.buffers()), probs).device != probs.device:
            module.to(probs.device)
        # a module built with num_unlabeled=None (FlexMatch's class-wise form) takes no
        # positions; one without that attribute takes them when it needs them
        per_sample = getattr(module, "num_unlabeled", "absent") is not None
        if "index" in self._inputs_needed and per_sample:
            if idx_ulb is None:
                raise ValueError(
                    f"this {type(module).__name__} keeps per-sample state and needs idx_ulb, "
                    f"which {type(algorithm).__name__} does not pass: build it with "
                    "num_unlabeled=None for its index-free (class-wise) form"
                )
            inputs["index"] = idx_ulb.to(probs.device).long()
        if isinstance(module, pseudosel.DashSelector) and isinstance(algorithm, Dash):
            module.step.fill_(int(algorithm.it))  # USB's Dash schedules rho on algorithm.it
        if self._spec is not None:
            return self._spec.step(module, probs, None, **inputs)
        return pseudosel.select_reliable(probs, module, **inputs)

    def _publish(self, algorithm: Any) -> None:
        """Set what the algorithm itself reads after the masking call."""
        held = all(self._held(name) is not None for name in _FREEMATCH_LOSS_READS)
        if isinstance(algorithm, FreeMatch) and held:
            for name in _FREEMATCH_LOSS_READS:
                setattr(algorithm, name, self._usb_get(name))
        if isinstance(algorithm, Dash) and isinstance(self.module, pseudosel.DashSelector):
            algorithm.use_hard_label = bool(self.module.use_hard_labels)


def _usable_spec(name: str) -> SelectorSpec:
    """The spec of ``name``, refused when USB cannot run it."""
    try:
        spec = selector_spec(name)
    except ValueError:
        names = ", ".join(repr(n) for n in available_selectors())
        raise ValueError(
            f"selector must be one of {names} (pseudosel.available_selectors()) or a module, "
            f"got {name!r}"
        ) from None
    if "heldout" in spec.needs:
        raise ValueError(
            f"selector {name!r} needs held-out labelled predictions (needs="
            f"{sorted(spec.needs)}), which USB's algorithms do not pass to their masking "
            "hook: build its module yourself, feed it with update_heldout, and pass the "
            "instance"
        )
    if not spec.classification:
        raise ValueError(
            f"selector {name!r} takes dense input (N, K, *spatial) only, and USB's masking "
            "hook passes classification predictions (N, K)"
        )
    return spec


def _needs_of_module(module: nn.Module) -> frozenset[str]:
    """The per-call inputs a module instance takes, read from its ``forward`` arguments:
    ``index`` (the batch's positions, USB's ``idx_ulb``) and ``probs_labeled`` (the labelled
    predictions), named as in ``SelectorSpec.needs``."""
    arguments = inspect.signature(module.forward).parameters
    return frozenset(
        need
        for need, argument in (("index", "index"), ("labeled", "probs_labeled"))
        if argument in arguments
    )


def _check_options(spec: SelectorSpec, options: dict[str, Any]) -> None:
    """Options a named selector does not take are a TypeError now, not at the first step
    (unless it takes any keyword, ``**options``: then it answers itself)."""
    accepted = spec.option_names()
    if accepted is None:
        return
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"{unknown} are not options of selector {spec.name!r} (it takes {sorted(accepted)})"
        )


def _required_arguments(cls: type[nn.Module]) -> set[str]:
    """The constructor arguments of ``cls`` without a default."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = inspect.signature(cls).parameters.values()
    return {p.name for p in parameters if p.kind in kinds and p.default is p.empty}


def _usb_property(name: str) -> property:
    return property(
        lambda self: self._usb_get(name),
        lambda self, value: self._usb_set(name, value),
        doc=f"USB's ``{name}`` of this masking hook (see the class docstring).",
    )


def _define_usb_attributes() -> None:
    """One property on the hook class per USB attribute that a registered selector's mapping
    declares (``usb.state``, ``usb.initial``): USB's algorithms read and assign them on
    their masking hook. Run at import and by every new hook (a plug-in may have registered
    since). A name that is the hook's own attribute is skipped here and refused when a hook
    is built for that selector (:func:`_check_usb_attributes`)."""
    for _, usb in _usb_mappings():
        for name in (*usb.state, *usb.initial):
            if not _is_hook_attribute(name):
                setattr(PseudoselMaskingHook, name, _usb_property(name))


def _is_hook_attribute(name: str) -> bool:
    """``name`` belongs to the hook itself (not a USB attribute property)."""
    if isinstance(getattr(PseudoselMaskingHook, name, None), property):
        return False
    return name.startswith("_") or name in _OWN_ATTRIBUTES or hasattr(PseudoselMaskingHook, name)


def _check_usb_attributes(spec: SelectorSpec) -> None:
    """Refuse a USB mapping that claims one of the hook's own attributes."""
    usb = spec.usb if spec.usb is not None else UsbMapping()
    for name in (*usb.state, *usb.initial):
        if _is_hook_attribute(name):
            raise ValueError(
                f"selector {spec.name!r} declares the USB attribute {name!r} (usb.state or "
                "usb.initial), which is an attribute of the masking hook itself; a USB "
                "mapping names what USB's algorithms read from their masking hook "
                "(classwise_acc, p_model, ...)"
            )


_define_usb_attributes()


def _probabilities(algorithm: Any, logits: Tensor, softmax: bool) -> Tensor:
    logits = logits.detach()
    if not softmax:
        return logits
    compute_prob = getattr(algorithm, "compute_prob", None)
    return compute_prob(logits) if compute_prob is not None else logits.softmax(-1)


def _recount(selector: pseudosel.FlexMatchSelector) -> None:
    store = selector.selected_label
    buckets = torch.where(store < 0, selector.num_classes, store)
    counts = torch.bincount(buckets, minlength=selector.num_classes + 1)
    selector.counts.copy_(counts.to(selector.counts.dtype))


def _cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value.detach().cpu().clone() for key, value in state.items()}


def _our_hooks(algorithm: Any) -> dict[str, PseudoselMaskingHook]:
    hooks = getattr(algorithm, "hooks_dict", {})
    return {name: hook for name, hook in hooks.items() if isinstance(hook, PseudoselMaskingHook)}
