"""Registered plug-in selectors by name inside the real semilearn 0.3.2.

The USB hook holds no list of selector names: it reads the registry. A stateless plug-in
function and a stateful plug-in module (a :class:`pseudosel.Selector` with a buffer) are
registered here, run inside USB algorithms built as USB builds them (tests/helpers/usb_support.py),
and their masks compared with the plug-in called directly on the probabilities the hook
received. The stateful one also goes through ``save_model``/``load_model``. Built-ins that
USB does not have (Adsh, CorrMatch) run by name from their registry entries too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import usb_support as usb

usb.require_semilearn()

import pseudosel  # noqa: E402
from pseudosel.integrations.usb import CHECKPOINT_KEY, PseudoselMaskingHook  # noqa: E402
from pseudosel.registry import UsbMapping, selector_spec, unregister_selector  # noqa: E402

pytestmark = usb.IN_SEMILEARN

STATELESS = "test_usb_plugin"
STATEFUL = "test_usb_stateful_plugin"
SAVED_AT = 9  # the checkpoint is written after step 9; the resumed run starts at step 10


def upper_share(probs, *, valid, share=0.5, floor=0.0):
    """Keep the most confident ``share`` of the batch, and only above ``floor``."""
    confidence, labels = probs.max(1)
    cutoff = torch.quantile(confidence, 1 - share).clamp(min=floor)
    mask = valid & (confidence >= cutoff)
    return pseudosel.Selection(labels, mask.to(probs.dtype), mask, confidence, valid)


class RunningMeanThreshold(pseudosel.Selector):
    """Keep a sample whose confidence reaches an EMA of the batches' mean confidence.

    Buffers:
        threshold (): the EMA, 1/K at start; in training mode the batch enters it first.
    """

    def __init__(self, num_classes, *, momentum=0.9, weighting="soft"):
        super().__init__(num_classes=num_classes, weighting=weighting)
        self.momentum = momentum
        self.register_buffer("threshold", torch.tensor(1.0 / num_classes))

    @torch.no_grad()
    def forward(self, probs, valid=None):
        probs, valid, _ = self.prepare(probs, valid)
        confidence, labels = probs.max(1)
        if self.training:
            mean = (confidence * valid).sum() / valid.sum().clamp(min=1)
            self.threshold.mul_(self.momentum).add_((1 - self.momentum) * mean)
        mask = valid & (confidence >= self.threshold)
        return self.finish(
            pseudosel.Selection(labels, mask.to(probs.dtype), mask, confidence, valid)
        )


@pytest.fixture
def stateless_plugin():
    # the plug-in's options come from a setting in USB's config, as a built-in's do
    pseudosel.register_selector(
        STATELESS, upper_share, usb=UsbMapping(settings={"floor": "plugin_floor"})
    )
    try:
        yield upper_share
    finally:
        unregister_selector(STATELESS)


@pytest.fixture
def stateful_plugin():
    pseudosel.register_selector(
        STATEFUL,
        RunningMeanThreshold,
        usb=UsbMapping(
            settings={"momentum": "plugin_momentum"},
            state={"plugin_threshold": "threshold"},
            initial={"plugin_threshold": lambda k, n: torch.tensor(1.0 / k)},
        ),
    )
    try:
        yield RunningMeanThreshold
    finally:
        unregister_selector(STATEFUL)


@pytest.fixture
def cuda_is_cpu(monkeypatch):
    """semilearn's load_model may move restored state with ``.cuda(gpu)``: stay on CPU."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


def record(algorithm):
    """Every masking call of the registered hook: (probabilities it received, mask)."""
    hook = algorithm.hooks_dict["MaskingHook"]
    calls = []
    masking = hook.masking

    def recording(alg, *args, **kwargs):
        mask = masking(alg, *args, **kwargs)
        logits = kwargs["logits_x_ulb"].detach()
        probs = alg.compute_prob(logits) if kwargs.get("softmax_x_ulb", True) else logits
        calls.append((probs.clone(), mask.detach().clone()))
        return mask

    hook.masking = recording
    return calls


