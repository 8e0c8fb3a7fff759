"""Every fast path equals the readable formula it stands for.

The formulas (pseudosel.features, pseudosel.functional) run as written inside
``kernels.formulas_only()``; outside it, eager CPU takes the blocked kernels
(pseudosel.kernels.cpu, .split) and torch.compile the class-plane kernels
(pseudosel.kernels.planes). On the inputs that stress each: near-uniform and
near-one-hot rows, exact ties, half precision, ignored positions holding NaN, and the
block loops forced on small inputs.
"""

from __future__ import annotations

import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps, stressed_logits
from helpers.tolerances import DTYPES

import pseudosel.functional as F
import pseudosel.kernels.blocks as blocks
from pseudosel import features, kernels
from pseudosel.compiled import compiled
from pseudosel.kernels import cpu, planes


def inputs(kind: str, dtype: torch.dtype, shape=(3, 7, 12, 10)) -> torch.Tensor:
    """Probabilities of one stressing kind, rounded to ``dtype``."""
    if kind == "smooth":
        if len(shape) == 2:  # classification: a classifier's spread of confidences
            return classifier_outputs(*shape, seed=4).to(dtype)
        return smooth_maps(*shape, seed=4).to(dtype)
    return stressed_logits(kind, shape, seed=len(kind)).softmax(1).to(dtype)


KINDS = ["smooth", "near-uniform", "near-one-hot", "ties"]


@pytest.fixture
def small_blocks(monkeypatch):
    """Force the eager CPU block loops on small inputs."""
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 300)
    monkeypatch.setattr(blocks, "CPU_BLOCK_POSITIONS", 40)


def formula(function, *args, **kwargs):
    with kernels.formulas_only():
        return function(*args, **kwargs)


def assert_fields_match(fast, readable, *, rtol, atol):
    """Same labels and trusted/selected sets; weights and scores within tolerance."""
    fast, readable = tuple(fast), tuple(readable)
    for a, b in zip(fast, readable, strict=True):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)
        else:
            assert torch.equal(a, b)


TOLERANCE = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (1e-5, 1e-6),  # computed in float32
    torch.bfloat16: (1e-5, 1e-6),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("blocked", [False, True], ids=["one-block", "blocked"])
def test_cpu_features_equal_the_formulas(request, kind, dtype, blocked):
    if blocked:
        request.getfixturevalue("small_blocks")
    probs = inputs(kind, dtype)
    rtol, atol = TOLERANCE[dtype]
    # the arg-max: bit-equal (values and the lowest index on ties)
    assert cpu.takes_argmax(probs)
    for a, b in zip(
        cpu.confidence_and_labels(probs), formula(features.confidence_and_labels, probs),
        strict=True,
    ):  # fmt: skip
        assert torch.equal(a, b)
    for residual in ("reference", "theory"):
        fast = cpu.csl_features(probs, residual, 1.0)
        readable = formula(features.csl_features, probs, residual=residual)
        assert torch.equal(fast[0], readable[0]) and torch.equal(fast[2], readable[2])
        torch.testing.assert_close(fast[1], readable[1], rtol=rtol * 10, atol=atol)
    if blocked:
        assert cpu.blocked(probs)
        torch.testing.assert_close(cpu.entropy(probs), formula(features.entropy, probs),
                                   rtol=rtol * 10, atol=atol)  # fmt: skip


