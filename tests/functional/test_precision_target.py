"""Precision-targeted selection: the torch incomplete beta and Clopper–Pearson bound against
scipy, the calibration against a literal float64 reference
(tests/helpers/precision_reference.py), the ring buffer, the module's contract, and a
simulation where the truth is known."""

from __future__ import annotations

import copy
import io
import math
from collections import deque

import numpy as np
import pytest
import torch
from helpers.host_sync_guard import forbid_host_sync
from helpers.precision_reference import NOTHING, RefPrecisionTarget
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

import pseudosel
import pseudosel.functional as F

# ---------------------------------------------------------------- incomplete beta, bounds


@pytest.mark.parametrize("size", [2, 10, 100, 1_000, 5_000])
def test_betainc_matches_scipy_on_a_grid(size):
    sizes = [1.0, 2.0, 3.5, size / 2, size - 1.0]
    a, b = np.meshgrid(sizes, sizes, indexing="ij")
    a, b = a.ravel(), b.ravel()
    a, b = a[a + b <= size + 1], b[a + b <= size + 1]
    means = a / (a + b)
    spread = np.sqrt(a * b / (a + b) ** 2 / (a + b + 1))
    x = np.concatenate(
        [
            np.array([0.0, 1e-300, 1e-12, 0.01, 0.3, 0.5, 0.95, 0.999, 1 - 1e-12, 1.0])[:, None]
            * np.ones_like(a),
            np.clip(means + np.array([-3, -1, 0, 1, 3])[:, None] * spread, 0, 1),  # the hard part
        ]
    )
    a, b = np.broadcast_to(a, x.shape), np.broadcast_to(b, x.shape)
    got = F.betainc(
        torch.from_numpy(a.copy()),
        torch.from_numpy(b.copy()),
        torch.from_numpy(x.copy()),
        iterations=F.betainc_iterations(size + 1),
    )
    assert got.dtype == torch.float64
    tolerance = 1e-13 + 4e-16 * size * math.log(size)  # the prefactor's lgamma differences
    np.testing.assert_allclose(got.numpy(), special.betainc(a, b, x), rtol=0, atol=tolerance)


@pytest.mark.parametrize("size", [65_537, 1_048_577])
def test_betainc_converges_for_large_windows(size):
    rng = np.random.default_rng(size)
    n = np.concatenate([[size - 1], rng.integers(1, size, 400)])
    k = rng.integers(1, n + 1)
    a, b = k.astype(float), (n - k + 1).astype(float)
    x = np.clip(a / (a + b) + rng.normal(0, 1, a.shape) * np.sqrt(a * b) / (a + b) ** 1.5, 0, 1)
    got = F.betainc(
        torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(x),
        iterations=F.betainc_iterations(size),
    )  # fmt: skip
    # lgamma differences of numbers ~1e6 keep about 9 digits of the prefactor
    np.testing.assert_allclose(got.numpy(), special.betainc(a, b, x), rtol=0, atol=1e-8)


@pytest.mark.parametrize("n", [1, 2, 7, 59, 300, 4096])
@pytest.mark.parametrize("p", [0.0, 0.05, 0.5, 0.95, 0.999, 1.0])
def test_binomial_tail_matches_scipy(n, p):
    k = torch.arange(-1, n + 2, dtype=torch.float64)  # k <= 0 gives 1, k > n gives 0
    got = F.binomial_tail(k, float(n), p, iterations=F.betainc_iterations(n + 1))
    expected = stats.binom.sf(k.numpy() - 1, n, p)
    tolerance = 1e-13 + 4e-16 * n * math.log(n + 1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("delta", [1e-6, 0.01, 0.05, 0.1, 0.5])
@pytest.mark.parametrize("n", [1, 2, 5, 59, 100, 1000, 4096])
def test_clopper_pearson_lower_matches_the_scipy_beta_quantile(n, delta):
    k = torch.arange(0, n + 1, dtype=torch.float64)
    if n > 200:  # a spread of k, with the edges
        k = torch.unique(torch.cat((k[:5], k[-5:], torch.linspace(0, n, 60).round())))
    got = F.clopper_pearson_lower(k, float(n), delta, iterations=F.betainc_iterations(n + 1))
    kk = k.numpy()
    expected = np.where(kk == 0, 0.0, stats.beta.ppf(delta, np.maximum(kk, 1), n - kk + 1))
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)
    assert got[0] == 0.0  # k = 0: no lower bound above 0
    assert got[-1] == pytest.approx(delta ** (1 / n), abs=1e-12)  # k = n: δ^(1/n)


