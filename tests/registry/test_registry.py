"""The selector registry and its plug-in API: registration, errors, the front door a
plug-in gets for free, the output check, entry points, and the built-in declarations."""

from __future__ import annotations

import importlib.metadata
import warnings
from types import SimpleNamespace

import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps

import pseudosel
from pseudosel import registry
from pseudosel.compiled import compiled
from pseudosel.registry import BenchCase, selector_spec


@pytest.fixture
def clean_registry():
    """Registrations made by a test are removed afterwards (and the output-check memo)."""
    before = set(registry._REGISTRY)
    yield
    for name in set(registry._REGISTRY) - before:
        registry.unregister_selector(name)


def keep_top(probs, *, valid, cut=0.7):
    """A user's selector: the arg-max where the confidence reaches ``cut``."""
    confidence, labels = probs.max(1)
    mask = valid & (confidence >= cut)
    return pseudosel.Selection(labels, mask.to(confidence.dtype), mask, confidence, valid)


class RunningCut(pseudosel.Selector):
    """A user's stateful selector: the cut is an EMA of the batch's mean confidence."""

    def __init__(self, num_classes: int, *, momentum: float = 0.5, **shared):
        super().__init__(num_classes=num_classes, **shared)
        self.momentum = momentum
        self.register_buffer("cut", torch.tensor(0.5))

    def forward(self, probs, valid=None):
        probs, valid, _ = self.prepare(probs, valid)
        confidence, labels = probs.max(1)
        if self.training:
            mean = torch.where(valid, confidence, 0).sum() / valid.sum().clamp_min(1)
            self.cut.mul_(self.momentum).add_((1 - self.momentum) * mean)
        mask = valid & (confidence >= self.cut)
        return self.finish(
            pseudosel.Selection(labels, mask.to(confidence.dtype), mask, confidence, valid)
        )


# ---------------------------------------------------------------- registration


def test_a_registered_function_works_by_name(clean_registry):
    pseudosel.register_selector("keep_top", keep_top, summary="arg-max above a cut")
    assert "keep_top" in pseudosel.available_selectors(stateful=False)
    probs = classifier_outputs(32, 5, seed=0)
    sel = pseudosel.select_reliable(probs, "keep_top", cut=0.6)
    assert torch.equal(sel.mask, probs.max(1).values >= 0.6)
    assert selector_spec("keep_top").summary == "arg-max above a cut"


def test_registration_as_a_decorator_returns_the_function(clean_registry):
    @pseudosel.register_selector("decorated")
    def decorated(probs, *, valid):
        return keep_top(probs, valid=valid)

    assert decorated.__name__ == "decorated" and callable(decorated)
    assert pseudosel.select_reliable(classifier_outputs(4, 3), "decorated").mask.shape == (4,)


def test_a_plugin_gets_the_front_door_for_free(clean_registry):
    """logits, ignore_mask, sigmoid outputs, weighting and value checks: all handled
    before the plug-in's own function sees checked class probabilities."""
    seen = []

    @pseudosel.register_selector("spy", inputs=("softmax", "sigmoid", "multilabel"))
    def spy(probs, *, valid):
        seen.append((probs, valid))
        return keep_top(probs, valid=valid)

    logits = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * 3
    ignore = torch.zeros(2, 6, 6, dtype=torch.uint8)
    ignore[:, :2] = 255
    sel = pseudosel.select_reliable(
        logits.requires_grad_(), "spy", from_logits=True, ignore_mask=ignore, weighting="hard"
    )
    probs, valid = seen[-1]
    assert not probs.requires_grad
    torch.testing.assert_close(probs, logits.detach().softmax(1))
    assert torch.equal(valid, ignore != 255) and not sel.mask[:, :2].any()
    # a binary sigmoid output arrives as its two classes (1 - p, p)
    p = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    pseudosel.select_reliable(p, "spy", activation="sigmoid")
    torch.testing.assert_close(seen[-1][0], torch.cat((1 - p, p), 1))
    # the value check runs before the plug-in: logits passed as probabilities are refused
    with pytest.raises(ValueError, match="from_logits=True"):
        pseudosel.select_reliable(logits.detach(), "spy")
    # channels-last input with a known class count is refused before it too
    with pytest.raises(ValueError, match=r"movedim\(-1, 1\)"):
        pseudosel.select_reliable(logits.detach().movedim(1, -1), "spy", from_logits=True,
                                  num_classes=4)  # fmt: skip


def test_a_plugin_without_multilabel_support_refuses_it(clean_registry):
    pseudosel.register_selector("binary_only", keep_top)  # inputs: softmax, sigmoid
    with pytest.raises(ValueError, match="binary_only does not support multi-label"):
        pseudosel.select_reliable(torch.rand(4, 3), "binary_only", activation="sigmoid")
    pseudosel.register_selector("softmax_only", keep_top, inputs=("softmax",))
    with pytest.raises(ValueError, match="softmax class probabilities only"):
        pseudosel.select_reliable(torch.rand(4, 1), "softmax_only", activation="sigmoid")


