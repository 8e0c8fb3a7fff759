"""Checkpoints: N steps, save, load into a fresh module, N more steps == 2N straight."""

from __future__ import annotations

import io

import pytest
import torch
from probability_maps import classifier_outputs, smooth_maps

import pseudosel


def cls_step(t):
    return (classifier_outputs(16, 5, sharpness=1.0 + t, seed=t),), {
        "index": torch.randint(0, 30, (16,), generator=torch.Generator().manual_seed(t))
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
        self.adsh = pseudosel.AdshSelector(5, 30, tau_1=0.8)

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
        labels = torch.where(torch.arange(labels.numel()).view(labels.shape) % 5 == 0,
                             (labels + 1) % 5, labels)  # fmt: skip
        self.selector.update_heldout(probs, labels, valid)
        self.selector.calibrate()
        return selection


CASES = {
    "adsh": (AdshEpochs, cls_step),
    "precision-target": (PrecisionHeldout, dense_step),
    "flexmatch-per-sample": (lambda: pseudosel.FlexMatchSelector(5, 30, tau=0.8), cls_step),
    "flexmatch-classwise": (lambda: pseudosel.FlexMatchSelector(5, tau=0.8), dense_step),
    "freematch": (lambda: pseudosel.FreeMatchSelector(5, momentum=0.9), dense_step),
    "freematch-quantile": (
        lambda: pseudosel.FreeMatchSelector(5, use_quantile=True, clip_thresh=True),
        dense_step,
    ),
    "softmatch": (lambda: pseudosel.SoftMatchSelector(5, momentum=0.9), dense_step),
    "softmatch-per-class": (
        lambda: pseudosel.SoftMatchSelector(5, momentum=0.9, per_class=True),
        dense_step,
    ),
    "corrmatch": (lambda: pseudosel.CorrMatchSelector(5, momentum=0.9), dense_step),
    "dash": (lambda: pseudosel.DashSelector(1.5, update_every=2), dense_step),
    "u2pl": (lambda: pseudosel.EntropySplitSelector(6), dense_step),
    "alignment-queue": (
        lambda: pseudosel.DistributionAlignmentQueue(5, queue_length=3, target="model"),
        labeled_step,
    ),
    "alignment": (lambda: pseudosel.DistributionAlignment(5, target="model"), labeled_step),
}


def run(module, step, steps):
    outputs = []
    for t in steps:
        args, kwargs = step(t)
        out = module(*args, **kwargs)
        outputs.append(out if isinstance(out, torch.Tensor) else tuple(out))
    return outputs


def assert_identical(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


@pytest.mark.parametrize("name", list(CASES))
def test_resume_equals_straight_run_bit_for_bit(name):
    make, step = CASES[name]
    straight = make()
    expected = run(straight, step, range(8))[4:]

    first = make()
    run(first, step, range(4))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    got = run(resumed, step, range(4, 8))

    for a, b in zip(got, expected, strict=True):
        assert_identical(a, b)
    for (key, value), (key2, value2) in zip(
        resumed.state_dict().items(), straight.state_dict().items(), strict=True
    ):
        assert key == key2 and torch.equal(value, value2), key


@pytest.mark.parametrize("name", list(CASES))
def test_state_loads_into_a_float64_module_without_loss(name):
    make, step = CASES[name]
    module = make()
    run(module, step, range(3))
    wide = make().double()
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
