"""The plain lane (pseudosel.selectors._lane) gives what the general path gives, bit for bit.

A module whose call qualifies — a plain float32/float64 (N, K) CPU batch, nothing ignored,
eager, one process — skips the layers of the general path and calls the formula cores
directly. Each test runs two copies of a module on the same batches, one with the lane
open and one inside ``lane_closed()``, and compares every output field and the state after
every step by their bits; it also checks that the open copy took the lane (the front door,
``pseudosel.inputs.prepare``, was not called) and that the closed one did not.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import pseudosel
from pseudosel.selectors._lane import lane_closed

# module factories: (name, build(K), takes a labelled batch)
MODULES: list[tuple[str, Callable[..., torch.nn.Module], bool]] = [
    ("threshold", lambda k, **o: pseudosel.ThresholdSelector(tau=0.7, **o), False),
    ("adamatch", lambda k, **o: pseudosel.AdaMatchSelector(tau=0.9, **o), True),
    ("freematch", lambda k, **o: pseudosel.FreeMatchSelector(k, momentum=0.6, **o), False),
    (
        "freematch clipped",
        lambda k, **o: pseudosel.FreeMatchSelector(k, momentum=0.6, clip_thresh=True, **o),
        False,
    ),
    ("softmatch", lambda k, **o: pseudosel.SoftMatchSelector(k, momentum=0.6, **o), False),
    ("dash", lambda k, **o: pseudosel.DashSelector(1.5, update_every=2, gamma=3.0, **o), False),
    ("alignment", lambda k, **o: pseudosel.DistributionAlignment(k, momentum=0.6, **o), False),
    (
        "alignment queue",
        lambda k, **o: pseudosel.DistributionAlignmentQueue(k, queue_length=3, **o),
        False,
    ),
    (
        "alignment to a target",
        lambda k, **o: pseudosel.DistributionAlignment(k, momentum=0.6, target=_target(k), **o),
        False,
    ),
    (
        "alignment queue to a target",
        lambda k, **o: pseudosel.DistributionAlignmentQueue(
            k, queue_length=2, target=_target(k), **o
        ),
        False,
    ),
]


def _target(k: int) -> Tensor:
    """A given target distribution that is not uniform."""
    weights = torch.arange(1, k + 1, dtype=torch.float64)
    return weights / weights.sum()


def _front_door_calls(call: Callable[..., object], *args, **kwargs) -> tuple[object, int]:
    """``call(*args, **kwargs)`` and how many times it entered ``pseudosel.inputs.prepare``."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        code = frame.f_code
        if (
            event == "call"
            and code.co_name == "prepare"
            and code.co_filename.endswith("pseudosel/inputs.py")
        ):
            count += 1

    sys.setprofile(profile)
    try:
        result = call(*args, **kwargs)
    finally:
        sys.setprofile(None)
    return result, count


_SAME_WIDTH_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(value: object) -> list[Tensor]:
    tensors = list(value) if isinstance(value, tuple) else [value]
    return [t.view(_SAME_WIDTH_INT[t.itemsize]) if t.is_floating_point() else t
            for t in tensors]  # fmt: skip


def _assert_same(ours: object, theirs: object, what: str) -> None:
    for a, b in zip(_bits(ours), _bits(theirs), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, what
        assert torch.equal(a, b), what


def _batch(draw, n: int, k: int, dtype: torch.dtype) -> Tensor:
    """Probabilities with the cases that stress a formula: confident, uniform and one-hot
    rows (exact zeros), ties."""
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([0.5, 3.0, 30.0]))
    logits = torch.randn(n, k, generator=generator, dtype=torch.float64) * scale
    probs = logits.softmax(1).to(dtype)
    kind = draw(st.sampled_from(["plain", "one-hot", "uniform", "tie"]))
    if kind == "one-hot":
        probs[0] = 0
        probs[0, k - 1] = 1
    elif kind == "uniform":
        probs[-1] = 1.0 / k
    elif kind == "tie":
        probs[0] = 0
        probs[0, :2] = 0.5
    return probs


