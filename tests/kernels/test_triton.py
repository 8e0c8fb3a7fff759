"""The Triton kernels (pseudosel.kernels.triton) equal the readable formulas.

On the CPU the kernels run in triton's interpreter: the ``interpreted`` fixture sets
``TRITON_INTERPRET=1`` for the CPU cases of this file only (pseudosel decides per call,
from the tensor's device, whether a kernel is interpreted or compiled, so nothing else in
the session sees the variable). On CUDA (the ``device`` fixture) the same tests run the
compiled kernels. Skipped, with the reason, where triton is not installed.

What is pinned, over float16/bfloat16/float32/float64, odd sizes, dense and classification
layouts, K from 2 to 1000 (the one-tile path up to 64 classes, the chunked walk beyond),
ignore masks with NaN at the ignored positions, exact ties (also across chunks):

- the confidence and the labels: bit-equal to ``probs.max(1)`` (the formula);
- CSL's s: equal to the formula within its tolerance (the order of summation differs);
- the value check: the same verdict as ``validation.probability_vectors_ok``;
- ``threshold(backend="triton")``: every field bit-equal to the eager selector (labels at
  the valid positions); ``csl(backend="triton")``: the same labels and trusted set,
  weights within tolerance;
- ``backend=``: its errors, the compiled route, the modules and select_reliable.
"""

from __future__ import annotations

import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps, stressed_logits
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import pseudosel
import pseudosel.functional as F
from pseudosel import features, kernels, validation

pytest.importorskip("triton", reason="triton is not installed (the triton extra)")

from pseudosel.kernels import triton as triton_kernels  # noqa: E402

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
KINDS = ("smooth", "near-uniform", "near-one-hot", "ties")
# s against the formula: (rtol, atol) per compute dtype
S_TOLERANCE = {torch.float32: (1e-4, 1e-6), torch.float64: (1e-10, 1e-12)}


@pytest.fixture
def interpreted(monkeypatch, device):
    """CPU cases run in triton's interpreter (TRITON_INTERPRET=1 for this test only)."""
    if device.type == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return device


def make(kind: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Probabilities of one stressing kind, rounded to ``dtype``."""
    if kind == "smooth" and len(shape) in (2, 4):
        probs = (
            classifier_outputs(*shape, seed=seed)
            if len(shape) == 2
            else smooth_maps(*shape, seed=seed)
        )
        return probs.to(dtype)
    # "smooth" for another number of dims: a classifier-like spread
    return stressed_logits(kind, shape, seed).softmax(1).to(dtype)


def ignore_some(probs: torch.Tensor, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A validity mask, and ``probs`` with NaN at every ignored position."""
    gen = torch.Generator().manual_seed(seed)
    valid = torch.rand(probs.shape[0], *probs.shape[2:], generator=gen) > 0.3
    poisoned = probs.clone()
    poisoned.movedim(1, -1)[~valid] = float("nan")
    return poisoned, valid


def formula(function, *args, **kwargs):
    with kernels.formulas_only():
        return function(*args, **kwargs)


def assert_features_equal(probs: torch.Tensor, valid: torch.Tensor | None = None) -> None:
    """Confidence and labels bit-equal, s within tolerance (at the valid positions)."""
    keep = slice(None) if valid is None else valid
    c, labels = triton_kernels.confidence_and_labels(probs)
    c_ref, labels_ref = formula(features.confidence_and_labels, probs)
    assert c.dtype == c_ref.dtype and labels.dtype == torch.long
    assert torch.equal(c[keep], c_ref[keep])
    assert torch.equal(labels[keep], labels_ref[keep])
    for residual in ("reference", "theory"):
        for g_scale in (1.0, 0.5):
            c, s, labels, verdict = triton_kernels.csl_features(probs, residual, g_scale)
            c_ref, s_ref, labels_ref = formula(
                features.csl_features, probs, residual=residual, g_scale=g_scale
            )
            assert verdict is None
            assert torch.equal(c[keep], c_ref[keep]) and torch.equal(labels[keep], labels_ref[keep])
            rtol, atol = S_TOLERANCE[s_ref.dtype]
            torch.testing.assert_close(s[keep], s_ref[keep], rtol=rtol, atol=atol)


# ------------------------------------------------------------------ the feature pass


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 5, 9), (37, 7)], ids=["dense", "classification"])
def test_features_equal_the_formulas(interpreted, kind, dtype, shape):
    assert_features_equal(make(kind, shape, dtype).to(interpreted))


