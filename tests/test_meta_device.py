"""Placement audit on the ``meta`` device: no tensor is created on the wrong device.

A meta tensor has a shape, a dtype and a device but no data. Code that builds a constant on
the CPU by mistake (``torch.tensor(x)`` without ``device=``, a buffer left behind by
``.to()``) and mixes it with the input fails there with a device mismatch, as it would on
CUDA; a host read (``.item()``, ``bool(t)``, indexing with a 0-dim tensor) fails too. On
meta the selectors also take the path CUDA takes: the blocked CPU kernels are chosen for
CPU tensors only. So this file runs, without a GPU, what the CUDA tests run with one:

- every selector of the registry (functional, module and explicit-state cores, each option
  set its declaration gives for tests: ``helpers/selector_zoo.py``), the distribution
  alignment transforms, and the example plug-in's two selectors registered as a user would,
  modules moved with ``.to("meta")`` and stepped several times in training mode, then in
  eval mode;
- :func:`~pseudosel.select_reliable` with logits, an ignore mask and a sigmoid output;
- the losses, the metrics, the masking utilities and the :class:`~pseudosel.Selection`
  methods.

What cannot run on meta is listed in :data:`NOT_ON_META` with its reason, and the test
checks that it still fails there (an entry that starts working is removed).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from helpers.selector_zoo import CASES, NEEDS_A_MASK, case_batch, state_of
from torch import Tensor

import pseudosel
from pseudosel import losses, masking, metrics, registry

META = torch.device("meta")
ROOT = Path(__file__).resolve().parents[1]

# case name -> why it cannot run on meta (the test checks that it still fails there)
NOT_ON_META = {
    "F.csl_max_margin": "the max-margin boundary is solved by cvxpy on host numpy arrays "
    "(pseudosel.max_margin copies the features to the CPU by design)",
}


def _tensors(value) -> list[Tensor]:
    """Every tensor inside a Selection, a tuple/NamedTuple or a dict, or ``value`` itself."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    return []


def _assert_on_meta(value, what: str) -> None:
    found = _tensors(value)
    assert found, f"{what}: no tensor to check"
    for tensor in found:
        assert tensor.device == META, f"{what}: a tensor on {tensor.device}"


def _steps(case, module, step, *, k: int, dtype=torch.float32) -> None:
    for seed in range(3):
        probs, valid = case_batch(case, seed, k=k, dtype=dtype, device=META)
        _assert_on_meta(step(probs, valid), f"{case.name} step {seed}")
    if case.name not in NEEDS_A_MASK:  # plain input (no mask) takes shorter paths
        probs, _ = case_batch(case, 3, k=k, dtype=dtype, device=META)
        _assert_on_meta(step(probs, None), f"{case.name} step without a mask")
    if module is not None:
        module.eval()
        probs, valid = case_batch(case, 9, k=k, dtype=dtype, device=META)
        extra = case.inputs(probs)
        _assert_on_meta(module(probs, valid=valid, **extra), f"{case.name} in eval mode")
    state = state_of(module, step)
    if state:
        _assert_on_meta(state, f"{case.name} state")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_selector_runs_on_meta(case):
    module, step = case.build(5, device=META)
    if case.name in NOT_ON_META:
        with pytest.raises((RuntimeError, NotImplementedError, TypeError, ValueError)):
            _steps(case, module, step, k=5)
        return
    _steps(case, module, step, k=5)


def test_the_not_on_meta_list_names_cases_that_exist():
    names = {c.name for c in CASES}
    assert set(NOT_ON_META) <= names, set(NOT_ON_META) - names


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.name in ("F.csl", "F.threshold", "CSLSelector")],
    ids=lambda case: case.name,
)
def test_half_precision_on_meta(case, dtype):
    module, step = case.build(5, device=META)
    _steps(case, module, step, k=5, dtype=dtype)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name not in NOT_ON_META], ids=lambda case: case.name
)
def test_binary_sigmoid_outputs_on_meta(case):
    module, step = case.build(2, activation="sigmoid", device=META)
    _steps(case, module, step, k=1)