def test_the_bound_and_the_tail_make_the_same_decision():
    """L(k, n) >= p₀ ⇔ P(Bin(n, p₀) >= k) <= δ: calibrate tests the tail, not the quantile."""
    n = torch.arange(1, 400, 2, dtype=torch.float64).repeat_interleave(7)
    k = (n * torch.tensor([0.8, 0.9, 0.93, 0.95, 0.97, 0.99, 1.0]).repeat(200)).round()
    iterations = F.betainc_iterations(400)
    bound = F.clopper_pearson_lower(k, n, 0.05, iterations=iterations)
    tail = F.binomial_tail(k, n, 0.95, iterations=iterations)
    far = (bound - 0.95).abs() > 1e-9  # away from exact equality
    assert torch.equal((bound >= 0.95)[far], (tail <= 0.05)[far])


@settings(max_examples=40)
@given(
    a=st.floats(0.5, 3000),
    b=st.floats(0.5, 3000),
    x=st.floats(0, 1),
)
def test_betainc_properties(a, b, x):
    value = F.betainc(a, b, x)
    assert 0 <= float(value) <= 1
    assert float(value) == pytest.approx(special.betainc(a, b, x), abs=1e-11)
    # the mirrored form (1 − x rounds, so compare it with scipy's mirrored form)
    mirrored = 1 - F.betainc(b, a, 1 - x)
    assert float(mirrored) == pytest.approx(1 - special.betainc(b, a, 1 - x), abs=1e-11)
    assert float(F.betainc(a, b, min(1.0, x + 0.01))) >= float(value) - 1e-12  # monotone


def test_bad_arguments_of_the_statistics_name_them():
    with pytest.raises(ValueError, match="iterations"):
        F.betainc(1.0, 1.0, 0.5, iterations=0)
    with pytest.raises(ValueError, match="delta"):
        F.clopper_pearson_lower(1.0, 2.0, 1.5)
    with pytest.raises(TypeError, match="successes"):
        F.binomial_tail("3", 4.0, 0.5)
    with pytest.raises(ValueError, match="max_size"):
        F.betainc_iterations(-1)


# ---------------------------------------------------------------- calibration vs reference


def _window(draw_conf, k, size, seed, correctness):
    """size held-out rows (probability vectors, labels) with confidences from draw_conf."""
    gen = torch.Generator().manual_seed(seed)
    conf = draw_conf(size, gen)
    predicted = torch.randint(0, k, (size,), generator=gen)
    rest = ((1 - conf) / (k - 1)).unsqueeze(1).expand(size, k)
    probs = torch.where(
        torch.arange(k) == predicted.unsqueeze(1), conf.unsqueeze(1), rest
    ).contiguous()
    right = {
        "all": torch.ones(size, dtype=torch.bool),
        "none": torch.zeros(size, dtype=torch.bool),
        "calibrated": torch.rand(size, generator=gen, dtype=torch.float64) < conf,
    }[correctness]
    labels = torch.where(right, predicted, (predicted + 1) % k)
    valid = torch.rand(size, generator=gen) < 0.85
    return probs, labels, valid


def _ties(size, gen):  # few distinct values, some equal to grid points
    values = torch.tensor([0.55, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0], dtype=torch.float64)
    return values[torch.randint(0, len(values), (size,), generator=gen)]


def _smooth(size, gen):
    return 0.5 + 0.5 * torch.rand(size, generator=gen, dtype=torch.float64) ** 0.4