@pytest.mark.parametrize(
    "bad, field, error",
    [
        (lambda s: s._replace(labels=s.labels.float()), "labels", TypeError),
        (lambda s: s._replace(mask=s.mask.float()), "mask", TypeError),
        (lambda s: s._replace(weight=s.weight[:-1]), "weight", ValueError),
        (lambda s: s._replace(score=s.score.to("meta")), "score", ValueError),
        (lambda s: tuple(s), None, TypeError),
    ],
    ids=["dtype", "bool", "shape", "device", "type"],
)
def test_a_plugin_output_is_checked_on_first_use(clean_registry, bad, field, error):
    pseudosel.register_selector("broken", lambda probs, *, valid: bad(keep_top(probs, valid=valid)))
    message = f"selector 'broken'.*Selection.{field}" if field else "not a pseudosel.Selection"
    with pytest.raises(error, match=message):
        pseudosel.select_reliable(classifier_outputs(6, 3), "broken")


def test_a_stateful_plugin_module(clean_registry):
    pseudosel.register_selector("running_cut", RunningCut, summary="an EMA cut")
    spec = selector_spec("running_cut")
    assert spec.stateful and spec.module is RunningCut
    assert "running_cut" in pseudosel.available_selectors(stateful=True)
    with pytest.raises(ValueError, match="keeps state.*RunningCut.*once"):
        pseudosel.select_reliable(classifier_outputs(4, 3), "running_cut")
    module = registry.build_selector("running_cut", 3, momentum=0.0)
    assert isinstance(module, RunningCut) and module.num_classes == 3
    probs = classifier_outputs(16, 3, seed=2)
    sel = spec.step(module, probs, None)
    assert float(module.cut) == pytest.approx(float(probs.max(1).values.mean()))
    assert torch.equal(sel.mask, probs.max(1).values >= module.cut)
    # its shared options work as on the built-ins
    hard = registry.build_selector("running_cut", 3, weighting="hard")
    assert torch.equal(pseudosel.select_reliable(probs, hard).weight, hard(probs).weight)
    with pytest.raises(ValueError, match="num_classes=3"):
        module(classifier_outputs(4, 5))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: pseudosel.register_selector("csl", keep_top), ValueError,
         "'csl' is a built-in selector.*overwrite=True"),
        (lambda: pseudosel.register_selector("x", keep_top, colour="red"), TypeError,
         r"unknown declaration \['colour'\]"),
        (lambda: pseudosel.register_selector("x", lambda p, *, valid: p), TypeError,
         "first argument must be probs"),
        (lambda: pseudosel.register_selector("x", lambda probs: probs), TypeError,
         "must take valid="),
        (lambda: pseudosel.register_selector("x", keep_top, needs=("labels",)), ValueError,
         "needs must be drawn from"),
        (lambda: pseudosel.register_selector("x", keep_top, stateful=True), ValueError,
         "stateful selector needs its module class"),
        (lambda: pseudosel.register_selector("2x", keep_top), ValueError, "identifier"),
        (lambda: pseudosel.register_selector("x", 3), TypeError, "function or a module class"),
        (lambda: pseudosel.register_selector("x", dict), TypeError, "nn.Module selector"),
        (lambda: pseudosel.register_selector("x", keep_top, bench=("row",)), TypeError,
         "BenchCase"),
    ],
    ids=["clash", "unknown-key", "no-probs", "no-valid", "needs", "stateful", "name",
         "not-callable", "not-module", "bench"],
)  # fmt: skip
def test_bad_registrations_are_refused(clean_registry, call, error, match):
    with pytest.raises(error, match=match):
        call()
    assert "x" not in pseudosel.available_selectors()


def test_overwrite_replaces_deliberately_and_unregister_removes(clean_registry):
    pseudosel.register_selector("mine", keep_top)
    with pytest.raises(ValueError, match="already registered"):
        pseudosel.register_selector("mine", keep_top)
    pseudosel.register_selector("mine", lambda probs, *, valid: keep_top(probs, valid=valid,
                                cut=0.0), overwrite=True)  # fmt: skip
    assert bool(pseudosel.select_reliable(classifier_outputs(5, 3), "mine").mask.all())
    registry.unregister_selector("mine")
    with pytest.raises(ValueError, match="unknown selector 'mine'"):
        pseudosel.select_reliable(classifier_outputs(5, 3), "mine")
    with pytest.raises(ValueError, match="no selector named 'mine'"):
        registry.unregister_selector("mine")


def test_a_registered_function_compiles_with_its_check_after_the_graph(clean_registry):
    pseudosel.register_selector("keep_top", keep_top)
    function = selector_spec("keep_top").function
    fast = compiled(function)
    probs = smooth_maps(2, 4, 6, 6, seed=3)
    for a, b in zip(fast(probs), function(probs), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="probabilities along dim 1"):
        fast(probs * 2)


# ---------------------------------------------------------------- entry points


