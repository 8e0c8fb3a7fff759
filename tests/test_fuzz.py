"""Seeded fuzzing of every selector: random shapes, dtypes, K = 2…1000, ignore masks, empty
and fully ignored batches, multi-step stateful sequences, and some bad inputs.

Valid input must never raise and never give NaN weights or state; bad input must raise a
``ValueError``/``TypeError`` that names the argument. The default run draws a fast subset;
``PSEUDOSEL_FUZZ_CASES=10000 pytest tests/test_fuzz.py`` runs the full campaign (each
seed is one case, so a failure reproduces from its test id).
"""

from __future__ import annotations

import os
import random

import pytest
import torch
from helpers.selector_zoo import CASES, outputs_of, state_of
from helpers.tolerances import DTYPES

FUZZ_CASES = int(os.environ.get("PSEUDOSEL_FUZZ_CASES", "300"))
CANDIDATES = [case for case in CASES if not case.convex]


def _num_classes(rng: random.Random) -> int:
    return rng.choice([2, 3, 5, 21]) if rng.random() < 0.6 else int(10 ** rng.uniform(0.3, 3))


def _probabilities(rng: random.Random, gen: torch.Generator, shape, dtype) -> torch.Tensor:
    kind = rng.choice(["smooth", "peaky", "one_hot", "uniform", "tiny", "repeated"])
    scale = {"smooth": 1.0, "peaky": 30.0, "tiny": 80.0}.get(kind, 3.0)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    if kind == "one_hot":
        logits = torch.where(logits == logits.amax(1, keepdim=True), 1e4, 0.0)
    elif kind == "uniform":
        logits = torch.zeros(shape, dtype=torch.float64)
    elif kind == "repeated" and shape[0] > 0:
        logits = logits[:1].expand(shape).contiguous()
    return logits.softmax(1).to(dtype)


def _check_output(case, result, probs, valid) -> None:
    k = probs.shape[1]
    for out in outputs_of(result):
        if out.dim() == probs.dim():  # aligned probabilities: valid positions
            out = out.movedim(1, -1)[valid]
        elif out.shape == valid.shape:
            out = out[valid]
        if out.is_floating_point():
            assert torch.isfinite(out).all(), f"{case.name}: non-finite output"
        if out.dim() == 2 and out.is_floating_point():  # aligned rows are distributions
            torch.testing.assert_close(out.sum(1), torch.ones_like(out[:, 0]))
    if isinstance(result, tuple):  # a Selection
        assert result.weight.shape == valid.shape
        assert ((result.weight >= 0) & (result.weight <= 1)).all()
        assert torch.isfinite(result.weight).all()
        assert ((result.labels >= 0) & (result.labels < k)).all()
        assert not result.mask[~valid].any() and (result.weight[~valid] == 0).all()


def _bad_input(rng: random.Random, probs: torch.Tensor, valid: torch.Tensor):
    """One kind of bad input, and the argument name its error must mention. Off the CPU,
    value checks are device-side assertions (DESIGN.md), which end the CUDA context: there
    only the shape and dtype errors, raised on the host."""
    kinds = ["logits", "valid_shape", "int_probs", "valid_dtype"]
    kind = rng.choice(kinds if probs.device.type == "cpu" else kinds[1:])
    if kind == "logits" and probs.numel() > 0:
        return probs.double().log().clamp_min(-50).to(probs.dtype) * 3 - 1, valid, "from_logits"
    if kind == "valid_shape":
        return probs, valid.reshape(-1)[:0].reshape(0) if valid.dim() > 1 else valid[None], "valid"
    if kind == "valid_dtype":
        return probs, valid.to(torch.uint8), "valid"
    return (probs * 100).to(torch.int64), valid, "probs"


@pytest.mark.parametrize("seed", range(FUZZ_CASES))
def test_fuzz(seed, device):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    case = rng.choice(CANDIDATES)
    k = _num_classes(rng)
    dtype = rng.choice(DTYPES)
    n = rng.choice([0, 1, 2, 4])
    dense = case.dense and (not case.classification or rng.random() < 0.6)
    spatial = (rng.randint(0, 6), rng.randint(1, 6)) if dense else ()
    if k * max(n, 1) * max(1, spatial[0] if spatial else 1) * (spatial[1] if spatial else 1) > 3e5:
        spatial = (2, 3) if dense else ()
    module, step = case.build(k, device=device)
    if module is not None:
        module.train(rng.random() < 0.8)
    steps = rng.randint(1, 4)
    for _ in range(steps):
        shape = (n, k, *spatial)
        probs = _probabilities(rng, gen, shape, dtype)
        keep = rng.choice([0.0, 0.3, 1.0, 1.0])
        valid = torch.rand((n, *spatial), generator=gen) < keep
        if rng.random() < 0.3 and probs.numel():  # poison at ignored positions
            probs = probs.clone()
            probs.movedim(1, -1)[~valid] = rng.choice([float("nan"), float("inf"), -1.0])
        probs, valid = probs.to(device), valid.to(device)
        if case.checked and rng.random() < 0.1:
            bad_probs, bad_valid, argument = _bad_input(rng, probs, valid)
            if bad_probs.numel() and (argument != "from_logits" or valid.any()):
                with pytest.raises((ValueError, TypeError), match=argument):
                    step(bad_probs, bad_valid)
                continue
        result = step(probs, valid)
        _check_output(case, result, probs, valid)
        for value in state_of(module, step):
            if value.is_floating_point():
                assert torch.isfinite(value).all(), f"{case.name}: non-finite state"