def _sharp(size, gen):  # most predictions confident, as after some training
    return 1 - 0.5 * torch.rand(size, generator=gen, dtype=torch.float64) ** 3


def _rows(probs, labels, valid):
    return [(p.tolist(), int(y), bool(v)) for p, y, v in zip(probs, labels, valid, strict=True)]


@settings(max_examples=40)
@given(
    k=st.sampled_from([2, 3, 5]),
    window=st.sampled_from([1, 2, 7, 64, 300]),
    sizes=st.lists(st.integers(0, 150), min_size=1, max_size=4),
    conf=st.sampled_from(["ties", "smooth", "sharp"]),
    correctness=st.sampled_from(["all", "none", "calibrated"]),
    epsilon=st.sampled_from([0.05, 0.2, 0.37]),
    delta=st.sampled_from([0.05, 0.2, 0.33]),
    min_count=st.sampled_from([0, 5, 100]),
    per_class=st.booleans(),
    grid=st.sampled_from([40, "values"]),
    seed=st.integers(0, 10_000),
)
def test_thresholds_equal_the_reference_on_random_windows(
    device, k, window, sizes, conf, correctness, epsilon, delta, min_count, per_class, grid, seed
):
    candidates = [0.99, 0.95, 0.9, 0.85, 0.8, 0.7, 0.55, 0.5] if grid == "values" else grid
    module = pseudosel.PrecisionTargetSelector(
        k, epsilon=epsilon, delta=delta, window=window, candidates=candidates,
        per_class=per_class, min_count=min_count,
    ).to(device, torch.float64)  # fmt: skip
    grid_values = module.candidates.tolist()
    ref = RefPrecisionTarget(
        k, window=window, candidates=grid_values, epsilon=epsilon, delta=delta,
        min_count=min_count, per_class=per_class,
    )  # fmt: skip
    draw = {"ties": _ties, "smooth": _smooth, "sharp": _sharp}[conf]
    for step, size in enumerate(sizes):
        probs, labels, valid = _window(draw, k, size, seed + step, correctness)
        module.update_heldout(probs.to(device), labels.to(device), valid.to(device))
        ref.observe(_rows(probs, labels, valid))
        module.calibrate()
        ref.calibrate()
        assert module.thresh.tolist() == ref.thresh, f"step {step}"
    assert int(module.filled) == len(ref.pairs)


@pytest.mark.parametrize("per_class", [False, True])
def test_default_grid_and_window_against_the_reference(per_class, device):
    module = pseudosel.PrecisionTargetSelector(4, window=700, per_class=per_class, min_count=20)
    module.to(device, torch.float64)
    ref = RefPrecisionTarget(
        4, window=700, candidates=module.candidates.tolist(), epsilon=0.05, delta=0.05,
        min_count=20, per_class=per_class,
    )  # fmt: skip
    for step in range(3):
        probs, labels, valid = _window(_sharp, 4, 400, step, "calibrated")
        module.update_heldout(probs.to(device), labels.to(device), valid.to(device))
        ref.observe(_rows(probs, labels, valid))
    module.calibrate()
    ref.calibrate()
    assert module.thresh.tolist() == ref.thresh
    assert any(t < 1 for t in ref.thresh), "the case certifies something"


def test_float32_module_compares_in_its_own_dtype():
    """float32 buffers: the reference fed the float32-rounded confidences agrees."""
    module = pseudosel.PrecisionTargetSelector(3, window=500, candidates=200, min_count=10)
    probs, labels, valid = _window(_ties, 3, 500, 7, "calibrated")
    module.update_heldout(probs.float(), labels, valid)
    module.calibrate()
    ref = RefPrecisionTarget(
        3, window=500, candidates=torch.tensor(module.candidates.tolist()).float().tolist(),
        epsilon=0.05, delta=0.05, min_count=10, per_class=False,
    )  # fmt: skip
    ref.observe(_rows(probs.float().double(), labels, valid))
    ref.calibrate()
    assert module.thresh.tolist() == torch.tensor(ref.thresh).float().tolist()


