"""torch.compile(fullgraph=True) of every selector module's training step: no graph break,
and the same selections and state as eager mode over several steps."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers.probability_maps import smooth_maps
from helpers.selector_zoo import CASES, case_batch

import pseudosel

pytestmark = pytest.mark.slow

MODULE_CASES = [case for case in CASES if not case.name.startswith("F.")]


def _batch(case, step: int):
    return case_batch(case, step, n=16, size=(8, 8), keep=0.8)


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c.name)
def test_compiled_training_step_equals_eager(case):
    torch._dynamo.reset()
    eager, _ = case.build(5)
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True)
    for step in range(3):
        probs, valid = _batch(case, step)
        extra = case.inputs(probs)
        expected = eager(probs, valid=valid, **extra)
        result = compiled(probs, valid=valid, **extra)
        expected = expected if isinstance(expected, tuple) else (expected,)
        result = result if isinstance(result, tuple) else (result,)
        for a, b in zip(result, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{case.name} step {step}")
    for (name, a), (_, b) in zip(
        compiled_module.state_dict().items(), eager.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{case.name}: {name}")


@pytest.mark.parametrize("make", [pseudosel.CSLSelector, pseudosel.ThresholdSelector])
def test_compile_flag_compiles_once_for_every_batch_size(make):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    fast, eager = make(compile=True), make()
    for n in (4, 7, 3, 5):
        probs = smooth_maps(n, 6, 8, 8, sharpness=3.0, seed=n)
        valid = torch.rand(n, 8, 8, generator=torch.Generator().manual_seed(n)) < 0.8
        result, expected = fast(probs, valid), eager(probs, valid)
        torch.testing.assert_close(result.weight, expected.weight, rtol=1e-5, atol=1e-6)
        assert torch.equal(result.labels, expected.labels)
    assert counters["stats"]["unique_graphs"] == 1  # a new batch size did not recompile
    assert "compile=True" in repr(fast)
