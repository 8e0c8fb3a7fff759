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

Importing this module imports semilearn (``import pseudosel`` does not). Settings come from
the algorithm unless given as options, the state of a stateful selector lives where the
algorithm's checkpoint code looks for it, and every checkpoint also carries the hook's own
state under :data:`CHECKPOINT_KEY`. See docs/usb.md.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import pseudosel
from pseudosel.select import SELECTORS
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

_MISSING = object()


def _setting(algorithm: Any, name: str, default: Any = _MISSING) -> Any:
    """A USB setting: the algorithm's attribute, else ``algorithm.args.<name>``."""
    value = getattr(algorithm, name, None)
    if value is None:
        value = getattr(getattr(algorithm, "args", None), name, None)
    return default if value is None else value


# Stateful selectors the hook builds itself: name -> (class, {keyword: read from USB}).
# Readers return _MISSING when the algorithm has no such setting (the selector's default).
_Readers = dict[str, Callable[[Any], Any]]
_STATEFUL: dict[str, tuple[type[nn.Module], _Readers]] = {
    "flexmatch": (
        pseudosel.FlexMatchSelector,
        {
            "num_classes": lambda alg: alg.num_classes,
            "num_unlabeled": lambda alg: _setting(alg, "ulb_dest_len"),
            "tau": lambda alg: _setting(alg, "p_cutoff"),
            "warmup": lambda alg: _setting(alg, "thresh_warmup"),
        },
    ),
    "freematch": (
        pseudosel.FreeMatchSelector,
        {
            "num_classes": lambda alg: alg.num_classes,
            "momentum": lambda alg: _setting(alg, "ema_p"),
            "use_quantile": lambda alg: _setting(alg, "use_quantile"),
            "clip_thresh": lambda alg: _setting(alg, "clip_thresh"),
        },
    ),
    "softmatch": (
        pseudosel.SoftMatchSelector,
        {
            "num_classes": lambda alg: alg.num_classes,
            "momentum": lambda alg: _setting(alg, "ema_p"),
            "n_sigma": lambda alg: _setting(alg, "n_sigma"),
            "per_class": lambda alg: _setting(alg, "per_class"),
        },
    ),
    "dash": (
        pseudosel.DashSelector,
        {
            "rho_init": lambda alg: _setting(alg, "rho_init"),
            # USB's Dash moves rho every 10 epochs
            "update_every": lambda alg: (
                10 * alg.num_iter_per_epoch
                if getattr(alg, "num_iter_per_epoch", None)
                else _MISSING
            ),
            "gamma": lambda alg: _setting(alg, "gamma"),
            "c": lambda alg: _setting(alg, "C"),
            "rho_min": lambda alg: _setting(alg, "rho_min"),
            "T": lambda alg: _setting(alg, "T"),
        },
    ),
    "u2pl": (
        pseudosel.EntropySplitSelector,
        {"total_steps": lambda alg: getattr(alg, "num_train_iter", None) or _MISSING},
    ),
}
# Stateless names whose threshold is USB's p_cutoff.
_P_CUTOFF = {"threshold": "tau", "adamatch": "tau"}

# State that USB algorithms read from their masking hook (get_save_dict, load_model):
# attribute -> (selector class, buffer) — and the value USB's own hook starts from.
_USB_STATE: dict[str, tuple[type[nn.Module], str]] = {
    "classwise_acc": (pseudosel.FlexMatchSelector, "classwise_acc"),  # FlexMatch
    "selected_label": (pseudosel.FlexMatchSelector, "selected_label"),
    "p_model": (pseudosel.FreeMatchSelector, "p_model"),  # FreeMatch
    "time_p": (pseudosel.FreeMatchSelector, "time_p"),
    "label_hist": (pseudosel.FreeMatchSelector, "label_hist"),
    "prob_max_mu_t": (pseudosel.SoftMatchSelector, "mu"),  # SoftMatch
    "prob_max_var_t": (pseudosel.SoftMatchSelector, "var"),
    "rho_init": (pseudosel.DashSelector, "rho_init"),  # Dash
    "rho": (pseudosel.DashSelector, "rho"),
    "rho_update_cnt": (pseudosel.DashSelector, "update_count"),
}


