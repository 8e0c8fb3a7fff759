"""The USB adapter inside the real semilearn 0.3.2, against USB's own masking hooks.

Every algorithm is built as USB builds it (``get_config`` + ``get_algorithm``, a tiny network
on CPU) and trained on the same batches of sklearn's digits, which went through USB's own
dataset, augmentation and loader (tests/helpers/usb_support.py). Two runs per case: one with the
algorithm's own masking hook, one with ``PseudoselMaskingHook`` registered by the documented
one-liner. The masks must agree at every step, and so must the final weights and the state
USB keeps; a run saved with ``algorithm.save_model`` and resumed with ``load_model`` must
continue exactly as the uninterrupted run.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import usb_support as usb

usb.require_semilearn()

import pseudosel  # noqa: E402
from pseudosel.integrations.usb import CHECKPOINT_KEY, PseudoselMaskingHook  # noqa: E402

pytestmark = usb.IN_SEMILEARN

# Dash without its CUDA-only warm-up: rho_init as the warm-up would set it; one epoch per
# step so that rho moves at steps 0 and 10, reaching rho_min (hard labels) at step 10.
DASH = {"epoch": usb.STEPS, "rho_min": 0.2, "gamma": 10.0}
DASH_RHO_INIT = 1.0

# (algorithm, selector name, USB config, exact) — exact: hard masks, compared bit for bit
CASES = [
    ("fixmatch", "threshold", {}, True),
    ("fixmatch", "threshold", {"p_cutoff": 0.6}, True),
    ("flexmatch", "flexmatch", {}, True),
    ("flexmatch", "flexmatch", {"thresh_warmup": False}, True),
    ("freematch", "freematch", {"ema_p": 0.7}, True),
    ("freematch", "freematch", {"ema_p": 0.7, "use_quantile": True}, True),
    ("softmatch", "softmatch", {"ema_p": 0.7}, False),
    ("adamatch", "adamatch", {}, True),
    ("uda", "threshold", {}, True),  # UDA's p_cutoff is 0.8
    ("pseudolabel", "threshold", {}, True),
    ("dash", "dash", DASH, True),
]
# USB state on the masking hook, per algorithm
USB_STATE = {  # usb algorithms
    "flexmatch": ("classwise_acc", "selected_label"),
    "freematch": ("p_model", "time_p", "label_hist"),
    "softmatch": ("prob_max_mu_t", "prob_max_var_t"),
    "dash": ("rho_init", "rho", "rho_update_cnt"),
}


def build(name, hook=None, **config):
    algorithm = usb.build_algorithm(name, hook=hook, **config)
    if name == "dash":  # what Dash.warmup() leaves behind (it needs CUDA)
        algorithm.rho_init, algorithm.warmup_stage = DASH_RHO_INIT, False
    return algorithm


def run(name, batches, hook=None, **config):
    algorithm = build(name, hook, **config)
    masks = usb.record_masks(algorithm)
    usb.train(algorithm, batches)
    return algorithm, masks


def assert_same(actual, expected, exact):
    if exact:
        assert torch.equal(torch.as_tensor(actual), torch.as_tensor(expected))
    else:
        torch.testing.assert_close(
            torch.as_tensor(actual),
            torch.as_tensor(expected),
            rtol=1e-5,
            atol=1e-6,
            check_dtype=False,
        )


def assert_same_weights(a, b, exact):
    wa, wb = usb.weights(a), usb.weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert_same(wa[key], wb[key], exact)


@pytest.mark.parametrize(
    "name,selector,settings,exact", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES]
)
def test_masks_equal_usb_own_hook_at_every_step(batches, config, name, selector, settings, exact):
    theirs, expected = run(name, batches, **config, **settings)
    hook = PseudoselMaskingHook(selector)
    ours, masks = run(name, batches, hook, **config, **settings)
    assert ours.hooks_dict["MaskingHook"] is hook
    assert len(masks) == len(expected) == usb.STEPS
    for step, (mask, reference) in enumerate(zip(masks, expected, strict=True)):
        assert mask.shape == reference.shape == (usb.BATCH_SIZE * usb.URATIO,), step
        assert_same(mask, reference, exact)
    mixed = sum(bool(0 < m.mean() < 1) for m in expected)
    assert mixed >= 3, f"only {mixed} steps keep some and drop some: the test shows little"
    assert_same_weights(ours, theirs, exact)
    their_hook = theirs.hooks_dict["MaskingHook"]
    for attribute in USB_STATE.get(name, ()):  # EMA statistics agree to rounding
        assert_same(getattr(hook, attribute), getattr(their_hook, attribute), False)
    if name == "freematch":  # read by FreeMatch's fairness loss
        for attribute in ("p_model", "label_hist", "time_p"):
            assert_same(getattr(ours, attribute), getattr(theirs, attribute), False)
    if name == "dash":  # read by Dash's pseudo-labelling
        assert ours.use_hard_label is theirs.use_hard_label is True


def test_settings_come_from_the_algorithm_unless_given(batches, config):
    def first_step(name, hook, **settings):
        algorithm = build(name, hook, **config, **settings)
        usb.train(algorithm, batches[:1])
        return hook.module

    flex = first_step("flexmatch", PseudoselMaskingHook("flexmatch"), p_cutoff=0.9)
    assert (flex.tau, flex.num_unlabeled, flex.warmup) == (0.9, usb.UNLABELLED, True)
    free = first_step(
        "freematch",
        PseudoselMaskingHook("freematch"),
        ema_p=0.7,
        use_quantile=True,
        clip_thresh=True,
    )
    assert (free.momentum, free.use_quantile, free.clip_thresh) == (0.7, True, True)
    soft = first_step("softmatch", PseudoselMaskingHook("softmatch"), ema_p=0.9, n_sigma=3)
    assert (soft.momentum, soft.n_sigma) == (0.9, 3)
    dash = first_step("dash", PseudoselMaskingHook("dash"), T=0.7, C=1.5, **DASH)
    assert (dash.T, dash.c, dash.gamma, dash.rho_min) == (0.7, 1.5, 10.0, 0.2)
    assert (float(dash.rho_init), dash.update_every) == (DASH_RHO_INIT, 10)
    # explicit options win, and reach the constructor
    free = first_step("freematch", PseudoselMaskingHook("freematch", momentum=0.5), ema_p=0.7)
    assert free.momentum == 0.5
    flex = first_step("fixmatch", PseudoselMaskingHook("flexmatch", tau=0.8, num_unlabeled=None))
    assert (flex.tau, flex.num_unlabeled) == (0.8, None)
    # a selector USB does not have, inside FixMatch: built by name, settings where they apply
    u2pl = first_step("fixmatch", PseudoselMaskingHook("u2pl"))
    assert u2pl.total_steps == usb.STEPS
    dash = first_step("fixmatch", PseudoselMaskingHook("dash", rho_init=0.5))
    assert (float(dash.rho_init), dash.update_every, dash.T) == (0.5, 10 * usb.STEPS, 0.5)


def test_options_a_selector_does_not_take_are_type_errors():
    with pytest.raises(TypeError, match=r"\['tau'\].*'freematch'"):
        PseudoselMaskingHook("freematch", tau=0.5)
    with pytest.raises(TypeError, match=r"\['alpha'\].*'threshold'"):
        PseudoselMaskingHook("threshold", alpha=2.0)
    with pytest.raises(TypeError, match="configure the FreeMatchSelector instance"):
        PseudoselMaskingHook(pseudosel.FreeMatchSelector(10), momentum=0.5)
    with pytest.raises(ValueError, match="selector must be one of"):
        PseudoselMaskingHook("fixed")


def test_dash_without_rho_init_says_what_to_pass(batches, config):
    algorithm = build("fixmatch", PseudoselMaskingHook("dash"), **config)
    with pytest.raises(TypeError, match=r"rho_init.*PseudoselMaskingHook\('dash', rho_init="):
        usb.train(algorithm, batches[:1])


def test_adamatch_needs_the_labelled_predictions(batches, config):
    algorithm = build("fixmatch", PseudoselMaskingHook("adamatch"), **config)
    with pytest.raises(ValueError, match="FixMatch passes no logits_x_lb"):
        usb.train(algorithm, batches[:1])


def test_flexmatch_inside_fixmatch_falls_back_to_classwise_with_one_warning(batches, config):
    hook = PseudoselMaskingHook("flexmatch")
    algorithm = build("fixmatch", hook, **config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usb.train(algorithm, batches[:4])
    ours = [w for w in caught if "idx_ulb" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "class-wise" in str(ours[0].message) and "FlexMatch algorithm" in str(ours[0].message)
    assert hook.module.num_unlabeled is None and int(hook.module.counts[:-1].sum()) > 0


def test_flexmatch_without_the_unlabelled_set_size_says_where_to_set_it(batches, config):
    hook = PseudoselMaskingHook("flexmatch")
    algorithm = build("fixmatch", hook, **config)
    del algorithm.args.ulb_dest_len  # custom loaders, ulb_dest_len not in the config
    logits = torch.randn(4, usb.NUM_CLASSES)
    with pytest.raises(ValueError, match="set ulb_dest_len in the config"):
        hook.masking(algorithm, logits_x_ulb=logits, idx_ulb=torch.arange(4))


def test_csl_weights_are_what_usb_logs_as_util_ratio(batches, config):
    hook = PseudoselMaskingHook("csl")
    ratios = []
    algorithm = build("fixmatch", hook, **config)
    usb.train(
        algorithm,
        batches[:3],
        on_step=lambda alg: ratios.append((alg.log_dict["train/util_ratio"], hook.selection)),
    )
    for logged, selection in ratios:
        assert logged == pytest.approx(float(selection.weight.mean()))
        assert ((selection.weight > 0) & (selection.weight <= 1)).all()
    assert any(bool((s.weight < 1).any() & s.mask.any()) for _, s in ratios)


@pytest.mark.parametrize("name", ["freematch", "flexmatch", "softmatch", "dash"])  # usb algorithms
def test_another_selector_leaves_usb_its_attributes(batches, config, name):
    """csl inside FreeMatch still feeds its fairness loss; every checkpoint works."""
    hook = PseudoselMaskingHook("csl")
    algorithm = build(name, hook, **config, **(DASH if name == "dash" else {}))
    usb.train(algorithm, batches[:1])  # one step: the same network as the reference's
    save_dict = algorithm.get_save_dict()
    assert CHECKPOINT_KEY in save_dict
    for attribute in USB_STATE[name]:
        assert attribute in save_dict
    if name == "freematch":  # statistics kept as FreeMatch's own hook keeps them
        reference = build(name, **config)
        usb.train(reference, batches[:1])
        for attribute in USB_STATE[name]:
            torch.testing.assert_close(save_dict[attribute], reference.get_save_dict()[attribute])
        assert torch.equal(algorithm.p_model, save_dict["p_model"])


RESUME = [
    ("flexmatch", "flexmatch", {}, True),
    ("freematch", "freematch", {"ema_p": 0.7}, True),
    ("softmatch", "softmatch", {"ema_p": 0.7}, False),
    ("dash", "dash", DASH, True),
    ("fixmatch", "csl", {}, False),
    ("fixmatch", "freematch", {"ema_p": 0.7}, True),  # the algorithm does not know it
]
SAVED_AT = 9  # the checkpoint is written after step 9; the resumed run starts at step 10
UNINTERRUPTED: dict = {}


@pytest.fixture
def cuda_is_cpu(monkeypatch):
    """semilearn's load_model moves the restored state with ``.cuda(gpu)``: stay on CPU."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