# ---------------------------------------------------------------- the ring buffer


@settings(max_examples=60)
@given(
    window=st.integers(1, 40),
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=6),
    seed=st.integers(0, 1000),
)
def test_the_window_keeps_the_last_valid_pairs_in_order(window, sizes, seed):
    """Any split of the same stream into batches gives the same window, the last W valid
    pairs of the stream, written round the ring from slot 0."""
    module = pseudosel.PrecisionTargetSelector(3, window=window).double()
    whole = pseudosel.PrecisionTargetSelector(3, window=window).double()
    stream: deque = deque(maxlen=window)
    parts = [_window(_smooth, 3, size, seed + i, "calibrated") for i, size in enumerate(sizes)]
    for probs, labels, valid in parts:
        module.update_heldout(probs, labels, valid)
        for p, y, v in zip(probs, labels, valid, strict=True):
            if v:
                stream.append((float(p.max()), int(p.argmax()) == int(y), int(p.argmax())))
    whole.update_heldout(*(torch.cat(field) for field in zip(*parts, strict=True)))
    total = sum(int(valid.sum()) for _, _, valid in parts)
    assert int(module.filled) == min(total, window) and int(module.ptr) == total % window
    order = [(int(module.ptr) - len(stream) + i) % window for i in range(len(stream))]
    assert [
        (float(module.confidence[i]), bool(module.correct[i]), int(module.predicted[i]))
        for i in order
    ] == list(stream)
    for a, b in zip(module.state_dict().values(), whole.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_dense_heldout_with_ignored_pixels():
    module = pseudosel.PrecisionTargetSelector(4, window=64).double()
    probs = torch.randn(2, 4, 3, 5, dtype=torch.float64).mul(3).softmax(1)
    labels = probs.argmax(1)
    valid = torch.ones(2, 3, 5, dtype=torch.bool)
    valid[0, 0] = False
    module.update_heldout(probs, labels, valid)
    assert int(module.filled) == 25
    expected = probs.amax(1)[valid]  # flattened position order
    assert torch.equal(module.confidence[:25], expected)
    assert module.correct[:25].all()


# ---------------------------------------------------------------- the module's contract


def test_before_any_heldout_data_the_fallback_applies():
    probs = torch.tensor([[0.97, 0.03], [0.6, 0.4]])
    nothing = pseudosel.PrecisionTargetSelector(2)
    assert not nothing(probs).mask.any()  # default: select nothing
    nothing.calibrate()  # an empty window certifies nothing and changes nothing
    assert nothing.thresh.tolist() == [2.0, 2.0]
    fixmatch = pseudosel.PrecisionTargetSelector(2, fallback_tau=0.95)
    fixmatch.calibrate()
    assert fixmatch(probs).mask.tolist() == [True, False]


def test_no_certified_candidate_selects_nothing_and_reset_restores_the_fallback():
    module = pseudosel.PrecisionTargetSelector(3, window=200, fallback_tau=0.9)
    probs, labels, valid = _window(_smooth, 3, 200, 0, "none")  # every prediction wrong
    module.update_heldout(probs, labels, valid)
    module.calibrate()
    assert module.thresh.tolist() == [NOTHING] * 3
    sel = module(probs)
    assert not sel.mask.any() and (sel.weight == 0).all()
    module.reset_running_stats()
    assert int(module.filled) == 0 and int(module.ptr) == 0 and not module.correct.any()
    assert torch.allclose(module.thresh, torch.full((3,), 0.9))


def test_selection_fields():
    module = pseudosel.PrecisionTargetSelector(3, per_class=True, fallback_tau=0.5)
    module.thresh.copy_(torch.tensor([0.6, 0.9, 0.3]))
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.7, 0.2, 0.1]])
    valid = torch.tensor([True, True, True, False])
    sel = module(probs, valid)
    assert sel.mask.tolist() == [True, False, True, False]
    assert torch.equal(sel.weight, sel.mask.float())
    assert torch.allclose(sel.score, torch.tensor([0.7, 0.8, 0.4, 0.0]))
    assert sel.labels.tolist() == [0, 1, 2, 0]