@pytest.mark.parametrize(
    "shape",
    [(2, 2, 3, 5), (41, 2), (2, 3, 4, 3), (2, 64, 3, 3), (3, 65, 2, 3), (9, 65), (2, 130, 3, 1, 3),
     (6, 130), (3, 1000)],
    ids=lambda s: "x".join(map(str, s)),
)  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_every_class_count(interpreted, shape, dtype):
    """K = 2 (s = 0 / r/2), up to 64 classes in one tile, beyond in chunks; 5-D input."""
    for kind in ("smooth", "ties") if len(shape) == 2 else ("near-one-hot", "ties"):
        assert_features_equal(make(kind, shape, dtype, seed=len(shape)).to(interpreted))


@pytest.mark.parametrize("shape", [(4, 130), (2, 130, 3, 3)], ids=["classification", "dense"])
def test_ties_across_chunks_take_the_lowest_index(interpreted, shape):
    """The maximum shared by a class of the first chunk and one of the last: the first."""
    probs = torch.full(shape, 0.5 / (shape[1] - 2), dtype=torch.float32)
    probs[:, 5] = 0.25
    probs[:, 129] = 0.25
    probs[1, 5] = 0.2  # this row's maximum is in the last chunk only
    probs[1, 7] = 0.05
    probs = probs.to(interpreted)
    _, labels = triton_kernels.confidence_and_labels(probs)
    assert torch.equal(labels.cpu()[0], torch.full(shape[2:], 5))
    assert torch.equal(labels.cpu()[1], torch.full(shape[2:], 129))
    assert_features_equal(probs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 5, 9), (37, 7), (5, 70)], ids=lambda s: f"{s}")
def test_nan_at_ignored_positions(interpreted, dtype, shape):
    probs, valid = ignore_some(make("smooth", shape, dtype))
    assert_features_equal(probs.to(interpreted), valid.to(interpreted))


def test_empty_batch(interpreted):
    for shape in ((0, 5), (0, 5, 4, 4)):
        probs = torch.empty(shape, device=interpreted)
        c, s, labels, verdict = triton_kernels.csl_features(probs, check=True)
        assert c.shape == s.shape == labels.shape == (0, *shape[2:]) and bool(verdict)


# ------------------------------------------------------------------ the value check