@pytest.mark.parametrize("name, build, labelled", MODULES, ids=[m[0] for m in MODULES])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_the_lane_equals_the_general_path_bit_for_bit(name, build, labelled, data):
    k = data.draw(st.integers(2, 7), label="K")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    state_dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="state")
    validate = data.draw(st.booleans(), label="validate")
    n = data.draw(st.integers(2, 12), label="N")  # SoftMatch's lane needs two samples
    lane = build(k, validate=validate).to(state_dtype)  # the state in either dtype
    general = copy.deepcopy(lane)
    for step in range(5):
        training = step not in (0, 3)  # eval before the first update, and in between
        lane.train(training)
        general.train(training)
        args = [_batch(data.draw, n, k, dtype)]
        if labelled:
            args.append(_batch(data.draw, max(1, n // 2), k, dtype))
        ours, entered = _front_door_calls(lane, *args)
        assert entered == 0, f"{name}: the lane was not taken"
        with lane_closed():
            theirs, entered = _front_door_calls(general, *args)
        assert entered > 0, f"{name}: lane_closed() did not close the lane"
        _assert_same(ours, theirs, f"{name}, step {step}: outputs")
        theirs_state = general.state_dict()
        assert list(theirs_state) == list(lane.state_dict())
        for key, value in lane.state_dict().items():
            _assert_same(value, theirs_state[key], f"{name}, step {step}: state {key}")


@pytest.mark.parametrize("name, build, labelled", MODULES, ids=[m[0] for m in MODULES])
def test_inputs_off_the_lane_take_the_general_path(name, build, labelled):
    """A mask, half precision, dense maps, a graph to detach: the general path (the front
    door runs)."""
    k = 4
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    extra = [probs[:1]] if labelled else []
    cases = [
        ((probs,), {"valid": torch.tensor([True, False])}),
        ((probs.to(torch.bfloat16),), {}),
        ((probs[:, :, None, None],), {}),
        ((probs.clone().requires_grad_(),), {}),
    ]
    for args, kwargs in cases:
        module = build(k)
        more = [e.to(args[0].dtype).reshape(1, k, *args[0].shape[2:]) for e in extra]
        _, entered = _front_door_calls(module, *args, *more, **kwargs)
        assert entered > 0, (name, args[0].dtype, tuple(args[0].shape), kwargs)


@pytest.mark.parametrize("name, build, labelled", MODULES, ids=[m[0] for m in MODULES])
def test_a_batch_that_fails_the_value_check_is_refused_as_before(name, build, labelled):
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.5, 0.6, 0.0, 0.0]])
    extra = [torch.full((1, 4), 0.25)] if labelled else []
    with pytest.raises(ValueError, match=r"First offending position \(1,\)"):
        build(4)(probs, *extra)
    if labelled:  # a labelled batch that fails
        with pytest.raises(ValueError, match=r"First offending position \(1,\)"):
            build(4)(torch.full((2, 4), 0.25), probs)


@pytest.mark.parametrize("missing", [None, "probs"])
def test_adamatch_without_a_labelled_tensor_is_refused_by_name(missing):
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    with pytest.raises(TypeError, match="probs_labeled"):
        pseudosel.AdaMatchSelector()(probs, missing)


# the modules whose scalar statistics the lane computes on the host from float32/float64
# state: with half-precision state they take the general path
HOST_STATISTICS = {"freematch", "freematch clipped", "softmatch"}


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name, build, labelled", MODULES, ids=[m[0] for m in MODULES])
def test_half_precision_state_gives_the_general_paths_result(name, build, labelled, state_dtype):
    """A module moved to half precision, called on float32 probabilities: the lane where
    it holds (the stateless modules, Dash, the alignments), else the general path (the
    lane computes scalar statistics on the host from float32/float64 state only) — and
    outputs and state are the general path's."""
    k = 5
    lane = build(k).to(state_dtype)
    general = copy.deepcopy(lane)
    generator = torch.Generator().manual_seed(0)
    for step in range(3):
        args = [torch.randn(16, k, generator=generator).mul(3).softmax(1)]
        if labelled:
            args.append(torch.randn(4, k, generator=generator).mul(3).softmax(1))
        ours, entered = _front_door_calls(lane, *args)
        assert (entered > 0) == (name in HOST_STATISTICS), f"{name}: the path taken"
        with lane_closed():
            theirs = general(*args)
        _assert_same(ours, theirs, f"{name}, step {step}: outputs")
        for key, value in lane.state_dict().items():
            _assert_same(value, general.state_dict()[key], f"{name}, step {step}: {key}")


