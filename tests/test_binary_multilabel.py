"""Binary and multi-label (sigmoid) outputs, and the soft/hard switch, on every selector.

- Binary: every selector of the zoo given a sigmoid output p (N, 1, *spatial) with
  ``activation="sigmoid"`` returns bit for bit what it returns on the explicit two-class
  input ``torch.cat((1 - p, p), 1)``, step after step, with the same state.
- Multi-label: (N, L, *spatial) sigmoids are selected per (sample, label); the selectors
  with per-class state refuse them by name.
- ``weighting="hard"`` turns any selector's weight into its mask; ``"soft"`` changes nothing.
- ``weighted_binary_cross_entropy`` against a float64 per-position reference, and gradcheck.

The selectors called by name are the registry's stateless ones that take the output
(``spec.inputs``), those needing optional packages (cvxpy: slow) aside; the zoo's cases
cover every selector, ``F.csl_max_margin`` included.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers.host_sync_guard import forbid_host_sync
from helpers.selector_zoo import CASES, outputs_of, state_of
from helpers.tolerances import DTYPES, dtype_id
from hypothesis import given, settings
from hypothesis import strategies as st

import pseudosel
import pseudosel.functional as F
from pseudosel.registry import selector_spec


def stateless_taking(output: str) -> list[str]:
    """The registered stateless selectors that take ``output`` ("sigmoid": a binary
    sigmoid; "multilabel": L sigmoids), without optional packages (module docstring)."""
    return [
        name
        for name in pseudosel.available_selectors(stateful=False)
        if output in selector_spec(name).inputs and not selector_spec(name).requires
    ]


def labeled_inputs(name: str, probs_labeled: torch.Tensor) -> dict:
    """``probs_labeled`` for a selector that needs the labelled batch, else nothing."""
    return {"probs_labeled": probs_labeled} if "labeled" in selector_spec(name).needs else {}


def sigmoid_maps(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Sigmoid probabilities of smooth-ish logits with a spread of confidences, some exact
    0/0.5/1 values included."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    p = logits.sigmoid()
    flat = p.view(-1)
    if flat.numel() >= 6:
        flat[:3] = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    return p.to(dtype)


def batch(case, step: int, *, dense: bool, channels: int = 1, dtype=torch.float32, device="cpu"):
    shape = (2, channels, 5, 6) if dense else (12, channels)
    probs = sigmoid_maps(shape, seed=step, dtype=dtype)
    gen = torch.Generator().manual_seed(50 + step)
    positions = (shape[0], *shape[2:]) if channels == 1 else shape
    valid = torch.rand(positions, generator=gen) < 0.75
    return probs.to(device), valid.to(device)


def two_classes(p: torch.Tensor) -> torch.Tensor:
    """The explicit two-class input the sigmoid form must equal."""
    return torch.cat((1 - p, p), 1)


def assert_identical(a, b, what: str) -> None:
    for x, y in zip(outputs_of(a), outputs_of(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape, what
        assert torch.equal(x, y), f"{what}: max difference {(x.double() - y.double()).abs().max()}"


# ---------------------------------------------------------------- binary == two classes


# the convex boundary is slow: one dtype is enough for it
BINARY_CASES = [
    (case, dtype) for case in CASES for dtype in DTYPES if not case.convex or dtype == torch.float32
]


@pytest.mark.parametrize(
    "case,dtype", BINARY_CASES, ids=lambda v: v.name if hasattr(v, "name") else dtype_id(v)
)
def test_binary_sigmoid_equals_the_explicit_two_class_input(case, dtype, device):
    layouts = [True] if case.dense else []
    layouts += [False] if case.classification else []
    for dense in layouts:
        explicit_module, explicit = case.build(2, device=device)
        sigmoid_module, sigmoid = case.build(2, activation="sigmoid", device=device)
        for step in range(2 if case.convex else 4):
            p, valid = batch(case, step, dense=dense, dtype=dtype, device=device)
            expected = explicit(two_classes(p), valid)
            result = sigmoid(p, valid)
            assert_identical(result, expected, f"{case.name} step {step} dense={dense}")
            if isinstance(result, tuple):
                assert result.labels.shape == valid.shape
            for a, b in zip(
                state_of(sigmoid_module, sigmoid), state_of(explicit_module, explicit), strict=True
            ):
                assert torch.equal(a, b), f"{case.name}: state differs at step {step}"


@pytest.mark.parametrize("method", stateless_taking("sigmoid"))
def test_select_reliable_from_sigmoid_logits(method):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 1, 7, 5, generator=gen) * 3
    logits_labeled = torch.randn(6, 1, generator=gen)
    ignore = torch.zeros(3, 7, 5, dtype=torch.uint8)
    ignore[:, :2] = 255
    options = labeled_inputs(method, logits_labeled.sigmoid())
    explicit_options = labeled_inputs(method, two_classes(logits_labeled.sigmoid()))
    result = pseudosel.select_reliable(
        logits, method, ignore_mask=ignore, from_logits=True, activation="sigmoid", **options
    )
    expected = pseudosel.select_reliable(
        two_classes(logits.sigmoid()), method, ignore_mask=ignore, **explicit_options
    )
    assert_identical(result, expected, method)
    assert result.weight.shape == (3, 7, 5)


def test_half_logits_are_activated_in_float32():
    logits = torch.randn(4, 1, 3, 3).to(torch.bfloat16)
    result = pseudosel.select_reliable(logits, "csl", from_logits=True, activation="sigmoid")
    expected = pseudosel.select_reliable(two_classes(logits.float().sigmoid()), "csl")
    assert_identical(result, expected, "bf16 logits")
    assert result.weight.dtype == torch.float32


def test_a_module_brings_its_own_activation():
    p = sigmoid_maps((16, 1), seed=1)
    selector = pseudosel.FreeMatchSelector(2, activation="sigmoid")
    sel = pseudosel.select_reliable(p, selector)  # the module's activation is used
    assert sel.labels.shape == (16,)
    with pytest.raises(ValueError, match="activation='softmax'.*built with activation='sigmoid'"):
        pseudosel.select_reliable(p, selector, activation="softmax")
    with pytest.raises(ValueError, match="build it with activation='sigmoid'"):
        pseudosel.select_reliable(p, pseudosel.ThresholdSelector(), activation="sigmoid")
    with pytest.raises(ValueError, match="has no activation setting.*class_probs"):
        pseudosel.select_reliable(p, torch.nn.Identity(), activation="sigmoid")
    assert "activation='sigmoid'" in repr(selector)


# ---------------------------------------------------------------- the layout rule


def test_one_channel_with_softmax_points_to_sigmoid():
    with pytest.raises(ValueError, match=r'size >= 2.*got shape \(8, 1\).*activation="sigmoid"'):
        pseudosel.select_reliable(torch.rand(8, 1))
    with pytest.raises(ValueError, match='activation="sigmoid"'):
        pseudosel.ThresholdSelector()(torch.rand(8, 1, 4, 4))
    with pytest.raises(ValueError, match='num_classes=2 with activation="sigmoid"'):
        pseudosel.FreeMatchSelector(1)


def test_layouts_with_sigmoid():
    # dim 1 of size 1: binary, positions (N, *spatial)
    assert pseudosel.select_reliable(torch.rand(8, 1), activation="sigmoid").mask.shape == (8,)
    dense = torch.rand(2, 1, 4, 5)
    assert pseudosel.select_reliable(dense, activation="sigmoid").mask.shape == (2, 4, 5)
    # dim 1 of size L > 1: L labels, positions (N, L, *spatial)
    assert pseudosel.select_reliable(torch.rand(8, 3), activation="sigmoid").mask.shape == (8, 3)
    dense = torch.rand(2, 3, 4, 5)
    assert pseudosel.select_reliable(dense, activation="sigmoid").mask.shape == (2, 3, 4, 5)
    assert F.class_probs(torch.rand(2, 3, 4, 5), "sigmoid").shape == (2, 2, 3, 4, 5)


def test_bad_sigmoid_inputs_name_the_argument():
    with pytest.raises(ValueError, match="activation must be one of 'softmax', 'sigmoid'"):
        pseudosel.select_reliable(torch.rand(4, 2), activation="tanh")
    with pytest.raises(ValueError, match="activation must be one of"):
        pseudosel.CSLSelector(activation="relu")
    with pytest.raises(ValueError, match=r"sigmoid probabilities .*in \[0, 1\].*from_logits"):
        pseudosel.select_reliable(torch.randn(6, 1) * 5, "threshold", activation="sigmoid")
    with pytest.raises(ValueError, match=r"\(sample, label\)"):
        pseudosel.select_reliable(
            torch.rand(4, 3), activation="sigmoid", valid=torch.ones(4, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match=r"valid must have shape \(4,\)"):
        pseudosel.select_reliable(
            torch.rand(4, 1), activation="sigmoid", valid=torch.ones(4, 1, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="probs_labeled must have the 3 classes"):
        F.adamatch(torch.rand(4, 3), torch.rand(5, 1), activation="sigmoid")
    with pytest.raises(TypeError, match="probs must be a floating-point"):
        pseudosel.select_reliable(torch.ones(4, 1, dtype=torch.long), activation="sigmoid")


def test_values_are_not_checked_at_ignored_positions():
    p = torch.rand(6, 3)
    valid = torch.ones(6, 3, dtype=torch.bool)
    p[0, 1], valid[0, 1] = float("nan"), False
    sel = pseudosel.select_reliable(p, "threshold", activation="sigmoid", valid=valid)
    assert sel.weight[0, 1] == 0 and not sel.mask[0, 1]
    assert torch.isfinite(sel.score).all()


# ---------------------------------------------------------------- multi-label


def test_multilabel_threshold_keeps_confident_positives_and_negatives():
    p = torch.tensor([[0.97, 0.02, 0.6], [0.5, 0.96, 0.04]])
    sel = pseudosel.select_reliable(p, "threshold", activation="sigmoid", tau=0.95)
    assert sel.labels.tolist() == [[1, 0, 1], [0, 1, 0]]  # 1 = positive; p = 0.5 ties to 0
    assert sel.mask.tolist() == [[True, True, False], [False, True, True]]
    torch.testing.assert_close(sel.score, torch.maximum(p, 1 - p))
    positives = sel.mask & (sel.labels == 1)  # positives only, if that is what a loss wants
    assert positives.tolist() == [[True, False, False], [False, True, False]]


def test_multilabel_csl_splits_each_label_on_its_own():
    p = sigmoid_maps((40, 4), seed=7, dtype=torch.float64)
    valid = torch.rand(40, 4, generator=torch.Generator().manual_seed(1)) < 0.8
    sel = F.csl(p, activation="sigmoid", valid=valid)
    assert sel.weight.shape == (40, 4) and torch.equal(sel.valid, valid)
    for label in range(4):
        alone = F.csl(p[:, label : label + 1], activation="sigmoid", valid=valid[:, label])
        assert torch.equal(alone.labels, sel.labels[:, label])
        assert torch.equal(alone.mask, sel.mask[:, label])
        torch.testing.assert_close(alone.weight, sel.weight[:, label], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alone.score, sel.score[:, label], rtol=1e-12, atol=1e-12)
    # "sample" and "batch" keep their meaning: a sample's labels together, or everything
    per_sample = F.csl(p, activation="sigmoid", scope="sample")
    stacked = F.class_probs(p, "sigmoid")  # (40, 2, 4): a dense two-class input
    assert_identical(per_sample, F.csl(stacked, scope="sample"), "scope=sample")
    batch_wide = F.csl(p, activation="sigmoid", scope="batch")
    assert_identical(batch_wide, F.csl(stacked, scope="batch"), "scope=batch")


def test_multilabel_csl_module_and_dense_layout():
    p = sigmoid_maps((2, 3, 6, 5), seed=2, dtype=torch.float64)
    sel = pseudosel.CSLSelector(activation="sigmoid")(p)
    assert sel.weight.shape == (2, 3, 6, 5)
    for label in range(3):  # per label: that label's pixels over the whole batch, one group
        alone = F.csl(p[:, label : label + 1], activation="sigmoid", scope="batch")
        assert torch.equal(alone.mask, sel.mask[:, label])
        torch.testing.assert_close(alone.weight, sel.weight[:, label], rtol=1e-12, atol=1e-12)


def test_multilabel_adamatch_uses_one_pooled_cutoff():
    p = torch.tensor([[0.9, 0.15], [0.7, 0.2]])
    labeled = torch.tensor([[0.8, 0.1], [0.4, 0.3]])  # max(p, 1-p): 0.8 0.9 0.6 0.7
    sel = F.adamatch(p, labeled, tau=1.0, activation="sigmoid")  # cutoff: their mean 0.75
    assert sel.mask.tolist() == [[True, True], [False, True]]
    assert sel.labels.tolist() == [[1, 0], [1, 0]]


def test_multilabel_entropy_split_and_dash():
    p = sigmoid_maps((30, 3), seed=4)
    sel = F.entropy_split(p, 0.3, activation="sigmoid")
    assert sel.mask.shape == (30, 3)
    assert abs(float(sel.ratio()) - 0.7) < 0.05
    dash = pseudosel.DashSelector(0.5, update_every=1, activation="sigmoid")
    sel = dash(p)
    assert sel.mask.shape == (30, 3)
    expected = pseudosel.DashSelector(0.5, update_every=1)(F.class_probs(p, "sigmoid"))
    assert_identical(sel, expected, "dash")
    module = pseudosel.EntropySplitSelector(10, activation="sigmoid")
    assert module(p).mask.shape == (30, 3)


STATE_PER_CLASS = [
    lambda: pseudosel.FlexMatchSelector(2, activation="sigmoid"),
    lambda: pseudosel.FreeMatchSelector(2, activation="sigmoid"),
    lambda: pseudosel.SoftMatchSelector(2, activation="sigmoid"),
    lambda: pseudosel.CorrMatchSelector(2, activation="sigmoid"),
    lambda: pseudosel.AdshSelector(2, 64, activation="sigmoid"),
    lambda: pseudosel.DistributionAlignment(2, activation="sigmoid"),
    lambda: pseudosel.DistributionAlignmentQueue(2, activation="sigmoid"),
]


@pytest.mark.parametrize("make", STATE_PER_CLASS)
def test_selectors_with_per_class_state_refuse_multilabel_by_name(make):
    selector = make()
    name = type(selector).__name__
    with pytest.raises(ValueError, match=f"{name} does not support multi-label input"):
        selector(torch.rand(8, 3))
    selector(torch.rand(8, 1))  # binary is fine
    extra = {"num_unlabeled": 8} if name == "AdshSelector" else {}
    with pytest.raises(ValueError, match=f"{name} needs num_classes=2, got num_classes=3"):
        type(selector)(3, activation="sigmoid", **extra)


@pytest.mark.parametrize(
    "call",
    [
        lambda p, v: F.freematch_update(p, F.freematch_init(2), valid=v, activation="sigmoid"),
        lambda p, v: F.freematch_select(p, F.freematch_init(2), valid=v, activation="sigmoid"),
        lambda p, v: F.softmatch_update(p, F.softmatch_init(2), valid=v, activation="sigmoid"),
        lambda p, v: F.corrmatch_select(p, F.corrmatch_init(), valid=v, activation="sigmoid"),
        lambda p, v: F.adsh_select(p, F.adsh_init(2), valid=v, activation="sigmoid"),
        lambda p, v: F.align_queue(p, F.alignment_queue_init(2), activation="sigmoid"),
    ],
)
def test_functional_cores_with_per_class_state_refuse_multilabel(call):
    p = torch.rand(8, 3)
    with pytest.raises(ValueError, match="does not support multi-label input"):
        call(p, torch.ones(8, 3, dtype=torch.bool))


def test_multilabel_steps_never_read_the_device_from_the_host():
    p = sigmoid_maps((2, 3, 6, 6), seed=5)
    ignore = torch.zeros(2, 3, 6, 6, dtype=torch.uint8)
    ignore[:, :, :2] = 255
    dash = pseudosel.DashSelector(0.5, update_every=2, activation="sigmoid", validate=False)
    labeled = sigmoid_maps((4, 3), seed=6)
    with forbid_host_sync():
        for name in stateless_taking("multilabel"):
            pseudosel.select_reliable(
                p, name, ignore_mask=ignore, activation="sigmoid", validate=False,
                weighting="hard", **labeled_inputs(name, labeled),
            )  # fmt: skip
        pseudosel.select_reliable(
            p.logit(), "csl", from_logits=True, activation="sigmoid", validate=False
        )
        dash(p)


@pytest.mark.parametrize("case", [c for c in CASES if not c.convex], ids=lambda c: c.name)
def test_binary_steps_never_read_the_device_from_the_host(case):
    module, step = case.build(2, validate=False, activation="sigmoid", weighting="hard")
    inputs = [batch(case, i, dense=case.dense) for i in range(3)]
    with forbid_host_sync():
        for p, valid in inputs:
            step(p, valid)


# ---------------------------------------------------------------- soft and hard


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hard_weighting_turns_every_selector_into_its_mask(case, device):
    _, soft = case.build(5, device=device)
    _, hard = case.build(5, weighting="hard", device=device)
    _, explicit_soft = case.build(5, weighting="soft", device=device)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2 if case.convex else 3):
        shape = (2, 5, 6, 5) if case.dense else (16, 5)
        probs = (torch.randn(shape, generator=gen) * 2).softmax(1).to(device)
        valid = (torch.rand(shape[0], *shape[2:], generator=gen) < 0.8).to(device)
        a, b, c = soft(probs, valid), hard(probs, valid), explicit_soft(probs, valid)
        assert_identical(c, a, f"{case.name}: weighting='soft' is the default")
        if not isinstance(a, tuple):  # alignment: probabilities, nothing to weigh
            assert_identical(b, a, case.name)
            continue
        assert torch.equal(b.weight, b.mask.to(b.weight.dtype)), case.name
        assert b.weight.dtype == a.weight.dtype
        for name in ("labels", "mask", "score", "valid"):
            assert torch.equal(getattr(b, name), getattr(a, name)), f"{case.name}: {name}"


def test_selection_hard_and_select_reliable_weighting():
    probs = (torch.randn(2, 4, 8, 8) * 3).softmax(1)
    soft = pseudosel.select_reliable(probs, "csl")
    hard = pseudosel.select_reliable(probs, "csl", weighting="hard")
    assert ((soft.weight > 0) & (soft.weight < 1)).any()  # CSL is soft
    assert torch.equal(hard.weight, soft.mask.float())
    assert_identical(hard, soft.hard(), "select_reliable(weighting='hard')")
    already_hard = pseudosel.select_reliable(probs, "threshold")
    assert_identical(already_hard.hard(), already_hard, "threshold is hard already")
    module = pseudosel.CSLSelector(weighting="hard")
    assert_identical(module(probs), hard, "CSLSelector(weighting='hard')")
    assert_identical(pseudosel.select_reliable(probs, module), hard, "module's own weighting")
    assert_identical(
        pseudosel.select_reliable(probs, pseudosel.CSLSelector(), weighting="hard"), hard, "hard"
    )
    with pytest.raises(ValueError, match="built with weighting='hard'"):
        pseudosel.select_reliable(probs, module, weighting="soft")
    with pytest.raises(ValueError, match="weighting must be one of 'soft', 'hard', got 'binary'"):
        pseudosel.select_reliable(probs, weighting="binary")
    with pytest.raises(ValueError, match="weighting must be one of"):
        pseudosel.SoftMatchSelector(4, weighting=True)
    assert "weighting='hard'" in repr(module)


# ---------------------------------------------------------------- properties


@st.composite
def sigmoid_inputs(draw):
    n = draw(st.integers(0, 4))
    channels = draw(st.sampled_from([1, 1, 2, 5]))
    spatial = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=2)))
    dtype = draw(st.sampled_from(DTYPES))
    sharpness = draw(st.sampled_from([0.0, 0.5, 3.0, 40.0]))
    keep = draw(st.sampled_from([0.0, 0.3, 1.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = (n, channels, *spatial)
    p = (torch.randn(shape, generator=gen, dtype=torch.float64) * sharpness).sigmoid().to(dtype)
    positions = shape if channels > 1 else (n, *spatial)
    valid = torch.rand(positions, generator=gen) < keep
    return p, valid


# selectors whose documented soft weight on a kept position is its confidence, not 1
# (Dense Teacher's top_ratio: "weight their confidence (0 elsewhere)"); checked as that
KEPT_WEIGHT_IS_CONFIDENCE = {"top_ratio"}


@settings(max_examples=200, deadline=None)
@given(
    sigmoid_inputs(),
    st.sampled_from(stateless_taking("multilabel")),
    st.sampled_from(["soft", "hard"]),
)
def test_sigmoid_selections_have_the_documented_shapes_and_ranges(inputs, method, weighting):
    p, valid = inputs
    multilabel = p.shape[1] > 1  # said, so that a 3-D (N, L, X) input is not ambiguous
    labeled = labeled_inputs(method, sigmoid_maps((3, p.shape[1]), seed=1, dtype=p.dtype))
    sel = pseudosel.select_reliable(
        p, method, valid=valid, activation="sigmoid", weighting=weighting,
        multilabel=multilabel, **labeled,
    )  # fmt: skip
    positions = tuple(valid.shape)
    expected_dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
    for field in sel:
        assert tuple(field.shape) == positions
    assert sel.labels.dtype == torch.long and ((sel.labels == 0) | (sel.labels == 1)).all()
    assert sel.weight.dtype == sel.score.dtype == expected_dtype
    assert torch.isfinite(sel.weight).all() and torch.isfinite(sel.score).all()
    assert ((sel.weight >= 0) & (sel.weight <= 1)).all()
    assert torch.equal(sel.valid, valid)
    assert not sel.mask[~valid].any() and (sel.weight[~valid] == 0).all()
    if method in KEPT_WEIGHT_IS_CONFIDENCE and weighting == "soft":
        assert torch.equal(sel.weight, torch.where(sel.mask, sel.score, 0.0))
    else:
        assert (sel.weight[sel.mask] == 1).all()
    if weighting == "hard":
        assert torch.equal(sel.weight, sel.mask.to(sel.weight.dtype))
    # labels: 1 exactly where the positive class has the larger probability
    two = F.class_probs(p, "sigmoid", multilabel=multilabel)
    assert torch.equal(sel.labels, (two[:, 1] > two[:, 0]).long())


# ---------------------------------------------------------------- the binary loss


def reference_bce(logits, labels, weight, valid, mask, normalize: str) -> float:
    """Per-position float64 loop: −[y·log σ(z) + (1 − y)·log(1 − σ(z))]."""
    total, count = 0.0, 0.0
    flat = zip(
        logits.double().flatten().tolist(),
        labels.flatten().tolist(),
        weight.double().flatten().tolist(),
        valid.flatten().tolist(),
        mask.flatten().tolist(),
        strict=True,
    )
    for z, y, w, v, m in flat:
        if not v:
            continue
        log_p = -math.log1p(math.exp(-z)) if z > 0 else z - math.log1p(math.exp(z))
        log_q = -z - math.log1p(math.exp(-z)) if z > 0 else -math.log1p(math.exp(z))
        total += w * -(y * log_p + (1 - y) * log_q)
        count += {"valid": 1.0, "selected": float(m), "weight": w, "batch": 0.0}[normalize]
    if normalize == "batch":
        count = float(labels.numel())
    return total / count if count > 0 else 0.0


@pytest.mark.parametrize("normalize", ["valid", "selected", "weight", "batch"])
@pytest.mark.parametrize("shape", [(6, 1), (2, 1, 4, 3), (5, 3), (2, 3, 4, 2)], ids=str)
def test_weighted_binary_cross_entropy_matches_a_float64_reference(shape, normalize):
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * 4
    probs = torch.randn(shape, generator=gen).sigmoid()
    positions = shape if shape[1] > 1 else (shape[0], *shape[2:])
    valid = torch.rand(positions, generator=gen) < 0.7
    sel = pseudosel.select_reliable(probs, "csl", activation="sigmoid", valid=valid)
    scores = logits if shape[1] > 1 else logits.squeeze(1)
    loss = pseudosel.weighted_binary_cross_entropy(logits, sel, normalize=normalize)
    expected = reference_bce(scores, sel.labels, sel.weight, valid, sel.mask, normalize)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    assert abs(float(loss) - expected) <= 1e-12 * max(1.0, abs(expected))
    loss32 = pseudosel.weighted_binary_cross_entropy(logits.float(), sel, normalize=normalize)
    assert loss32.dtype == torch.float32
    assert abs(float(loss32) - expected) <= 1e-5 * max(1.0, abs(expected))


def test_weighted_binary_cross_entropy_gradients():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    sel = pseudosel.select_reliable(logits.detach(), "csl", from_logits=True, activation="sigmoid")
    for normalize in ("valid", "selected", "weight", "batch"):
        assert torch.autograd.gradcheck(
            lambda z, n=normalize: pseudosel.weighted_binary_cross_entropy(z, sel, normalize=n),
            (logits,),
        )
    multi = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    sel = pseudosel.select_reliable(
        multi.detach(), "threshold", from_logits=True, activation="sigmoid", tau=0.6
    )
    assert torch.autograd.gradcheck(
        lambda z: pseudosel.weighted_binary_cross_entropy(z, sel), (multi,)
    )


def test_weighted_binary_cross_entropy_edge_cases():
    logits = torch.randn(4, 1)
    logits[0] = float("nan")
    valid = torch.tensor([False, True, True, True])
    probs = logits.sigmoid().nan_to_num(0.5)
    sel = pseudosel.select_reliable(probs, "threshold", activation="sigmoid", valid=valid, tau=0)
    assert torch.isfinite(pseudosel.weighted_binary_cross_entropy(logits, sel))  # ignored NaN
    nothing = sel._replace(valid=torch.zeros(4, dtype=torch.bool), mask=torch.zeros(4).bool())
    assert float(pseudosel.weighted_binary_cross_entropy(logits, nothing)) == 0.0
    with pytest.raises(ValueError, match=r"must be \(N, 1, \*spatial\).*got selection fields"):
        pseudosel.weighted_binary_cross_entropy(torch.randn(4, 2), sel)
    with pytest.raises(TypeError, match="logits must be a floating-point"):
        pseudosel.weighted_binary_cross_entropy(torch.ones(4, 1, dtype=torch.long), sel)
    with pytest.raises(ValueError, match="normalize must be one of"):
        pseudosel.weighted_binary_cross_entropy(logits, sel, normalize="mean")
    with pytest.raises(TypeError, match="selection must be a pseudosel.Selection"):
        pseudosel.weighted_binary_cross_entropy(logits, tuple(sel))


# ---------------------------------------------------------------- torch.compile


COMPILED = [
    lambda: pseudosel.ThresholdSelector(0.7, activation="sigmoid"),
    lambda: pseudosel.CSLSelector(activation="sigmoid", weighting="hard"),
    lambda: pseudosel.FreeMatchSelector(2, momentum=0.9, activation="sigmoid", weighting="hard"),
    lambda: pseudosel.SoftMatchSelector(2, momentum=0.9, activation="sigmoid", weighting="hard"),
    lambda: pseudosel.DashSelector(0.5, update_every=2, activation="sigmoid"),
]


# modules with per-class state refuse multi-label input: compiled on binary input only
COMPILED_LAYOUTS = [
    (make, channels)
    for make in COMPILED
    for channels in (1, 3)
    if channels == 1 or not hasattr(make(), "num_classes")
]


@pytest.mark.slow
@pytest.mark.parametrize("make,channels", COMPILED_LAYOUTS)
def test_compiled_sigmoid_modules_equal_eager(make, channels):
    eager = make()
    torch._dynamo.reset()
    compiled_module = make()
    compiled = torch.compile(compiled_module, fullgraph=True)
    for step in range(3):
        p = sigmoid_maps((2, channels, 6, 5), seed=step)
        positions = (2, 6, 5) if channels == 1 else (2, channels, 6, 5)
        valid = torch.rand(positions, generator=torch.Generator().manual_seed(step)) < 0.8
        expected, result = eager(p, valid), compiled(p, valid)
        for a, b in zip(result, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(compiled_module.buffers(), eager.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