@pytest.mark.parametrize("attach", [False, True], ids=["usb-resume-config", "attach"])
@pytest.mark.parametrize(
    "name,selector,settings,exact", RESUME, ids=[f"{c[0]}-{c[1]}" for c in RESUME]
)
def test_save_model_load_model_resumes_identically(
    batches, config, cuda_is_cpu, name, selector, settings, exact, attach
):
    key = (name, selector, tuple(sorted(settings.items())))
    if key not in UNINTERRUPTED:  # shared by the two ways of resuming
        UNINTERRUPTED[key] = run(name, batches, PseudoselMaskingHook(selector), **settings)
    straight, expected = UNINTERRUPTED[key]

    first = build(name, PseudoselMaskingHook(selector), **config, **settings)
    saved = usb.train(first, batches[: SAVED_AT + 1], save_after=SAVED_AT)
    checkpoint = torch.load(saved, map_location="cpu", weights_only=True)
    first_hook = first.hooks_dict["MaskingHook"]
    ours = checkpoint[CHECKPOINT_KEY]["MaskingHook"]
    for key, value in first_hook.state_dict().get("selector", {}).items():
        assert torch.equal(ours["selector"][key], value)
    for attribute in USB_STATE.get(name, ()):  # where USB's own code saves them
        assert_same(checkpoint[attribute], getattr(first_hook, attribute), True)

    hook = PseudoselMaskingHook(selector)
    if attach:  # loading by hand: the hook restores itself inside load_model
        resumed = build(name, hook, **config, **settings, resume=True)
        hook.attach(resumed)
    else:  # USB's train.py: resume + load_path in the config, then load_model
        resumed = build(name, hook, **config, **settings, resume=True, load_path=str(saved))
    resumed.load_model(str(saved))
    assert resumed.it == SAVED_AT + 1
    masks = usb.record_masks(resumed)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*starts from its initial state")
        usb.train(resumed, batches)
    assert len(masks) == usb.STEPS - SAVED_AT - 1
    for mask, reference in zip(masks, expected[SAVED_AT + 1 :], strict=True):
        assert_same(mask, reference, exact)
    assert_same_weights(resumed, straight, exact)
    if hook.module is not None:
        for key, value in hook.module.state_dict().items():
            reference = straight.hooks_dict["MaskingHook"].module.state_dict()[key]
            assert_same(value, reference, exact)


def test_a_resume_that_restores_nothing_warns(batches, config):
    hook = PseudoselMaskingHook("freematch")
    algorithm = build("fixmatch", hook, **config)
    algorithm.it = 5  # as after load_model of a checkpoint written without the hook
    with pytest.warns(UserWarning, match="iteration 5 .* starts from its initial state"):
        usb.train(algorithm, batches[:6])