def run(name, batches, hook, **config):
    algorithm = usb.build_algorithm(name, hook=hook, **config)
    calls = record(algorithm)
    usb.train(algorithm, batches)
    return algorithm, calls


def assert_mixed(calls):
    mixed = sum(bool(0 < mask.mean() < 1) for _, mask in calls)
    assert mixed >= 3, f"only {mixed} steps keep some and drop some: the test shows little"


@pytest.mark.parametrize(
    "algorithm",
    ["fixmatch", "flexmatch", "freematch", "adamatch"],  # usb algorithms
)
def test_a_stateless_plugin_runs_by_name(batches, config, stateless_plugin, algorithm):
    hook = PseudoselMaskingHook(STATELESS, share=0.4)
    ours, calls = run(algorithm, batches, hook, **config, plugin_floor=0.3)
    assert ours.hooks_dict["MaskingHook"] is hook and hook.module is None
    assert len(calls) == usb.STEPS
    for probs, mask in calls:
        valid = torch.ones(probs.shape[0], dtype=torch.bool)
        expected = stateless_plugin(probs, valid=valid, share=0.4, floor=0.3)
        assert torch.equal(mask, expected.weight)
    assert_mixed(calls)


def test_a_stateless_plugin_option_overrides_the_usb_setting(batches, config, stateless_plugin):
    hook = PseudoselMaskingHook(STATELESS, floor=0.99)
    _, calls = run("fixmatch", batches[:3], hook, **config, plugin_floor=0.3)
    for probs, mask in calls:
        valid = torch.ones(probs.shape[0], dtype=torch.bool)
        assert torch.equal(mask, stateless_plugin(probs, valid=valid, floor=0.99).weight)


@pytest.mark.parametrize("algorithm", ["fixmatch", "freematch"])
def test_a_stateful_plugin_runs_by_name(batches, config, stateful_plugin, algorithm):
    hook = PseudoselMaskingHook(STATEFUL)
    ours, calls = run(algorithm, batches, hook, **config, plugin_momentum=0.7)
    assert isinstance(hook.module, stateful_plugin) and hook.module.momentum == 0.7
    reference = stateful_plugin(usb.NUM_CLASSES, momentum=0.7)
    for probs, mask in calls:
        assert torch.equal(mask, reference(probs).weight)
    assert torch.equal(hook.module.threshold, reference.threshold)
    assert torch.equal(hook.plugin_threshold, reference.threshold)  # its USB attribute
    assert_mixed(calls)
    if algorithm == "freematch":  # FreeMatch's fairness loss still reads its statistics
        args = ours.args
        statistics = pseudosel.FreeMatchSelector(
            usb.NUM_CLASSES,
            momentum=args.ema_p,
            use_quantile=args.use_quantile,
            clip_thresh=args.clip_thresh,
        )
        for probs, _ in calls:
            statistics.update(probs)
        for name in ("p_model", "label_hist", "time_p"):
            torch.testing.assert_close(getattr(ours, name), getattr(statistics, name))


def test_a_stateful_plugin_resumes_from_the_checkpoint(
    batches, config, cuda_is_cpu, stateful_plugin
):
    straight, expected = run("fixmatch", batches, PseudoselMaskingHook(STATEFUL), **config)

    first = usb.build_algorithm("fixmatch", hook=PseudoselMaskingHook(STATEFUL), **config)
    saved = usb.train(first, batches[: SAVED_AT + 1], save_after=SAVED_AT)
    checkpoint = torch.load(saved, map_location="cpu", weights_only=True)
    state = checkpoint[CHECKPOINT_KEY]["MaskingHook"]["selector"]
    assert torch.equal(state["threshold"], first.hooks_dict["MaskingHook"].module.threshold)

    hook = PseudoselMaskingHook(STATEFUL)
    resumed = usb.build_algorithm("fixmatch", hook=hook, **config, resume=True)
    hook.attach(resumed)
    resumed.load_model(str(saved))
    calls = record(resumed)
    usb.train(resumed, batches)
    assert len(calls) == usb.STEPS - SAVED_AT - 1
    for (_, mask), (_, reference) in zip(calls, expected[SAVED_AT + 1 :], strict=True):
        assert torch.equal(mask, reference)
    straight_module = straight.hooks_dict["MaskingHook"].module
    assert torch.equal(hook.module.threshold, straight_module.threshold)


