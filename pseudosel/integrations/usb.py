"""Run any pseudosel selector inside a USB (semilearn) algorithm, as its masking hook.

USB algorithms ask their ``"MaskingHook"`` for the unlabelled-loss mask with

    mask = self.call_hook("masking", "MaskingHook", logits_x_ulb=..., idx_ulb=..., ...)

:class:`PseudoselMaskingHook` answers that call with a pseudosel selection: the soft weight
(CSL, SoftMatch) or the hard mask as floats — what USB multiplies the per-sample loss by.
No USB import is needed; the hook has USB's hook interface (the ``masking`` signature and the
no-op training-stage methods USB calls on every hook). Register it on an algorithm::

    from pseudosel.integrations.usb import PseudoselMaskingHook

    algorithm = get_algorithm(config, net_builder, tb_log, logger)   # e.g. fixmatch
    algorithm.register_hook(PseudoselMaskingHook("csl"), "MaskingHook")

which replaces the algorithm's own masking hook (USB keeps hooks by name).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

import pseudosel

__all__ = ["PseudoselMaskingHook"]

# Names whose module needs the algorithm's sizes, built on the first call.
_STATEFUL = {
    "flexmatch": lambda alg: pseudosel.FlexMatchSelector(alg.num_classes, alg.ulb_dest_len),
    "freematch": lambda alg: pseudosel.FreeMatchSelector(alg.num_classes),
    "softmatch": lambda alg: pseudosel.SoftMatchSelector(alg.num_classes),
    "adamatch": lambda alg: pseudosel.AdaMatchSelector(),
}


class PseudoselMaskingHook:
    """A USB masking hook backed by a pseudosel selector.

    Args:
        selector: a stateless name (``"csl"``, ``"threshold"``, ``"csl_max_margin"``, ...),
            a stateful one built from the algorithm on first use (``"flexmatch"`` with
            ``algorithm.ulb_dest_len`` and the batch's ``idx_ulb``, ``"freematch"``,
            ``"softmatch"``, ``"adamatch"`` with the labelled logits), or a selector module.
        soft: return ``selection.weight`` (True, default) or the hard ``selection.mask`` as
            floats.
        **options: options of a named stateless selector (e.g. ``tau=0.9``).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> hook = PseudoselMaskingHook("threshold", tau=0.5)
        >>> algorithm = SimpleNamespace(num_classes=3)
        >>> hook.masking(algorithm, logits_x_ulb=torch.tensor([[3.0, 0.0, 0.0], [0., 0., 0.]]))
        tensor([1., 0.])
    """

    def __init__(
        self, selector: str | nn.Module = "csl", *, soft: bool = True, **options: Any
    ) -> None:
        self.selector = selector
        self.soft = soft
        self.options = options
        self.module: nn.Module | None = selector if isinstance(selector, nn.Module) else None

    def _method(self, algorithm) -> str | nn.Module:
        if self.module is None and isinstance(self.selector, str) and self.selector in _STATEFUL:
            self.module = _STATEFUL[self.selector](algorithm)
        return self.module if self.module is not None else self.selector

    @torch.no_grad()
    def masking(
        self,
        algorithm,
        logits_x_lb: Tensor | None = None,
        logits_x_ulb: Tensor | None = None,
        idx_lb: Tensor | None = None,
        idx_ulb: Tensor | None = None,
        softmax_x_lb: bool = True,
        softmax_x_ulb: bool = True,
        *args,
        **kwargs,
    ) -> Tensor:
        """USB's masking call: the per-sample loss weights (N,) (or (N, *spatial))."""
        if logits_x_ulb is None:
            raise ValueError("logits_x_ulb is required: USB passes the unlabelled predictions")
        probs = logits_x_ulb.detach()
        probs = probs.float().softmax(1) if softmax_x_ulb else probs
        method = self._method(algorithm)
        inputs: dict[str, Any] = {}
        if isinstance(method, nn.Module):
            method.to(probs.device)
            if isinstance(method, pseudosel.FlexMatchSelector) and method.num_unlabeled:
                if idx_ulb is None:
                    raise ValueError("FlexMatch needs idx_ulb (USB passes it for FlexMatch)")
                inputs["index"] = idx_ulb.to(probs.device).long()
            if isinstance(method, pseudosel.AdaMatchSelector):
                if logits_x_lb is None:
                    raise ValueError("AdaMatch needs logits_x_lb (the labelled predictions)")
                labelled = logits_x_lb.detach()
                inputs["probs_labeled"] = labelled.float().softmax(1) if softmax_x_lb else labelled
        else:
            inputs.update(self.options)
        selection = pseudosel.select_reliable(probs, method, **inputs)
        return selection.weight if self.soft else selection.mask.to(selection.weight.dtype)

    # USB calls these on every registered hook at the matching training stage.
    def before_run(self, algorithm) -> None: ...
    def after_run(self, algorithm) -> None: ...
    def before_train_epoch(self, algorithm) -> None: ...
    def after_train_epoch(self, algorithm) -> None: ...
    def before_train_step(self, algorithm) -> None: ...
    def after_train_step(self, algorithm) -> None: ...