@pytest.mark.parametrize("shape", [(3, 7, 5, 9), (37, 7), (5, 130)], ids=lambda s: f"{s}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_value_check_equals_the_formula(interpreted, shape, dtype):
    good = make("smooth", shape, dtype)
    poisoned, valid = ignore_some(good)
    negative = good.clone()
    negative.view(-1)[3] = -0.01
    infinite = good.clone()
    infinite.view(-1)[1] = float("inf")
    not_one = good * 1.1
    cases = [(good, None, True), (poisoned, valid, True), (poisoned, None, False)]
    cases += [(bad, None, False) for bad in (negative, infinite, not_one)]
    for probs, mask, expected in cases:
        probs = probs.to(interpreted)
        mask = None if mask is None else mask.to(interpreted)
        resolved = torch.ones(
            probs.shape[0], *probs.shape[2:], dtype=torch.bool, device=probs.device
        )
        resolved = resolved if mask is None else mask
        readable = formula(validation.probability_vectors_ok, probs, resolved)
        *_, verdict = triton_kernels.csl_features(probs, valid=mask, check=True)
        *_, from_threshold = triton_kernels.threshold_selection(probs, 0.5, mask, check=True)
        assert bool(verdict) == bool(from_threshold) == bool(readable) == expected


def test_value_check_at_the_tolerance():
    """Rows summing to 1 ± 0.9 tol pass and 1 ± 1.1 tol fail, as in the formula."""
    tol = validation.sum_tolerance(torch.float32)
    for offset, expected in ((0.9 * tol, True), (-0.9 * tol, True), (1.1 * tol, False)):
        probs = torch.full((4, 8), 1 / 8, dtype=torch.float64)
        probs[:, 0] += offset
        probs = probs.float()
        readable = formula(
            validation.probability_vectors_ok, probs, torch.ones(4, dtype=torch.bool)
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TRITON_INTERPRET", "1")
            *_, verdict = triton_kernels.csl_features(probs, check=True)
        assert bool(verdict) == bool(readable) == expected


# ------------------------------------------------------------------ CSL's split


def split_points(groups: int, size: int, dtype: torch.dtype, seed: int):
    """(G, n) CSL points from smooth maps with a validity mask and NaN at the ignored points
    (degenerate groups: one valid point, none), and the same points all valid; group 3's
    points all coincide."""
    probs = make("smooth", (groups, 6, 1, size), torch.float64, seed=seed)
    c, s, _ = formula(features.csl_features, probs)
    c, s = c.reshape(groups, size).to(dtype), s.reshape(groups, size).to(dtype)
    valid = torch.rand(groups, size, generator=torch.Generator().manual_seed(seed)) > 0.25
    if groups >= 4:
        valid[1] = False
        valid[1, min(3, size - 1)] = True  # one valid point
        valid[2] = False  # none
        c[3], s[3] = c[3, 0], s[3, 0]  # one point, many times
    poisoned = (torch.where(valid, x, float("nan")) for x in (c, s))
    return (*poisoned, valid), (c, s, torch.ones_like(valid))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("size", [1, 37, 1500], ids=lambda n: f"n={n}")
@pytest.mark.parametrize(
    "options",
    [{}, {"cluster_rule": "linear", "alpha": 8.0}, {"cluster_rule": "neglog", "min_var": 1e-4},
     {"rank_one_guard": True}],
    ids=["defaults", "linear", "neglog", "rank-one-guard"],
)  # fmt: skip
def test_split_equals_the_formula(interpreted, dtype, size, options):
    """The four Triton passes against the formula (pseudosel.functional.csl.split_groups),
    with and without ignored points: the same trusted set and clusters, weights and scores
    within float rounding."""
    from pseudosel.functional.csl import split_groups as formula_split
    from pseudosel.functional.separation import AXES_SOLVERS

    masked, every = split_points(5, size, dtype, seed=size)
    solver = AXES_SOLVERS["closed_form"]
    settings = {"alpha": 2.0, "cluster_rule": "confidence", "min_var": 0.0, "eps": 1e-8}
    guard = options.get("rank_one_guard", False)
    settings.update({k: v for k, v in options.items() if k != "rank_one_guard"})
    for (points, points_s, mask), all_valid in ((masked, False), (every, True)):
        points, points_s, mask = (x.to(interpreted) for x in (points, points_s, mask))
        fast = triton_kernels.split_groups(
            points, points_s, mask, axes_of=solver.axes,
            rank_one=solver.rank_one_ratio if guard else None, all_valid=all_valid, **settings,
        )  # fmt: skip
        readable = formula(
            formula_split, points, points_s, mask, rank_one_guard=guard, all_valid=all_valid,
            **settings,
        )  # fmt: skip
        # group 3's points all coincide: without the rank-one guard its split into two
        # clusters follows rounding (as the formula's docs say), here of the float64 sums;
        # the trusted set and the weights do not depend on it
        split = slice(None) if guard or size == 1 else [0, 1, 2, 4]
        assert torch.equal(fast.reliable_is_second[split], readable.reliable_is_second[split])
        assert torch.equal(fast.in_second[split], readable.in_second[split])
        assert torch.equal(fast.mask, readable.mask)
        rtol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(fast.center, readable.center, rtol=rtol, atol=rtol)
        torch.testing.assert_close(fast.weight, readable.weight, rtol=rtol * 10, atol=rtol)
        torch.testing.assert_close(fast.score, readable.score, rtol=rtol * 10, atol=rtol * 10)


# ------------------------------------------------------------------ the selectors


def _valid_cases(probs: torch.Tensor):
    poisoned, valid = ignore_some(probs)
    return [(probs, None), (probs, valid), (poisoned, valid)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 5, 9), (37, 7), (3, 300)], ids=lambda s: f"{s}")
