"""The number of torch ops an eager selection call issues does not grow with the input size.

Many small parallel ops each wait at a thread barrier, which costs dearly on a busy machine
(benchmarks/RESULTS.md, --busy): the eager CPU kernels walk big inputs in a bounded number
of blocks. The block budgets are shrunk here so that small inputs already take the blocked
path; the counts at two sizes 16x apart must be equal.
"""

from __future__ import annotations

import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps
from helpers.selector_zoo import CASES
from torch.utils._python_dispatch import TorchDispatchMode

import pseudosel.kernels.blocks as blocks
from pseudosel.kernels import formulas_only


class CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _count(case, probs, valid) -> int:
    module, step = case.build(probs.shape[1], validate=False)
    step(probs, valid)  # first call: lazy state, caches
    with CountOps() as counter:
        step(probs, valid)
    return counter.count


@pytest.fixture
def small_budgets(monkeypatch):
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 256)
    monkeypatch.setattr(blocks, "CPU_BLOCK_POSITIONS", 32)


def _inputs(case, scale: int):
    if case.dense:
        probs = smooth_maps(2, 21, 16 * scale, 16 * scale, seed=scale)
    else:
        probs = classifier_outputs(512 * scale * scale, 21, seed=scale)
    valid = torch.ones(probs.shape[0], *probs.shape[2:], dtype=torch.bool)
    valid.view(-1)[::3] = False
    return probs, valid


# Consistent-Teacher's GMM fit runs EM until every class has converged in eager CPU mode
# (a data-dependent number of steps, at most max_iter); elsewhere always max_iter steps
EM_CASES = {c.name for c in CASES if c.name.startswith("GMMThresholdSelector")}


@pytest.mark.parametrize(
    "case", [c for c in CASES if not c.convex and c.name not in EM_CASES], ids=lambda c: c.name
)
def test_eager_op_count_does_not_grow_with_the_input(small_budgets, case):
    counts = [_count(case, *_inputs(case, scale)) for scale in (1, 4)]
    assert counts[0] == counts[1], f"{case.name}: {counts[0]} ops, then {counts[1]} at 16x size"
    assert counts[0] < 1500, f"{case.name}: {counts[0]} ops per call"


@pytest.mark.parametrize("case", [c for c in CASES if c.name in EM_CASES], ids=lambda c: c.name)
def test_em_op_count_is_bounded_by_its_step_cap(small_budgets, case):
    with formulas_only():  # max_iter EM steps, as on a GPU
        capped = [_count(case, *_inputs(case, scale)) for scale in (1, 4)]
    early = [_count(case, *_inputs(case, scale)) for scale in (1, 4)]
    assert capped[0] == capped[1], f"{case.name}: {capped[0]} ops, then {capped[1]} at 16x"
    assert capped[0] < 6000, f"{case.name}: {capped[0]} ops per call"
    assert max(early) <= capped[0]