def test_module_equals_functional():
    module = pseudosel.PrecisionTargetSelector(
        5, window=300, candidates=100, per_class=True, min_count=10
    )
    state = F.precision_target_init(5, window=300)
    grid = F.precision_candidates(100)
    for step in range(4):
        probs, labels, valid = _window(_smooth, 5, 120, step, "calibrated")
        probs = probs.float()
        module.update_heldout(probs, labels, valid)
        module.calibrate()
        state = F.precision_target_update(probs, labels, state, valid=valid)
        state = F.precision_target_calibrate(state, grid, per_class=True, min_count=10)
        for a, b in zip(module.state(), state, strict=True):
            assert torch.equal(a, b)
        test = probs[:50]
        for a, b in zip(
            module(test), F.precision_target_select(test, state, valid=torch.ones(50, dtype=bool)),
            strict=True,
        ):  # fmt: skip
            assert torch.equal(a, b)


def test_state_dict_resume_gives_identical_thresholds_and_selections():
    def make():
        return pseudosel.PrecisionTargetSelector(4, window=150, candidates=200, min_count=20)

    batches = [_window(_smooth, 4, 80, t, "calibrated") for t in range(8)]
    straight, first = make(), make()
    expected = []
    for t, (probs, labels, valid) in enumerate(batches):
        straight.update_heldout(probs.float(), labels, valid)
        straight.calibrate()
        expected.append(tuple(straight(probs.float())))
        if t < 4:
            first.update_heldout(probs.float(), labels, valid)
            first.calibrate()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert "candidates" not in resumed.state_dict()  # configuration, rebuilt by __init__
    for t, (probs, labels, valid) in list(enumerate(batches))[4:]:
        resumed.update_heldout(probs.float(), labels, valid)
        resumed.calibrate()
        for a, b in zip(resumed(probs.float()), expected[t], strict=True):
            assert torch.equal(a, b)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_observe_calibrate_and_forward_never_read_the_device():
    module = pseudosel.PrecisionTargetSelector(5, window=256, per_class=True, validate=False)
    batches = [_window(_smooth, 5, 100, t, "calibrated") for t in range(3)]
    batches.append((torch.empty(0, 5, dtype=torch.float64), torch.empty(0, dtype=torch.long),
                    torch.empty(0, dtype=torch.bool)))  # fmt: skip
    with forbid_host_sync():
        for probs, labels, valid in batches:
            module.update_heldout(probs.float(), labels, valid)
            module.calibrate()
            module(probs.float(), valid)


def test_grad_requiring_inputs_build_no_graph_and_deepcopy_works():
    module = pseudosel.PrecisionTargetSelector(3, window=64, min_count=0)
    logits = torch.randn(40, 3, requires_grad=True)
    labels = torch.randint(0, 3, (40,))
    module.update_heldout(logits.softmax(1), labels)
    module.calibrate()
    sel = module(logits.softmax(1))
    assert not any(t.requires_grad for t in sel)
    assert not any(b.requires_grad for b in module.buffers())
    copy.deepcopy(module)


def test_select_reliable_takes_the_module_and_points_to_it_by_name():
    probs = torch.tensor([[0.97, 0.03], [0.6, 0.4]])
    module = pseudosel.PrecisionTargetSelector(2, fallback_tau=0.95)
    assert pseudosel.select_reliable(probs, module).mask.tolist() == [True, False]
    with pytest.raises(ValueError, match="PrecisionTargetSelector"):
        pseudosel.select_reliable(probs, "precision_target")