def _usb_initial(name: str, algorithm: Any) -> Any:
    """What USB's own masking hook holds before its first call."""
    k = algorithm.num_classes
    ulb = _setting(algorithm, "ulb_dest_len", 0)
    return {
        "classwise_acc": lambda: torch.zeros(k),
        "selected_label": lambda: torch.full((ulb,), -1, dtype=torch.long),
        "p_model": lambda: torch.full((k,), 1.0 / k),
        "time_p": lambda: torch.tensor(1.0 / k),
        "label_hist": lambda: torch.full((k,), 1.0 / k),
        "prob_max_mu_t": lambda: torch.tensor(1.0 / k),
        "prob_max_var_t": lambda: torch.tensor(1.0),
        "rho_init": lambda: None,
        "rho": lambda: None,
        "rho_update_cnt": lambda: 0,
    }[name]()


class PseudoselMaskingHook(MaskingHook):
    """A USB masking hook backed by a pseudosel selector.

    Args:
        selector: a selector name or a selector module instance.

            - stateless names (``"csl"``, ``"csl_covar"``, ``"csl_max_margin"``,
              ``"threshold"``, ``"adamatch"``, ``"entropy_split"``) run through
              :func:`pseudosel.select_reliable`; ``"threshold"`` and ``"adamatch"`` take
              their τ from the algorithm's ``p_cutoff``; ``"adamatch"`` uses the labelled
              predictions USB's AdaMatch passes.
            - stateful names (``"flexmatch"``, ``"freematch"``, ``"softmatch"``, ``"dash"``,
              ``"u2pl"``) build their module on the first call, from the algorithm:
              ``num_classes``; ``p_cutoff`` → ``tau`` and ``thresh_warmup`` → ``warmup`` and
              ``args.ulb_dest_len`` → ``num_unlabeled`` (FlexMatch); ``ema_p`` →
              ``momentum``, ``use_quantile``, ``clip_thresh`` (FreeMatch); ``ema_p`` →
              ``momentum``, ``n_sigma``, ``per_class`` (SoftMatch); ``rho_init``, ``gamma``,
              ``C`` → ``c``, ``rho_min``, ``T`` and ``10 * num_iter_per_epoch`` →
              ``update_every`` (Dash); ``num_train_iter`` → ``total_steps`` (U2PL). A setting
              the algorithm does not have keeps the selector's default.
            - a module (e.g. ``pseudosel.FlexMatchSelector(10, 50_000)``) is used as given.
        soft: return ``selection.weight`` (True, default) or ``selection.mask`` as floats.
        **options: keyword options of a named selector; they override the settings read
            from the algorithm and reach the selector (its function or its constructor)
            unchanged. An option it does not take is a ``TypeError``.

    ``"flexmatch"`` needs the batch's ``idx_ulb`` for the per-sample curriculum; USB's
    FlexMatch passes it. Inside an algorithm that does not (FixMatch, ...), it falls back to
    FlexMatch's class-wise form (counts of confident predictions per class) and warns once.

    State. Inside FlexMatch, FreeMatch, SoftMatch and Dash the hook exposes the attributes
    that the algorithm's ``get_save_dict``/``load_model`` read from its masking hook
    (``classwise_acc``, ``selected_label``; ``p_model``, ``time_p``, ``label_hist``;
    ``prob_max_mu_t``, ``prob_max_var_t``; ``rho_init``, ``rho``, ``rho_update_cnt``) and
    keeps what FreeMatch's loss and Dash's pseudo-labels read from the algorithm
    (``algorithm.p_model``/``label_hist``/``time_p``; ``algorithm.use_hard_label``). In every
    algorithm the checkpoint also holds :meth:`state_dict` under :data:`CHECKPOINT_KEY`
    (``get_save_dict``/``load_model`` are wrapped on the algorithm instance when the hook
    first sees it, or by :meth:`attach`). A run resumed with USB's ``resume``/``load_path``
    settings is restored on the first call; call :meth:`attach` before ``load_model`` when
    you load by hand.

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
        if isinstance(selector, nn.Module):
            if options:
                raise TypeError(
                    f"options {sorted(options)} are for a selector given by name; configure "
                    f"the {type(selector).__name__} instance itself"
                )
        elif isinstance(selector, str):
            if selector not in SELECTORS and selector not in _STATEFUL:
                names = ", ".join(repr(n) for n in [*SELECTORS, *_STATEFUL])
                raise ValueError(f"selector must be one of {names} or a module, got {selector!r}")
            if selector in SELECTORS:
                _check_options(selector, SELECTORS[selector], options)
            else:
                _check_options(selector, _STATEFUL[selector][0], options)
        else:
            raise TypeError(
                f"selector must be a name or an nn.Module, got {type(selector).__name__}"
            )
        if not isinstance(soft, bool):
            raise TypeError(f"soft must be a bool, got {type(soft).__name__}")
        self.selector = selector
        self.soft = soft
        self.options = options
        self.module: nn.Module | None = selector if isinstance(selector, nn.Module) else None
        self.selection: Selection | None = None
        self._algorithm: Any = None
        self._freematch_statistics: pseudosel.FreeMatchSelector | None = None
        self._usb_values: dict[str, Any] = {}  # USB attributes no selector holds
        self._pending_usb: dict[str, Any] = {}  # assigned before the module existed
        self._pending_state: dict[str, Any] | None = None
        self._restored = False

    # ----------------------------------------------------------------------------- USB calls
    @torch.no_grad()
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
        if self.module is None and self.selector in _STATEFUL:
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
        holder = self._holder(name)
        if holder is not None:
            return getattr(holder, _USB_STATE[name][1]).detach().clone()
        for values in (self._pending_usb, self._usb_values):
            if name in values:
                return values[name]
        if self._algorithm is None:
            raise AttributeError(
                f"{name} is not known before the hook's first call (it needs the algorithm)"
            )
        self._usb_values[name] = _usb_initial(name, self._algorithm)
        return self._usb_values[name]

    def _usb_set(self, name: str, value: Any) -> None:
        self._restored = True
        holder = self._holder(name)
        if holder is None:
            # kept for the module built on the first call, or as the plain value USB saves
            settled = self._algorithm is not None and (
                self.module is not None or self.selector not in _STATEFUL
            )
            (self._usb_values if settled else self._pending_usb)[name] = value
            return
        if value is None:
            return
        buffer = getattr(holder, _USB_STATE[name][1])
        buffer.copy_(torch.as_tensor(value).to(buffer.device, buffer.dtype))
        if name == "selected_label":  # FlexMatch's counts follow from the store
            _recount(holder)

    def _holder(self, name: str) -> nn.Module | None:
        cls = _USB_STATE[name][0]
        for module in (self.module, self._freematch_statistics):
            if isinstance(module, cls):
                if cls is pseudosel.FlexMatchSelector and module.num_unlabeled is None:
                    if name == "selected_label":
                        continue  # the class-wise form keeps no per-sample store
                return module
        return None

    # ------------------------------------------------------------------------------ helpers
    def _meet(self, algorithm: Any) -> None:
        """First sight of the algorithm: checkpoints, FreeMatch's statistics, resume."""
        if self._algorithm is algorithm:
            return
        self._algorithm = algorithm
        self.attach(algorithm)
        keeps_freematch_statistics = self.selector == "freematch" or isinstance(
            self.selector, pseudosel.FreeMatchSelector
        )
        if isinstance(algorithm, FreeMatch) and not keeps_freematch_statistics:
            # FreeMatch's fairness loss reads p_model/label_hist that its hook keeps
            cls, readers = _STATEFUL["freematch"]
            self._freematch_statistics = cls(**_settings(readers, algorithm, {}))
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

    def _is_stateful(self) -> bool:
        if isinstance(self.selector, nn.Module):
            return any(True for _ in self.selector.buffers())
        return self.selector in _STATEFUL

    def _describe(self) -> str:
        return self.selector if isinstance(self.selector, str) else type(self.selector).__name__

    def _build(self, algorithm: Any, idx_ulb: Tensor | None) -> None:
        cls, readers = _STATEFUL[self.selector]
        kwargs = _settings(readers, algorithm, self.options)
        if self.selector == "flexmatch" and "num_unlabeled" not in self.options:
            if idx_ulb is None:
                warnings.warn(
                    f"{type(algorithm).__name__} passes no idx_ulb to its masking hook: "
                    "'flexmatch' runs FlexMatch's class-wise form (cumulative counts of "
                    "confident predictions per class) instead of the per-sample curriculum. "
                    "For that, run USB's FlexMatch algorithm (it passes idx_ulb); to choose "
                    "the class-wise form silently, pass num_unlabeled=None",
                    stacklevel=4,
                )
                kwargs["num_unlabeled"] = None
            elif "num_unlabeled" not in kwargs:
                raise ValueError(
                    "'flexmatch' needs the size of the unlabelled set for its per-sample "
                    "curriculum: set ulb_dest_len in the config (USB sets args.ulb_dest_len "
                    "when it builds the dataset) or pass num_unlabeled="
                )
        if self.selector == "dash" and "rho_init" not in kwargs:
            raise TypeError(
                f"'dash' needs rho_init (the mean labelled loss after warm-up): USB's Dash "
                f"sets algorithm.rho_init; inside {type(algorithm).__name__} pass "
                "PseudoselMaskingHook('dash', rho_init=...)"
            )
        self.module = cls(**kwargs)
        self._apply_pending()

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
        uses_labelled = self.selector == "adamatch" or isinstance(
            self.module, pseudosel.AdaMatchSelector
        )
        if uses_labelled:
            if logits_x_lb is None:
                raise ValueError(
                    f"'adamatch' needs the labelled predictions, and "
                    f"{type(algorithm).__name__} passes no logits_x_lb to its masking hook: "
                    "use USB's AdaMatch algorithm"
                )
            inputs["probs_labeled"] = _probabilities(algorithm, logits_x_lb, softmax_x_lb)
        if self.module is None:  # a stateless name
            options = dict(self.options)
            if self.selector in _P_CUTOFF:
                cutoff = _setting(algorithm, "p_cutoff")
                if cutoff is not _MISSING:
                    options.setdefault(_P_CUTOFF[self.selector], cutoff)
            return pseudosel.select_reliable(probs, self.selector, **inputs, **options)
        module = self.module
        if next(iter(module.buffers()), probs).device != probs.device:
            module.to(probs.device)
        if isinstance(module, pseudosel.FlexMatchSelector) and module.num_unlabeled is not None:
            if idx_ulb is None:
                raise ValueError(
                    f"this FlexMatchSelector keeps a per-sample curriculum and needs idx_ulb, "
                    f"which {type(algorithm).__name__} does not pass: build it with "
                    "num_unlabeled=None for the class-wise form"
                )
            inputs["index"] = idx_ulb.to(probs.device).long()
        if isinstance(module, pseudosel.DashSelector) and isinstance(algorithm, Dash):
            module.step.fill_(int(algorithm.it))  # USB's Dash schedules rho on algorithm.it
        return pseudosel.select_reliable(probs, module, **inputs)

    def _publish(self, algorithm: Any) -> None:
        """Set what the algorithm itself reads after the masking call."""
        statistics = self._holder("p_model")
        if isinstance(algorithm, FreeMatch) and statistics is not None:
            for name in ("p_model", "time_p", "label_hist"):
                setattr(algorithm, name, getattr(statistics, name).detach().clone())
        if isinstance(algorithm, Dash) and isinstance(self.module, pseudosel.DashSelector):
            algorithm.use_hard_label = bool(self.module.use_hard_labels)


def _usb_property(name: str) -> property:
    return property(
        lambda self: self._usb_get(name),
        lambda self, value: self._usb_set(name, value),
        doc=f"USB's ``{name}`` of this masking hook (see the class docstring).",
    )


for _name in _USB_STATE:
    setattr(PseudoselMaskingHook, _name, _usb_property(_name))


def _check_options(name: str, target: Callable[..., Any], options: dict[str, Any]) -> None:
    accepted = set(inspect.signature(target).parameters) - {"probs", "valid", "self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"{unknown} are not options of selector {name!r} (it takes {sorted(accepted)})"
        )


def _settings(readers: _Readers, algorithm: Any, options: dict[str, Any]) -> dict[str, Any]:
    kwargs = {}
    for keyword, read in readers.items():
        value = read(algorithm)
        if value is not _MISSING:
            kwargs[keyword] = value
    kwargs.update(options)
    return kwargs


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
