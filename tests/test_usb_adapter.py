"""The USB adapter, called exactly as USB algorithms call their masking hook."""

from __future__ import annotations

import pytest
import torch

import pseudosel
from pseudosel.integrations.usb import PseudoselMaskingHook


class StandInAlgorithm:
    """The hook plumbing of semilearn's AlgorithmBase (register_hook / call_hook)."""

    def __init__(self, num_classes=10, ulb_dest_len=100):
        self.num_classes = num_classes
        self.ulb_dest_len = ulb_dest_len
        self._hooks = {}

    def register_hook(self, hook, name=None, priority="NORMAL"):
        self._hooks[name or type(hook).__name__] = hook

    def call_hook(self, fn_name, hook_name=None, *args, **kwargs):
        if hook_name is not None:
            return getattr(self._hooks[hook_name], fn_name)(self, *args, **kwargs)
        for hook in self._hooks.values():
            if hasattr(hook, fn_name):
                getattr(hook, fn_name)(self, *args, **kwargs)
        return None


def logits(n=32, k=10, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 3


def test_fixmatch_style_call_returns_csl_weights():
    algorithm = StandInAlgorithm()
    algorithm.register_hook(PseudoselMaskingHook("csl"), "MaskingHook")
    algorithm.call_hook("before_train_step")  # every-hook stages are accepted
    probs = logits().softmax(-1)
    mask = algorithm.call_hook("masking", "MaskingHook", logits_x_ulb=probs, softmax_x_ulb=False)
    assert mask.shape == (32,) and mask.dtype == torch.float32
    torch.testing.assert_close(mask, pseudosel.select_reliable(probs).weight)
    # logits instead of probabilities, as FixMatch passes them with softmax_x_ulb=True
    again = algorithm.call_hook("masking", "MaskingHook", logits_x_ulb=logits())
    torch.testing.assert_close(again, mask)


def test_hard_mask_and_named_options():
    algorithm = StandInAlgorithm()
    algorithm.register_hook(PseudoselMaskingHook("threshold", soft=False, tau=0.8), "MaskingHook")
    probs = logits().softmax(-1)
    mask = algorithm.call_hook("masking", "MaskingHook", logits_x_ulb=probs, softmax_x_ulb=False)
    assert torch.equal(mask, (probs.max(-1).values >= 0.8).float())


def test_flexmatch_hook_uses_idx_ulb_and_the_unlabelled_set_size():
    algorithm = StandInAlgorithm(ulb_dest_len=50)
    hook = PseudoselMaskingHook("flexmatch")
    algorithm.register_hook(hook, "MaskingHook")
    idx = torch.arange(32)
    algorithm.call_hook("masking", "MaskingHook", logits_x_ulb=logits(), idx_ulb=idx)
    assert isinstance(hook.module, pseudosel.FlexMatchSelector)
    assert hook.module.selected_label.shape == (50,)
    assert int(hook.module.counts.sum()) == 50
    with pytest.raises(ValueError, match="idx_ulb"):
        algorithm.call_hook("masking", "MaskingHook", logits_x_ulb=logits())


def test_adamatch_hook_uses_the_labelled_logits():
    algorithm = StandInAlgorithm()
    algorithm.register_hook(PseudoselMaskingHook("adamatch"), "MaskingHook")
    lb, ulb = logits(16, seed=1), logits(seed=2)
    mask = algorithm.call_hook("masking", "MaskingHook", logits_x_lb=lb, logits_x_ulb=ulb)
    cutoff = 0.95 * lb.softmax(-1).max(-1).values.mean()
    assert torch.equal(mask, (ulb.softmax(-1).max(-1).values >= cutoff).float())


def test_module_instance_and_errors():
    module = pseudosel.SoftMatchSelector(10)
    hook = PseudoselMaskingHook(module)
    weights = hook.masking(StandInAlgorithm(), logits_x_ulb=logits())
    assert ((weights > 0) & (weights <= 1)).all()
    with pytest.raises(ValueError, match="logits_x_ulb is required"):
        hook.masking(StandInAlgorithm())