def test_threshold_triton_equals_eager(interpreted, dtype, shape):
    base = make("ties", shape, dtype)
    # τ at an attained confidence: the >= comparison is exact at the boundary; and 0.95 at
    # a confidence that is 0.95 rounded to float32 (torch compares in the compute dtype)
    attained = float(base.amax(1).flatten()[0])
    row = torch.tensor([0.95] + [0.05 / (shape[1] - 1)] * (shape[1] - 1)).to(dtype)
    if len(shape) == 2:
        base[1] = row
    else:
        base[0, :, 0, 1] = row
    for probs, valid in _valid_cases(base):
        probs = probs.to(interpreted)
        valid = None if valid is None else valid.to(interpreted)
        for tau in (0.0, 0.5, attained, 0.95, 1.0):
            fast = F.threshold(probs, tau, valid=valid, backend="triton")
            eager = F.threshold(probs, tau, valid=valid, backend="eager")
            keep = eager.valid
            assert torch.equal(fast.labels[keep], eager.labels[keep])
            for name in ("weight", "mask", "score", "valid"):
                a, b = getattr(fast, name), getattr(eager, name)
                assert a.dtype == b.dtype and torch.equal(a, b), (name, tau)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 5, 9), (37, 7), (3, 9, 1, 70)], ids=lambda s: f"{s}")