@pytest.fixture
def example_plugin():
    """The example plug-in's module imported as a user's package would be, its two
    selectors unregistered afterwards."""
    before = set(registry._REGISTRY)
    sys.path.insert(0, str(ROOT / "examples" / "plugin_example"))
    try:
        sys.modules.pop("mysel", None)
        yield importlib.import_module("mysel")
    finally:
        sys.path.remove(str(ROOT / "examples" / "plugin_example"))
        sys.modules.pop("mysel", None)
        for name in set(registry._REGISTRY) - before:
            registry.unregister_selector(name)


def test_a_registered_plugin_runs_on_meta(example_plugin):
    probs = torch.rand(16, 4, 5, 5).softmax(1).to(META)
    _assert_on_meta(pseudosel.select_reliable(probs, "mine", margin=0.2), "mine")
    spec = registry.selector_spec("mine_ema")
    module = registry.build_selector("mine_ema", 4, momentum=0.5).to(META).train()
    for _ in range(3):
        _assert_on_meta(spec.step(module, probs, None), "mine_ema step")
    _assert_on_meta(list(module.buffers()), "mine_ema buffers")


def test_select_reliable_front_door_on_meta():
    logits = torch.randn(2, 6, 7, 7).to(META)
    ignore = torch.zeros(2, 7, 7, dtype=torch.long).to(META)
    for method in ("csl", "threshold"):
        sel = pseudosel.select_reliable(logits, method, from_logits=True, ignore_mask=ignore)
        _assert_on_meta(sel, method)
        _assert_on_meta(sel.hard(), f"{method} hard")
    binary = torch.randn(3, 1, 7, 7).to(META)
    _assert_on_meta(
        pseudosel.select_reliable(binary, from_logits=True, activation="sigmoid"), "sigmoid"
    )
    multilabel = torch.rand(8, 3).to(META)
    _assert_on_meta(
        pseudosel.select_reliable(multilabel, "threshold", activation="sigmoid"), "multi-label"
    )


def _selection(shape=(2, 5, 6, 6)) -> pseudosel.Selection:
    return pseudosel.select_reliable(torch.rand(shape).softmax(1).to(META), "threshold", tau=0.5)


def test_selection_methods_on_meta():
    sel = _selection()
    _assert_on_meta([sel.ratio(), sel.hard()], "Selection methods")


def test_losses_on_meta():
    sel = _selection()
    logits = torch.randn(2, 5, 6, 6).to(META)
    for normalize in ("valid", "selected", "weight", "batch"):
        loss = losses.weighted_cross_entropy(logits, sel, normalize=normalize)
        _assert_on_meta(loss, f"weighted_cross_entropy/{normalize}")
    binary_logits = torch.randn(2, 1, 6, 6).to(META)
    binary = pseudosel.select_reliable(binary_logits, from_logits=True, activation="sigmoid")
    _assert_on_meta(
        losses.weighted_binary_cross_entropy(binary_logits, binary), "weighted_binary_ce"
    )


def test_metrics_on_meta():
    sel = _selection()
    target = torch.randint(0, 5, (2, 6, 6)).to(META)
    _assert_on_meta(metrics.selection_quality(sel, target, num_classes=5), "selection_quality")
    _assert_on_meta(metrics.selection_quality(sel), "selection_quality without labels")
    stats = metrics.SelectionStats(num_classes=5).to(META)
    for _ in range(2):
        stats.update(sel, target)
    _assert_on_meta(stats.compute(), "SelectionStats.compute")
    _assert_on_meta(list(stats.buffers()), "SelectionStats buffers")
    _assert_on_meta(
        metrics.auroc(sel.score.flatten(), sel.mask.flatten(), sel.valid.flatten()), "auroc"
    )


def test_masking_on_meta():
    images = torch.rand(2, 3, 6, 6).to(META)
    sel = _selection()
    box = masking.cutmix_box(2, 6, 6, device=META)
    _assert_on_meta(box, "cutmix_box")
    _assert_on_meta(masking.block_mask(2, 6, 6, block_size=2, device=META), "block_mask")
    _assert_on_meta(masking.paste(images, images.flip(0), box), "paste images")
    _assert_on_meta(masking.paste(sel, sel, box), "paste selections")
    _assert_on_meta(
        masking.trusted_mask_perturbation(images, sel, block_size=2), "trusted mask perturbation"
    )