def test_extra_repr_and_eval_mode():
    module = pseudosel.PrecisionTargetSelector(3, epsilon=0.1, per_class=True).eval()
    text = repr(module)
    assert "epsilon=0.1" in text and "per_class=True" in text and "window=4096" in text
    probs = torch.tensor([[0.9, 0.05, 0.05]])
    module.update_heldout(probs, torch.tensor([0]))  # eval mode: observing still works
    assert int(module.filled) == 1


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epsilon": 0.0}, ValueError, "epsilon"),
        ({"epsilon": 1.0}, ValueError, "epsilon"),
        ({"delta": 1.5}, ValueError, "delta"),
        ({"window": 0}, ValueError, "window"),
        ({"window": 2.5}, TypeError, "window"),
        ({"candidates": 0}, ValueError, "candidates"),
        ({"candidates": [0.9, 0.9]}, ValueError, "distinct"),
        ({"candidates": [1.2]}, ValueError, r"\[0, 1\]"),
        ({"candidates": "0.9"}, TypeError, "candidates"),
        ({"candidates": torch.ones(2, 2) / 2}, ValueError, "1-D"),
        ({"min_count": -1}, ValueError, "min_count"),
        ({"fallback_tau": 1.5}, ValueError, "fallback_tau"),
    ],
)
def test_bad_constructor_arguments_name_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        pseudosel.PrecisionTargetSelector(3, **kwargs)