def test_softmatch_with_a_vanishing_n_sigma_divides_as_the_tensor_op():
    """n_σ² rounds to 0 (n_σ = 1e-23 in float32): the spread 2σ²/0 is inf as the tensor op
    gives it, on the lane as on the general path (not a Python ZeroDivisionError)."""
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    lane = pseudosel.SoftMatchSelector(3, n_sigma=1e-23)
    general = copy.deepcopy(lane)
    ours = lane(probs)
    with lane_closed():
        theirs = general(probs)
    _assert_same(ours, theirs, "outputs")
    assert torch.equal(ours.weight, torch.ones(2))
    for key, value in lane.state_dict().items():
        _assert_same(value, general.state_dict()[key], key)


def test_a_queue_pointer_out_of_range_is_refused_on_the_lane_too():
    """A pointer outside the queue (an edited checkpoint): the lane refuses it as the
    general path does, rather than wrapping a negative one to the last row."""
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    for pointer in (-1, 3):
        module = pseudosel.DistributionAlignmentQueue(3, queue_length=3)
        module.p_model_ptr.fill_(pointer)
        with pytest.raises(IndexError, match="p_model_ptr"):
            module(probs)
        with lane_closed(), pytest.raises(IndexError):
            module(probs)


def test_a_parametrised_buffer_is_read_as_an_attribute():
    """A buffer under torch.nn.utils.parametrize is no longer in the buffer dict: the
    module reads it as an attribute, as before, and gives the same selection."""
    from torch.nn.utils import parametrize

    class Identity(torch.nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x

    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    plain = pseudosel.DashSelector(1.0, update_every=2)
    parametrised = pseudosel.DashSelector(1.0, update_every=2)
    parametrize.register_parametrization(parametrised, "rho_init", Identity())
    for _ in range(3):
        _assert_same(parametrised(probs), plain(probs), "outputs")


ALIGNMENTS = [m for m in MODULES if m[0].startswith("alignment")]


def _new_target(module: torch.nn.Module, seed: int) -> Tensor:
    """Another target buffer for ``module`` (shape and dtype of its own): a distribution,
    or rows of distributions for a queue."""
    old = module.p_target
    logits = torch.randn(old.shape, generator=torch.Generator().manual_seed(seed))
    return logits.softmax(-1).to(old.dtype)


@pytest.mark.parametrize("name, build, labelled", ALIGNMENTS, ids=[m[0] for m in ALIGNMENTS])
def test_a_changed_fixed_target_is_seen_by_the_lane(name, build, labelled):
    """The lane keeps a fixed target's numerator (p_target + ε, the queue's row mean + ε)
    between calls: written in place (copy_, indexing), loaded from a state dict, replaced
    or converted, the target is read again — the general path's result after each."""
    k = 4
    lane = build(k)
    general = copy.deepcopy(lane)
    generator = torch.Generator().manual_seed(1)

    def copy_in(module, seed):
        module.p_target.copy_(_new_target(module, seed))

    def index_in(module, seed):
        module.p_target[0] = _new_target(module, seed)[0]

    def load(module, seed):
        state = module.state_dict()
        state["p_target"] = _new_target(module, seed)
        module.load_state_dict(state)

    def replace(module, seed):
        module.p_target = _new_target(module, seed)

    def to_double(module, seed):
        module.double()

    for seed, change in enumerate([None, copy_in, index_in, load, replace, to_double]):
        if change is not None:
            change(lane, seed)
            change(general, seed)
        for _ in range(2):
            probs = torch.randn(6, k, generator=generator).mul(3).softmax(1)
            ours, entered = _front_door_calls(lane, probs)
            assert entered == 0, f"{name}: the lane was not taken"
            with lane_closed():
                theirs = general(probs)
            _assert_same(ours, theirs, f"{name} after {getattr(change, '__name__', 'none')}")


@pytest.mark.parametrize("name, build, labelled", ALIGNMENTS, ids=[m[0] for m in ALIGNMENTS])
def test_the_lane_reads_an_unchanged_target_once(name, build, labelled):
    """While the target buffer is unchanged the lane computes its numerator once (its
    target_vector is not called again), and again after an in-place write."""
    module = build(3)
    calls = 0
    target_vector = module.target_vector

    def counted(*args):
        nonlocal calls
        calls += 1
        return target_vector(*args)

    module.target_vector = counted
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    for _ in range(3):
        module(probs)
    assert calls == 1
    module.p_target.mul_(1.0)  # the same values, a moved version counter
    module(probs)
    assert calls == 2


@pytest.mark.parametrize("name, build, labelled", ALIGNMENTS, ids=[m[0] for m in ALIGNMENTS])
def test_inference_tensors_as_state_take_the_lane_without_keeping_the_target(name, build, labelled):
    """A module built under torch.inference_mode holds inference tensors (no version
    counter): the lane computes the numerator on every call, with the general path's
    result."""
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    with torch.inference_mode():
        lane = build(3)
        general = copy.deepcopy(lane)
        for _ in range(2):
            ours, entered = _front_door_calls(lane, probs)
            assert entered == 0
            with lane_closed():
                theirs = general(probs)
            _assert_same(ours, theirs, name)
    assert "_lane_numerator" not in lane.__dict__


@pytest.mark.parametrize("name, build, labelled", ALIGNMENTS, ids=[m[0] for m in ALIGNMENTS])
def test_the_kept_target_follows_the_batchs_dtype(name, build, labelled):
    """The numerator is kept per compute dtype: float32 batches, then float64 ones, then
    float32 again, on one module — the general path's result each time."""
    lane = build(4)
    general = copy.deepcopy(lane)
    generator = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float64, torch.float32):
        probs = torch.randn(5, 4, generator=generator, dtype=torch.float64).mul(3).softmax(1)
        ours = lane(probs.to(dtype))
        with lane_closed():
            theirs = general(probs.to(dtype))
        _assert_same(ours, theirs, f"{name}, {dtype}")