def test_entry_points_register_on_first_lookup(clean_registry, monkeypatch, tmp_path):
    """An installed package's ``pseudosel.selectors`` entry point names a module that
    registers when imported; a broken one warns and the others still load."""
    plugin = tmp_path / "plugin_via_entry_point.py"
    plugin.write_text(
        "import pseudosel\n"
        "def fn(probs, *, valid):\n"
        "    c, labels = probs.max(1)\n"
        "    return pseudosel.Selection(labels, valid.float(), valid, c, valid)\n"
        "pseudosel.register_selector('from_entry_point', fn)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    good = importlib.metadata.EntryPoint(
        "from_entry_point", "plugin_via_entry_point", "pseudosel.selectors"
    )
    broken = importlib.metadata.EntryPoint("broken", "no_such_module", "pseudosel.selectors")
    monkeypatch.setattr(
        registry,
        "entry_points",
        lambda group: [broken, good] if group == "pseudosel.selectors" else [],
    )
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "from_entry_point" in pseudosel.available_selectors()
    assert any("'broken'" in str(w.message) for w in caught)
    assert pseudosel.select_reliable(classifier_outputs(3, 2), "from_entry_point").mask.all()


# ---------------------------------------------------------------- the built-ins


def test_every_builtin_is_declared_with_its_callables():
    names = pseudosel.available_selectors()
    assert names[: len(names)] == [n for n in names]  # registration order
    for name in names:
        spec = selector_spec(name)
        if not spec.builtin:
            continue
        assert spec.summary and spec.source, name
        assert (spec.function is None) == spec.stateful, name
        if spec.stateful:
            assert issubclass(spec.module, pseudosel.Selector), name
        if spec.usb is not None and spec.usb.state:
            buffers = dict(spec.build(2, num_unlabeled=8, **_required(spec)).named_buffers())
            assert set(spec.usb.state.values()) <= set(buffers), name
        for case in spec.bench:
            assert isinstance(case, BenchCase), name


def _required(spec) -> dict:
    """The options a module cannot be built without (from its first example)."""
    return dict(next(iter(spec.examples.values())))


def test_select_reliable_takes_every_stateless_name_and_refuses_the_stateful_ones():
    stateless = pseudosel.available_selectors(stateful=False)
    stateful = pseudosel.available_selectors(stateful=True)
    assert stateless and stateful and not set(stateless) & set(stateful)
    assert sorted(stateless + stateful) == sorted(pseudosel.available_selectors())
    probs = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)).mul(3).softmax(1)
    for name in stateless:
        spec = registry.selector_spec(name)
        if spec.requires:  # the convex path (cvxpy): tested in tests/test_convex.py
            continue
        inputs = {"probs_labeled": probs} if "labeled" in spec.needs else {}
        sel = pseudosel.select_reliable(probs, name, **_required(spec), **inputs)
        assert isinstance(sel, pseudosel.Selection) and sel.labels.shape == (16,), name
    for name in stateful:
        with pytest.raises(ValueError, match=f"'{name}' keeps state across training steps"):
            pseudosel.select_reliable(probs, name)


def test_build_selector_fills_the_context_by_name():
    flex = registry.build_selector("flexmatch", 7, num_unlabeled=100, tau=0.8)
    assert (flex.num_classes, flex.num_unlabeled, flex.tau) == (7, 100, 0.8)
    dash = registry.build_selector("dash", 7, rho_init=1.0, update_every=3)  # no K taken
    assert dash.update_every == 3
    classwise = registry.build_selector("flexmatch", 7, num_unlabeled=None)
    assert classwise.num_unlabeled is None


def test_usb_readers_of_the_builtins():
    dash = selector_spec("dash").usb.settings["update_every"]
    assert dash(SimpleNamespace(num_iter_per_epoch=20)) == 200
    assert dash(SimpleNamespace()) is registry.MISSING


@pytest.mark.parametrize("name", pseudosel.available_selectors())
def test_option_names_are_what_the_selector_accepts(name):
    """``option_names()`` (what the USB hook checks options against up front): the shared
    options it lists are accepted at their defaults, and a name it does not list is refused
    by the selector itself."""
    spec = registry.selector_spec(name)
    names = spec.option_names()
    if names is None:  # takes **options and answers for itself
        return
    defaults = {"validate": True, "activation": "softmax", "multilabel": None, "weighting": "soft"}
    listed = {key: value for key, value in defaults.items() if key in names}
    assert {"validate", "activation"} <= set(listed), sorted(names)
    probs = classifier_outputs(12, 3, seed=1)
    inputs = {"probs_labeled": probs} if "labeled" in spec.needs else {}
    if spec.stateful:
        spec.build(3, num_unlabeled=12, **_required(spec), **listed)
        with pytest.raises(TypeError, match="not_an_option"):
            spec.build(3, num_unlabeled=12, **_required(spec), not_an_option=1)
    else:
        if spec.requires:
            return
        spec.function(probs, **_required(spec), **listed, **inputs)
        with pytest.raises(TypeError, match="not_an_option"):
            spec.function(probs, **_required(spec), not_an_option=1, **inputs)
