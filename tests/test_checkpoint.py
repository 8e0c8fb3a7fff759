"""Checkpoints: N steps, save, load into a fresh module, N more steps == 2N straight.

Every stateful selector of the registry (each option set of its declaration), and the
cases a declaration does not describe (held-out data, Adsh per epoch, alignment)."""

from __future__ import annotations

import functools
import io

import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps
from helpers.selector_zoo import SteppedModule, declared_options

import pseudosel
from pseudosel.registry import selector_spec

NUM_UNLABELED = 30


def cls_step(t, index=True):
    probs = classifier_outputs(16, 5, sharpness=1.0 + t, seed=t)
    if not index:
        return (probs,), {}
    return (probs,), {
        "index": torch.randint(0, NUM_UNLABELED, (16,), generator=torch.Generator().manual_seed(t))
    }


def dense_step(t):
    valid = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(t)) > 0.2
    return (smooth_maps(2, 5, 8, 8, sharpness=2.0 + t, seed=t),), {"valid": valid}


def labeled_step(t):
    return (classifier_outputs(16, 5, seed=t), classifier_outputs(8, 5, seed=99 + t)), {}


class AdshEpochs(torch.nn.Module):
    """Adsh with a record pass and a recomputation each step; the last step is unfinished
    (records kept) so that the records go through the checkpoint too."""

    def __init__(self):
        super().__init__()
        self.adsh = pseudosel.AdshSelector(5, NUM_UNLABELED, tau_1=0.8)

    def forward(self, probs, index):
        selection = self.adsh(probs)
        self.adsh.update(probs, index)
        if int(index[0]) % 2 == 0:
            self.adsh.calibrate()
        return selection


class PrecisionHeldout(torch.nn.Module):
    """PrecisionTargetSelector: select, then observe the batch as held-out data (labels: the
    arg-max, wrong at every fifth position) and calibrate; the window wraps."""

    def __init__(self):
        super().__init__()
        self.selector = pseudosel.PrecisionTargetSelector(
            5, epsilon=0.3, delta=0.2, window=150, candidates=100, min_count=5
        )

    def forward(self, probs, valid):
        selection = self.selector(probs, valid)
        labels = probs.argmax(1)
        fifth = torch.arange(labels.numel(), device=labels.device).view(labels.shape) % 5 == 0
        labels = torch.where(fifth, (labels + 1) % 5, labels)
        self.selector.update_heldout(probs, labels, valid)
        self.selector.calibrate()
        return selection


def registry_cases() -> dict:
    """Every stateful selector of the registry, with each option set of its declaration,
    built and stepped as declared; dense input where it takes it (per-sample records need
    (N, K) input and the sample positions)."""
    cases = {}
    for name in pseudosel.available_selectors(stateful=True):
        spec = selector_spec(name)
        for example, options in declared_options(spec, NUM_UNLABELED):
            per_sample = options["num_unlabeled"] is not None
            if spec.dense and not per_sample:
                step = dense_step
            else:
                step = functools.partial(cls_step, index=per_sample)
            if "labeled" in spec.needs:
                step = _with_labeled(step)
            make = functools.partial(SteppedModule, spec, 5, options)
            cases[f"{name}/{example}"] = (make, step)
    return cases


def _with_labeled(step):
    def labeled(t):
        args, kwargs = step(t)
        return args, {**kwargs, "probs_labeled": classifier_outputs(8, 5, seed=99 + t)}

    return labeled


# what a declaration does not describe, built from classes
EXTRA_CASES = {
    "AdshSelector/epochs": (AdshEpochs, cls_step),
    "PrecisionTargetSelector/heldout": (PrecisionHeldout, dense_step),
    "DistributionAlignmentQueue/target=model": (
        lambda: pseudosel.DistributionAlignmentQueue(5, queue_length=3, target="model"),
        labeled_step,
    ),
    "DistributionAlignment/target=model": (
        lambda: pseudosel.DistributionAlignment(5, target="model"),
        labeled_step,
    ),
}
CASES = {**registry_cases(), **EXTRA_CASES}


def run(module, step, steps, device="cpu"):
    outputs = []
    for t in steps:
        args, kwargs = step(t)
        args = tuple(a.to(device) for a in args)
        out = module(*args, **{key: value.to(device) for key, value in kwargs.items()})
        outputs.append(out if isinstance(out, torch.Tensor) else tuple(out))
    return outputs


def assert_identical(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


@pytest.mark.parametrize("name", list(CASES))
def test_resume_equals_straight_run_bit_for_bit(name, device):
    make, step = CASES[name]
    straight = make().to(device)
    expected = run(straight, step, range(8), device)[4:]

    first = make().to(device)
    run(first, step, range(4), device)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make().to(device)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    got = run(resumed, step, range(4, 8), device)

    for a, b in zip(got, expected, strict=True):
        assert_identical(a, b)
    for (key, value), (key2, value2) in zip(
        resumed.state_dict().items(), straight.state_dict().items(), strict=True
    ):
        assert key == key2 and torch.equal(value, value2), key


@pytest.mark.parametrize("name", list(CASES))
def test_state_loads_into_a_float64_module_without_loss(name, device):
    make, step = CASES[name]
    module = make().to(device)
    run(module, step, range(3), device)
    wide = make().to(device, torch.float64)
    wide.load_state_dict(module.state_dict())
    for key, value in module.state_dict().items():
        loaded = wide.state_dict()[key]
        assert torch.equal(loaded.to(value.dtype), value), key


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(CASES))
def test_state_moves_to_cuda_and_back(name):
    make, step = CASES[name]
    module = make()
    run(module, step, range(3))
    on_gpu = make().cuda()
    on_gpu.load_state_dict(module.state_dict())
    for key, value in on_gpu.state_dict().items():
        assert value.is_cuda and torch.equal(value.cpu(), module.state_dict()[key])