def test_bad_heldout_inputs_name_the_argument():
    module = pseudosel.PrecisionTargetSelector(3)
    probs = torch.full((4, 3), 1 / 3)
    with pytest.raises(TypeError, match="labels_heldout.*integer.*float32"):
        module.update_heldout(probs, torch.zeros(4))
    with pytest.raises(ValueError, match=r"labels_heldout must have shape \(4,\).*\(5,\)"):
        module.update_heldout(probs, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels_heldout must hold classes in \[0, 3\)"):
        module.update_heldout(probs, torch.tensor([0, 1, 2, 3]))
    # an out-of-range label at an ignored position is not read
    module.update_heldout(probs, torch.tensor([0, 1, 2, 255]), torch.tensor([1, 1, 1, 0]).bool())
    with pytest.raises(ValueError, match="classes at dim 1"):
        module.update_heldout(torch.full((4, 5), 0.2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="from_logits"):
        module.update_heldout(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="labels_heldout must be a torch.Tensor"):
        module.update_heldout(probs, [0, 1, 2, 0])


def test_binary_sigmoid_heldout_equals_the_two_class_form():
    p = torch.rand(300, 1, generator=torch.Generator().manual_seed(0))
    labels = (torch.rand(300, generator=torch.Generator().manual_seed(1)) < p[:, 0]).long()
    sigmoid = pseudosel.PrecisionTargetSelector(2, activation="sigmoid", min_count=10)
    explicit = pseudosel.PrecisionTargetSelector(2, min_count=10)
    sigmoid.update_heldout(p, labels)
    explicit.update_heldout(torch.cat((1 - p, p), 1), labels)
    sigmoid.calibrate()
    explicit.calibrate()
    for a, b in zip(sigmoid.state_dict().values(), explicit.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="num_classes=2"):
        pseudosel.PrecisionTargetSelector(3, activation="sigmoid")


# ---------------------------------------------------------------- the guarantee, simulated

DRAWS = 1000
HELDOUT = 2000
UNLABELLED = 100_000
EPSILON, DELTA = 0.05, 0.1
SHAPE = 3.0  # c = 1 − 0.5·u^SHAPE: most predictions confident, as after some training


def precision_above(t):
    """π(t) = P(correct | c >= t) = E[c | c >= t] = 1 − (1 − t)/(SHAPE + 1) on [0.5, 1]
    (t above 1 selects nothing: 1, vacuously)."""
    t = torch.as_tensor(t, dtype=torch.float64).clamp(0.5, 1)
    return 1 - (1 - t) / (SHAPE + 1)


def coverage_above(t):
    """P(c >= t) = (2(1 − t))^(1/SHAPE) on [0.5, 1]."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (2 * (1 - t)).clamp(0, 1) ** (1 / SHAPE)


def draw_calibrated(gen, draws, size):
    confidence = 1 - 0.5 * torch.rand(draws, size, generator=gen, dtype=torch.float64) ** SHAPE
    correct = torch.rand(draws, size, generator=gen, dtype=torch.float64) < confidence
    return confidence, correct


def test_simulated_truth_formulas():
    """The closed forms the guarantee test relies on, against a direct Monte Carlo."""
    confidence, correct = draw_calibrated(torch.Generator().manual_seed(5), 1, 2_000_000)
    for t in (0.6, 0.8, 0.95, 0.999):
        above = confidence >= t
        n = int(above.sum())
        assert float(above.double().mean()) == pytest.approx(
            float(coverage_above(t)), abs=4 * math.sqrt(0.25 / 2e6)
        )
        precision = float((above & correct).sum()) / n
        assert precision == pytest.approx(float(precision_above(t)), abs=4 * math.sqrt(0.05 / n))


@pytest.mark.slow
def test_precision_is_at_least_target_in_at_least_1_minus_delta_of_draws():
    """The guarantee, where the truth is known: a calibrated model, c = 1 − 0.5·u³ with u
    uniform and P(correct | c) = c, so that the precision above t is
    π(t) = 1 − (1 − t)/4 exactly; the target 0.95 is met from t* = 0.8 on (coverage 0.74).

    Each of 1,000 independent draws calibrates on its own held-out set of 2,000 points (the
    default grid down to 0.5, the default min_count and the fixed-sequence Clopper–Pearson
    rule at ε = 0.05, δ = 0.1, vectorised over the draws) and applies the threshold τ̂ to
    unlabelled data from the same distribution. Measured per draw: the precision over the
    unlabelled distribution, π(τ̂), exact here — what the guarantee is about — and the
    precision on an unlabelled set of 100,000 points (drawn by its exact law given τ̂:
    Binomial(100,000, P(c >= τ̂)) selected, Binomial(selected, π(τ̂)) of them correct).

    Monte-Carlo error: if the guarantee holds, the number of failing draws is at most
    Binomial(1000, 0.1), which exceeds the critical count below with probability 1e-6;
    the seeds are fixed, so the run is deterministic anyway.

    Why it cannot pass by accident: selecting nothing would meet any precision target, so
    the test also requires a threshold in every draw and a mean coverage of at least 80%
    of the oracle's (0.74). And it can fail: the naive plug-in threshold — the lowest
    candidate whose empirical held-out precision is >= 0.95, no bound — fails in about
    half the draws in the same simulation, which the same criterion rejects.
    """
    gen = torch.Generator().manual_seed(2024)
    grid = F.precision_candidates()  # the default grid, 1, 0.999, ..., 0
    grid = grid[grid >= 0.5]  # below 0.5 every point is above (precision 0.875): never reached
    confidence, correct = draw_calibrated(gen, DRAWS, HELDOUT)
    draw_index = torch.arange(DRAWS).repeat_interleave(HELDOUT)
    trials, successes = F.precision_counts(
        confidence.flatten(),
        correct.flatten(),
        torch.ones(DRAWS * HELDOUT, dtype=torch.bool),
        grid,
        groups=draw_index,
        num_groups=DRAWS,
    )
    tau = F.certified_threshold(
        trials, successes, grid, epsilon=EPSILON, delta=DELTA,
        iterations=F.betainc_iterations(HELDOUT + 1),
    )  # fmt: skip
    empirical = successes / trials.clamp_min(1)
    naive = torch.where((trials > 0) & (empirical >= 1 - EPSILON), grid, NOTHING).amin(1)

    critical = int(stats.binom.ppf(1 - 1e-6, DRAWS, DELTA))

    def failures(threshold):
        population = precision_above(threshold) < 1 - EPSILON
        selected = torch.binomial(
            torch.full_like(threshold, float(UNLABELLED)), coverage_above(threshold), generator=gen
        )
        right = torch.binomial(selected, precision_above(threshold), generator=gen)
        finite = right / selected.clamp_min(1) < 1 - EPSILON
        return int(population.sum()), int(finite.sum())

    assert (tau <= 1).all(), "a threshold in every draw"
    oracle = float(coverage_above(torch.tensor(1 - EPSILON * (SHAPE + 1))))
    coverage = float(coverage_above(tau).mean())
    assert coverage >= 0.8 * oracle, (coverage, oracle)
    bounded, bounded_finite = failures(tau)
    plug_in, plug_in_finite = failures(naive)
    print(
        f"draws failing the target (critical {critical} of {DRAWS}): certified "
        f"{bounded} population / {bounded_finite} on {UNLABELLED} unlabelled points; naive "
        f"plug-in {plug_in} / {plug_in_finite}; mean coverage {coverage:.3f} (oracle {oracle:.3f})"
    )
    assert bounded <= critical and bounded_finite <= critical
    assert plug_in > critical and plug_in_finite > critical


# ---------------------------------------------------------------- pseudosel compare


@pytest.fixture
def calibrated_file(tmp_path):
    from helpers.probability_maps import classifier_outputs

    probs = classifier_outputs(600, 6, seed=4)
    confidence, predicted = probs.max(1)
    right = torch.rand(600, generator=torch.Generator().manual_seed(5)) < confidence
    labels = torch.where(right, predicted, (predicted + 1) % 6)
    labels[::17] = 255  # unknown labels take no part
    path = tmp_path / "preds.npz"
    np.savez(path, probs=probs.numpy(), labels=labels.numpy())
    return path, probs, labels


def test_compare_cross_fits_the_files_labels(calibrated_file):
    from pseudosel.metrics import SelectionStats
    from pseudosel.tools.compare import compare

    path, probs, labels = calibrated_file
    report = compare(path, selectors=["precision_target"], progress=False, batch_size=50)
    row = report["selectors"]["precision_target"]
    assert row["warmup_passes"] == 2
    # by hand: even samples calibrate the selector that measures the odd ones, and vice versa
    known = labels != 255
    index = torch.arange(600)
    folds = []
    for part in (index % 2 == 0, index % 2 == 1):
        fold = pseudosel.PrecisionTargetSelector(6, window=300)
        held = known & part
        fold.update_heldout(probs, torch.where(held, labels, 0), held)
        fold.calibrate()
        folds.append(fold)
    on_even, on_odd = folds[0](probs), folds[1](probs)
    even = (index % 2 == 0).view(-1)
    mask = torch.where(even, on_odd.mask, on_even.mask)
    stats = SelectionStats(6)
    stats.update(on_even._replace(mask=mask, weight=mask.float()), labels)
    assert row["ratio"] == pytest.approx(float(stats.compute()["ratio"]), abs=1e-6)
    assert row["precision"] == pytest.approx(float(stats.compute()["precision"]), abs=1e-6)
    assert 0 < row["ratio"] < 1


def test_compare_needs_a_warmup_pass_for_precision_target(calibrated_file, tmp_path, capsys):
    from pseudosel.tools.cli import main
    from pseudosel.tools.compare import compare

    path = calibrated_file[0]
    with pytest.raises(ValueError, match="passes must be >= 2"):
        compare(path, selectors=["threshold", "precision_target"], progress=False, passes=1)
    out = tmp_path / "o"
    args = ["compare", str(path), "--out", str(out), "--no-plots", "--selectors"]
    assert main([*args, "threshold", "precision_target"]) == 0
    assert "precision_target*" in capsys.readouterr().out


def test_compare_dense_file(tmp_path):
    from helpers.probability_maps import smooth_maps

    from pseudosel.tools.compare import compare

    probs = smooth_maps(4, 3, 12, 12, sharpness=4.0, seed=1)
    confidence, predicted = probs.max(1)
    right = torch.rand(confidence.shape, generator=torch.Generator().manual_seed(2)) < confidence
    labels = torch.where(right, predicted, (predicted + 1) % 3)
    path = tmp_path / "dense.npz"
    np.savez(path, probs=probs.numpy(), labels=labels.numpy())
    report = compare(path, selectors=["precision_target"], progress=False, batch_size=3)
    assert 0 <= report["selectors"]["precision_target"]["ratio"] <= 1