def test_csl_triton_equals_eager(interpreted, dtype, shape):
    for probs, valid in _valid_cases(make("smooth", shape, dtype)):
        probs = probs.to(interpreted)
        valid = None if valid is None else valid.to(interpreted)
        for scope in ("sample", "batch"):
            fast = F.csl(probs, valid=valid, scope=scope, backend="triton")
            eager = F.csl(probs, valid=valid, scope=scope, backend="eager")
            keep = eager.valid
            assert torch.equal(fast.labels[keep], eager.labels[keep])
            assert torch.equal(fast.mask, eager.mask), scope
            torch.testing.assert_close(fast.weight, eager.weight, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(fast.score, eager.score, rtol=1e-3, atol=1e-4)


def test_csl_triton_options_and_sigmoid(interpreted):
    probs = make("smooth", (2, 5, 6, 7), torch.float32).to(interpreted)
    options = dict(residual="theory", g_scale=0.5, cluster_rule="linear", alpha=8.0)
    fast = F.csl(probs, backend="triton", **options)
    eager = F.csl(probs, backend="eager", **options)
    assert torch.equal(fast.mask, eager.mask)
    torch.testing.assert_close(fast.weight, eager.weight, rtol=1e-4, atol=1e-5)
    sigmoid = torch.rand(3, 4, 5, 5, generator=torch.Generator().manual_seed(0)).to(interpreted)
    fast = F.csl(sigmoid, activation="sigmoid", backend="triton")
    eager = F.csl(sigmoid, activation="sigmoid", backend="eager")
    assert torch.equal(fast.mask, eager.mask) and fast.weight.shape == (3, 4, 5, 5)
    fast = F.threshold(sigmoid, 0.7, activation="sigmoid", backend="triton")
    assert torch.equal(fast.mask, F.threshold(sigmoid, 0.7, activation="sigmoid").mask)


def test_value_check_raises_as_eager():
    """The fused check refuses what the eager check refuses, with its message (CPU)."""
    bad = make("smooth", (2, 5, 4, 4), torch.float32) * 1.5
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        for select in (F.threshold, F.csl):
            with pytest.raises(ValueError) as eager_error:
                select(bad, backend="eager")
            with pytest.raises(ValueError) as triton_error:
                select(bad, backend="triton")
            assert str(triton_error.value) == str(eager_error.value)
            select(bad, backend="triton", validate=False)  # no check: no error


@hypothesis_settings(max_examples=25)
@given(
    n=st.integers(1, 3),
    k=st.sampled_from([2, 3, 5, 21, 64, 65, 100]),
    spatial=st.sampled_from([(), (1,), (3, 2), (2, 5)]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_features_and_threshold(n, k, spatial, dtype, masked, seed):
    probs = make("ties" if seed % 2 else "smooth", (n, k, *spatial) if spatial else (n + 3, k),
                 dtype, seed=seed)  # fmt: skip
    valid = None
    if masked:
        probs, valid = ignore_some(probs, seed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        assert_features_equal(probs, valid)
        fast = F.threshold(probs, 0.4, valid=valid, backend="triton", validate=False)
    eager = F.threshold(probs, 0.4, valid=valid, validate=False)
    assert torch.equal(fast.mask, eager.mask) and torch.equal(fast.score, eager.score)


# ------------------------------------------------------------------ backend=


def test_backend_errors(monkeypatch):
    probs = make("smooth", (4, 3), torch.float32)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match='backend="triton" runs on CUDA tensors, got a tensor'):
        F.threshold(probs, backend="triton")
    with pytest.raises(ValueError, match='backend="triton" runs on CUDA tensors'):
        F.csl(probs, backend="triton")
    with pytest.raises(
        ValueError, match="backend must be one of 'auto', 'eager', 'compiled', 'triton', got 'cuda'"
    ):
        F.threshold(probs, backend="cuda")
    with pytest.raises(ValueError, match="compile=True runs the compiled path"):
        pseudosel.ThresholdSelector(compile=True, backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        pseudosel.CSLSelector(backend="fast")
    with pytest.raises(ValueError, match='backend="triton" runs on CUDA'):
        pseudosel.select_reliable(probs, "threshold", backend="triton")


def test_without_triton_the_error_names_the_extra(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton_kernels, "triton", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'needs triton \(pip install "pseudosel\[triton\]"'):
        F.threshold(make("smooth", (4, 3), torch.float32), backend="triton")


def test_auto_is_eager_until_measured(monkeypatch):
    probs = make("smooth", (4, 3), torch.float32)
    assert kernels.resolve_backend("csl", "auto", probs) == "eager"
    assert kernels.MEASURED_FASTEST == {}  # no GPU has measured: auto stays eager
    cuda_like = torch.empty(4, 3, device="meta")  # the placement, without a GPU
    assert kernels.resolve_backend("csl", "auto", cuda_like) == "eager"


def test_compiled_backend_takes_the_shared_compiled_path(monkeypatch):
    """backend="compiled" calls pseudosel.compiled.shared_compiled(selector) (the compile
    itself is tested in tests/kernels/test_kernels.py and tests/test_compile.py)."""
    import pseudosel.compiled as compiled_module

    called = []

    def fake(selector):
        called.append(selector)
        return lambda probs, *args, **kwargs: selector(probs, *args, backend="eager", **kwargs)

    monkeypatch.setattr(compiled_module, "shared_compiled", fake)
    probs = make("smooth", (6, 4), torch.float32)
    assert torch.equal(
        F.threshold(probs, 0.5, backend="compiled").mask, F.threshold(probs, 0.5).mask
    )
    assert torch.equal(F.csl(probs, backend="compiled").mask, F.csl(probs).mask)
    assert called == [F.threshold, F.csl]
    assert pseudosel.ThresholdSelector(backend="compiled").compile


def test_modules_and_select_reliable_forward_the_backend(interpreted):
    probs, valid = ignore_some(make("smooth", (2, 6, 5, 7), torch.float32))
    probs, valid = probs.to(interpreted), valid.to(interpreted)
    module = pseudosel.ThresholdSelector(0.6, backend="triton")
    assert "backend='triton'" in repr(module)
    assert torch.equal(module(probs, valid).mask, F.threshold(probs, 0.6, valid=valid).mask)
    csl = pseudosel.CSLSelector(backend="triton")
    assert "backend='triton'" in repr(csl)
    assert torch.equal(csl(probs, valid).mask, F.csl(probs, valid=valid).mask)
    chosen = pseudosel.select_reliable(probs, "csl", valid=valid, backend="triton")
    assert torch.equal(chosen.mask, F.csl(probs, valid=valid).mask)


# ------------------------------------------------------------------ compiled for a GPU


def _signature(kernel: str, points: str, work: str) -> dict[str, str]:
    if kernel == "feature":
        names = ["probs_ptr", "valid_ptr", "params_ptr", "conf_ptr", "label_ptr", "s_ptr",
                 "weight_ptr", "mask_ptr", "score_ptr", "bad_ptr"]  # fmt: skip
        types = [points, "u8", "fp64", work, "i64", work, work, "u8", work, "i32"]
        scalars = {"length": "i32", "num_classes": "i32", "stride_n": "i64",
                   "stride_k": "i32", "stride_l": "i32"}  # fmt: skip
    else:
        names = ["c_ptr", "s_ptr", "valid_ptr", "coef_ptr", "second_ptr", "weight_ptr",
                 "score_ptr", "part_ptr"]  # fmt: skip
        types = [work, work, "u8", work, "u8", work, work, "fp64"]
        scalars = {"size": "i32"}
    return {**{name: "*" + kind for name, kind in zip(names, types, strict=True)}, **scalars}


@pytest.mark.parametrize(
    "kernel,points,constants",
    [
        ("feature", "bf16",
         dict(WIDE=False, ONE_CHUNK=True, CHECK=True, SPREAD=True, SELECT=False)),
        ("feature", "fp32",
         dict(WIDE=False, ONE_CHUNK=False, CHECK=True, SPREAD=True, SELECT=True)),
        ("feature", "fp64",
         dict(WIDE=True, ONE_CHUNK=False, CHECK=False, SPREAD=True, SELECT=True)),
        ("group", "fp32", dict(WIDE=False, STAGE=2)),
        ("group", "fp64", dict(WIDE=True, STAGE=4)),
    ],
    ids=["features-bf16", "chunked-fp32", "chunked-fp64", "split-assignment", "split-weights"],
)  # fmt: skip
def test_kernels_compile_for_a_gpu_without_one(kernel, points, constants):
    """The compiled path (no GPU here): each kernel goes through triton's code generator and
    ptxas for sm_90 (what the interpreter does not check: types, constexpr branches, the
    loop-carried values)."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constants = dict(constants)  # the parameter itself stays as it is
    wide = constants.pop("WIDE")
    work = "fp64" if wide else "fp32"
    if kernel == "feature":
        function = triton_kernels._feature_pass
        constants.update(WIDE=wide, HAS_VALID=True, REFERENCE=True, SCALE=True, BLOCK_P=64,
                         BLOCK_K=32)  # fmt: skip
    else:
        function = triton_kernels._group_pass
        constants.update(HAS_VALID=True, BLOCK=1024)
    constants["WORK"] = tl.float64 if wide else tl.float32
    signature = _signature(kernel, points, work)
    signature.update({name: "constexpr" for name in constants})
    source = ASTSource(triton.runtime.jit.JITFunction(function), signature, constants)
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    except RuntimeError as error:  # no ptxas for this platform in the triton wheel
        if "ptxas" in str(error).lower():
            pytest.skip(f"triton cannot build for CUDA here: {error}")
        raise
    assert "cubin" in compiled.asm and ".entry" in compiled.asm["ptx"]