def test_cpu_classification_features_equal_the_formulas():
    probs = inputs("smooth", torch.float32, (64, 9))
    fast = cpu.csl_features(probs, "reference", 0.5)
    readable = formula(features.csl_features, probs, g_scale=0.5)
    assert torch.equal(fast[0], readable[0]) and torch.equal(fast[2], readable[2])
    torch.testing.assert_close(fast[1], readable[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("valid_kind", ["all", "masked", "nan-at-ignored"])
def test_cpu_csl_split_equals_the_formula(small_blocks, kind, dtype, valid_kind):
    """The whole CSL selection: the blocked kernels (features and split) against the
    formulas. Equal labels and trusted sets except exact ties of a point with a mean."""
    probs = inputs(kind, dtype)
    valid = None
    if valid_kind != "all":
        valid = torch.rand(probs.shape[0], *probs.shape[2:],
                           generator=torch.Generator().manual_seed(3)) > 0.3  # fmt: skip
    if valid_kind == "nan-at-ignored":
        probs = probs.clone()
        probs.movedim(1, -1)[~valid] = float("nan")
    for scope in ("sample", "batch"):
        fast = F.csl(probs, valid=valid, scope=scope)
        readable = formula(F.csl, probs, valid=valid, scope=scope)
        keep = fast.valid
        assert torch.equal(fast.labels[keep], readable.labels[keep])
        assert torch.equal(fast.mask, readable.mask), (kind, scope)
        rtol, atol = TOLERANCE[dtype]
        torch.testing.assert_close(fast.weight, readable.weight, rtol=rtol * 100, atol=atol)
        torch.testing.assert_close(fast.score, readable.score, rtol=rtol * 100, atol=atol * 100)


@pytest.mark.parametrize("blocked", [False, True], ids=["one-block", "blocked"])
def test_cpu_masked_sums_and_dash_equal_the_formulas(request, blocked):
    if blocked:
        request.getfixturevalue("small_blocks")
    probs = inputs("smooth", torch.float32)
    probs[0, :, 0, 0] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0])  # p = 0 entries
    valid = torch.rand(3, 12, 10, generator=torch.Generator().manual_seed(1)) > 0.2
    poisoned = probs.clone()
    poisoned.movedim(1, -1)[~valid] = float("nan")
    sums = F.alignment.masked_class_sums(poisoned, valid, torch.float64)
    torch.testing.assert_close(sums, formula(F.alignment.masked_class_sums, poisoned, valid,
                                             torch.float64))  # fmt: skip
    rho = torch.tensor(0.4)
    fast = F.dash_select(probs, rho, valid=valid, T=0.7)
    readable = formula(F.dash_select, probs, rho, valid=valid, T=0.7)
    assert torch.equal(fast.mask, readable.mask)
    torch.testing.assert_close(fast.score, readable.score, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- torch.compile


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compiled_planes_equal_the_formulas(kind, dtype):
    """The class-plane kernels, compiled, against the formulas run eagerly."""
    probs = inputs(kind, dtype, (2, 6, 9, 7))

    def features_of(p):
        return (*features.confidence_and_labels(p), features.csl_features(p)[1])

    compiled_features = torch.compile(features_of, fullgraph=True)
    fast = compiled_features(probs)
    readable = formula(features_of, probs)
    assert torch.equal(fast[0], readable[0]) and torch.equal(fast[1], readable[1])
    torch.testing.assert_close(fast[2], readable[2], rtol=1e-5, atol=1e-7)
    fast_csl = compiled(F.csl)(probs)
    readable_csl = formula(F.csl, probs)
    assert torch.equal(fast_csl.mask, readable_csl.mask)
    torch.testing.assert_close(fast_csl.weight, readable_csl.weight, rtol=1e-5, atol=1e-6)
    fast_threshold = compiled(F.threshold)(probs, 0.5)
    assert torch.equal(fast_threshold.mask, formula(F.threshold, probs, 0.5).mask)


@pytest.mark.slow
def test_compiled_value_check_equals_the_formula():
    good = inputs("smooth", torch.float32, (2, 5, 6, 6))
    valid = torch.ones(2, 6, 6, dtype=torch.bool)
    check = torch.compile(planes.probability_vectors_ok, fullgraph=True)
    from pseudosel.validation import probability_vectors_ok

    for probs in (good, good * 1.1, torch.where(good > 0.5, float("nan"), good)):
        assert bool(check(probs, valid)) == bool(formula(probability_vectors_ok, probs, valid))


def test_the_formulas_run_where_no_kernel_applies():
    """On the meta device no fast path applies (kernels are eager-CPU or compiled): the
    formulas run, and they create nothing on another device."""
    probs = torch.empty(2, 5, 8, 8, device="meta")
    assert not kernels.eager_cpu(probs)
    sel = F.csl(probs, validate=False)
    assert sel.weight.device.type == "meta" and sel.weight.shape == (2, 8, 8)
    c, s, labels = features.csl_features(probs)
    assert c.device.type == s.device.type == labels.device.type == "meta"


@pytest.mark.parametrize("T", [0.5, 1.0])
def test_dash_soft_loss_of_a_strided_input_equals_the_contiguous_one(T):
    """Dense input whose spatial dims do not merge is summed as its contiguous copy."""
    logits = torch.randn(4, 7, 5, 64, generator=torch.Generator().manual_seed(0)) * 3
    permuted = logits.softmax(3).permute(0, 3, 2, 1)  # classes at dim 1, strided
    rho = torch.tensor(0.5)
    strided = F.dash_select(permuted, rho, T=T)
    contiguous = F.dash_select(permuted.contiguous(), rho, T=T)
    assert torch.equal(strided.score, contiguous.score)
    assert torch.equal(strided.mask, contiguous.mask)