@pytest.mark.parametrize("name, build, labelled", ALIGNMENTS, ids=[m[0] for m in ALIGNMENTS])
@pytest.mark.parametrize("how", ["data", "swap_tensors"])
def test_new_memory_under_the_same_target_tensor_is_read_again(name, build, labelled, how):
    """``.data =`` and ``torch.utils.swap_tensors`` give the target tensor new memory with
    no in-place write: read again — even when the new memory lies where the old lay (the
    lane holds the memory its numerator was computed from, so that address is not free
    for another target; allocations that would land there are tried)."""
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    lane = build(3)
    general = copy.deepcopy(lane)
    lane(probs)  # the numerator of the first target is kept
    with lane_closed():
        general(probs)
    old_address = lane.p_target.data_ptr()

    def give(module, target):
        if how == "data":
            module.p_target.data = target
        else:
            torch.utils.swap_tensors(module.p_target, target)

    give(lane, torch.full_like(lane.p_target, 1.0 / 3))  # the first target's memory let go
    candidates = []
    for seed in range(2000):  # a new target where the first one lay, if the allocator can
        candidate = _new_target(lane, seed)
        if candidate.data_ptr() == old_address:
            break
        candidates.append(candidate)
    del candidates
    give(lane, candidate.clone() if how == "swap_tensors" else candidate)
    give(general, candidate.clone())
    ours = lane(probs)
    with lane_closed():
        theirs = general(probs)
    _assert_same(ours, theirs, f"{name} after {how}")


def test_another_tensor_on_the_same_memory_is_read_again():
    """A square target queue replaced by its own transpose — the same memory, address and
    version counter, other rows: read again (the tensor itself is part of the key)."""
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    lane = pseudosel.DistributionAlignmentQueue(3, queue_length=3, target=_target(3))
    general = copy.deepcopy(lane)
    for module in (lane, general):
        module.eval()
    lane(probs)
    lane.p_target = lane.p_target.t()
    general.p_target = general.p_target.t()
    ours = lane(probs)
    with lane_closed():
        theirs = general(probs)
    _assert_same(ours, theirs, "after the transpose")
    assert not torch.equal(ours, lane.__class__(3, queue_length=3, target=_target(3)).eval()(probs))