def test_a_plugin_option_it_does_not_take_is_a_type_error(stateful_plugin):
    with pytest.raises(TypeError, match=rf"\['tau'\].*'{STATEFUL}'"):
        PseudoselMaskingHook(STATEFUL, tau=0.5)


def test_an_unknown_name_lists_the_registered_plugins(stateless_plugin):
    with pytest.raises(ValueError, match=rf"selector must be one of .*'{STATELESS}'"):
        PseudoselMaskingHook("not_registered")


def test_adsh_runs_by_name_from_its_registry_entry(batches, config):
    hook = PseudoselMaskingHook("adsh")
    ours, calls = run("flexmatch", batches[:4], hook, **config)
    assert isinstance(hook.module, pseudosel.AdshSelector)
    assert hook.module.num_unlabeled == usb.UNLABELLED  # from args.ulb_dest_len
    assert int((hook.module.prediction >= 0).sum()) > 0  # idx_ulb reached its update
    assert len(calls) == 4


def test_corrmatch_runs_by_name_from_its_registry_entry(batches, config):
    hook = PseudoselMaskingHook("corrmatch")
    _, calls = run("fixmatch", batches[:4], hook, **config)
    reference = pseudosel.CorrMatchSelector(usb.NUM_CLASSES)
    for probs, mask in calls:
        assert torch.equal(mask, reference(probs).weight)


def test_a_selector_needing_positions_is_refused_where_usb_passes_none(batches, config):
    algorithm = usb.build_algorithm("fixmatch", hook=PseudoselMaskingHook("adsh"), **config)
    with pytest.raises(ValueError, match="'adsh' needs .*FixMatch passes no idx_ulb"):
        usb.train(algorithm, batches[:1])


def test_a_selector_needing_held_out_data_is_refused():
    with pytest.raises(ValueError, match="'precision_target' needs held-out"):
        PseudoselMaskingHook("precision_target")


def test_a_usb_mapping_cannot_claim_the_hooks_own_attributes():
    pseudosel.register_selector(
        STATEFUL, RunningMeanThreshold, usb=UsbMapping(state={"masking": "threshold"})
    )
    try:
        with pytest.raises(ValueError, match="'masking' .*attribute of the masking hook"):
            PseudoselMaskingHook(STATEFUL)
        assert callable(PseudoselMaskingHook("csl").masking)  # other selectors still work
    finally:
        unregister_selector(STATEFUL)


def test_the_documented_usb_settings_are_the_registrys():
    """docs/usb.md's table of the built-ins' USB settings against their registry entries."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "usb.md").read_text()
    table = text.split("| selector | keyword ← USB setting |")[1].split("\n\n")[0]
    documented = {}
    for row in table.strip().splitlines()[1:]:
        names, pairs = row.strip("|").split("|")
        settings = dict(
            (keyword.strip(" `"), source.strip(" `"))
            for keyword, source in (pair.split("←") for pair in pairs.split(","))
        )
        for name in re.findall(r'`"(\w+)"`', names):
            documented[name] = settings
    builtins = [selector_spec(name) for name in pseudosel.available_selectors()]
    mapped = {spec.name: spec.usb.settings for spec in builtins if spec.builtin and spec.usb}
    assert documented.keys() == mapped.keys()
    for name, settings in mapped.items():
        assert documented[name].keys() == settings.keys(), name
        for keyword, source in settings.items():
            if isinstance(source, str):  # else a function of the algorithm, described in words
                assert documented[name][keyword] == source, (name, keyword)
